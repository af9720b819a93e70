"""Training and inference throughput of MKTN: multi-pair vs single-pair, same model and data.

Multi-pair batches hold ``B`` videos with all their queries (each video encoded once);
single-pair batches hold as many (video, query) items as a multi-pair batch holds
queries on average (each video encoded once per query). Both run the same number of
optimiser steps on the same random data of the synthetic benchmark's shape; each mode
runs in its own process so its peak memory (max RSS, or CUDA max allocated) is its own.

    python bench/train_throughput.py                       # both modes + inference, a table
    python bench/train_throughput.py --json out.json       # also write the figures
    python bench/train_throughput.py --device cuda         # on a GPU (autocast as in training)
    python bench/train_throughput.py --shape tacos          # a real dataset's shape (see below)
    python bench/train_throughput.py --head mmn             # another grounding head (model.head)
    python bench/train_throughput.py --heads span tan2d mmn --shapes charades-sta activitynet
                                                           # every (shape, head) in one run, one table

Two ceilings of the multi-pair speed-up are reported (``--heads``/``--shapes`` table).

*Forward-share ceiling* (the older one): a multi-pair forward pass spends ``V`` in the video-side
modules and ``Q`` in the per-query ones (timed by hooks; ``per_query_modules``); single-pair
training of the same queries repeats the video side once per query, ``qpv`` times. With the
multi-pair per-query share ``s = Q / (V + Q)`` the speed-up cannot exceed ``qpv * (1 - s) + s``.
It sees the forward pass only: backward, the loss terms (some grow with the queries: contrastive
terms over Q x Q or Q x B x cells), the optimiser step and batch assembly are outside it.

*Whole-step ceiling* (measured): in the multi-pair process every timed step is followed by a
step, timed apart and left out of the throughput, on the same videos with exactly one query per
video (each group of the same batch keeps its first query; the same ``collate``,
``iterate_batches`` and ``train_step`` path, so assembly, forward, loss, backward and optimiser
are all in it). Over the timed steps, with
``T_all`` seconds for ``B`` video items and ``Q`` queries and ``T_one`` seconds for the same ``B``
items with ``B`` queries, a step is modelled as ``T = B * v + Q * q`` (``v`` per video item,
``q`` per query, both whole-step costs):

    q = (T_all - T_one) / (Q - B)        v = T_one / B - q

Single-pair training pays ``v + q`` per query (each item one video, one query); multi-pair pays
``v / qpv + q`` per query (the video shared by its ``qpv`` queries), so the speed-up it allows is

    (v + q) / (v / qpv + q)  =  qpv * (v + q) / (v + qpv * q)

With ``qpv = Q / B`` of the same steps this equals ``(T_one / B) / (T_all / Q)``: the one-query
step's seconds per item over the multi-pair step's seconds per query, both measured in the same
process on the same videos. A measured speed-up away from it says how single-pair's own batches
(``B * qpv`` one-query items per step, another process) differ per item from ``B`` one-query
items; the fit also gives the whole-step per-query share ``Q * q / T_all``. Terms that grow
faster than linearly in ``Q`` (Q x Q) are folded into ``q`` at this ``Q``. ``Q == B`` (every
video one query) gives no spread to fit: multi-pair and single-pair are then the same batches,
the ceiling is 1 and ``v``, ``q`` are not reported; a fit with ``q < 0`` or ``v < 0``
(noise) gives no ceiling either (``fit_step_costs``, ``step_ceiling``).

``--shape charades-sta|activitynet|tacos`` takes the dataset's preset (clips, widths, layers,
batch) and its real training annotations from ``../shared/data`` (or ``--annotations FILE``):
the first ``--videos`` videos keep their real number of queries, query lengths in words and
moment positions, so queries per video follow the dataset (Charades-STA 2.3, ActivityNet
Captions 3.7, TACoS 131, split into groups of ``max_queries_per_video``). Feature values
stay random (throughput does not depend on them); the width defaults to 512 (C3D conv5).

Timed steps include assembling each batch from the prepared data, as ``mktn train`` does.
Throughput counts training pairs (queries) per second and videos per second, where a
video counts once per epoch in both modes (videos/s = queries/s / queries per video).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.config import override, preset
from model.data import (
    GroundingData,
    Group,
    GroupSampler,
    QueryInput,
    VideoInput,
    iterate_batches,
    prepare,
)
from model.evaluate import evaluate_model
from model.losses import build_criterion
from model.train import build_training, make_sampler, train_step
from pipeline.datasets.records import QueryMoment


def random_data(videos: int, qpv: float, clips: int, dim: int, patches: int, seed: int = 0) -> GroundingData:
    rng = np.random.default_rng(seed)
    vids, qs, recs = {}, {}, []
    for v in range(videos):
        vid = f"v{v:04d}"
        t = clips
        vids[vid] = VideoInput(vid, rng.normal(size=(t, dim)).astype(np.float32),
                               rng.normal(size=(t, patches, dim)).astype(np.float32),
                               np.stack([np.arange(t), np.arange(t) + 1.0], 1), float(t))
        for k in range(max(1, int(rng.poisson(qpv)))):
            qid = f"{vid}#{k}"
            s = float(rng.integers(0, t - 8))
            qs[qid] = QueryInput(qid, rng.normal(size=(int(rng.integers(6, 14)), 300)).astype(np.float32),
                                 rng.normal(size=2400).astype(np.float32))
            recs.append(QueryMoment(qid, vid, "q", s, s + float(rng.integers(2, 8)), float(t), "train"))
    return GroundingData(vids, qs, recs)


SHAPES = {  # --shape: the preset and the training annotations of ../shared/data it reads
    "charades-sta": "charades-sta/charades_sta_train.txt",
    "activitynet": "activitynet-captions/train.json",
    "tacos": "tacos/train.json",
}


def annotated_data(path: Path, videos: int, clips: int, dim: int, patches: int,
                   seed: int = 0) -> GroundingData:
    """Random features in the shape of a real annotation file's first ``videos`` videos."""
    from pipeline.datasets.registry import load_annotations

    records = load_annotations(None, path).records
    by_video: dict[str, list[QueryMoment]] = {}
    for r in records:
        if len(by_video) < videos or r.video_id in by_video:
            by_video.setdefault(r.video_id, []).append(r)
    rng = np.random.default_rng(seed)
    vids, qs, recs = {}, {}, []
    for vid, moments in by_video.items():
        t = clips
        vids[vid] = VideoInput(vid, rng.normal(size=(t, dim)).astype(np.float32),
                               rng.normal(size=(t, patches, dim)).astype(np.float32),
                               np.stack([np.arange(t), np.arange(t) + 1.0], 1), float(t))
        for m in moments:  # the moment keeps its relative position on the t-clip timeline
            scale = t / m.duration
            s, e = m.start * scale, max(m.end * scale, m.start * scale + 0.5)
            qs[m.query_id] = QueryInput(m.query_id,
                                        rng.normal(size=(max(1, len(m.sentence.split())), 300))
                                        .astype(np.float32), rng.normal(size=2400).astype(np.float32))
            recs.append(QueryMoment(m.query_id, vid, m.sentence, s, min(e, float(t)), float(t), "train"))
    return GroundingData(vids, qs, recs)


PER_QUERY = ("text_encoder", "fusion", "span_head", "float_head")  # the same work in both modes


def per_query_modules(head: str) -> tuple[str, ...]:
    """Top-level modules whose work is per query: 2D-TAN's map is built per query (from the fused
    clips); MMN's map is per video (its per-query part, one similarity, is left out)."""
    return PER_QUERY + (("map_head",) if head == "tan2d" else ())


def time_modules(model: torch.nn.Module) -> dict[str, float]:
    """Forward seconds per top-level module, accumulated by hooks while the dict is alive."""
    totals: dict[str, float] = {}
    started: dict[str, float] = {}
    for name, module in model.named_children():
        def pre(_m, _i, name=name):
            started[name] = time.perf_counter()

        def post(_m, _i, _o, name=name):
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - started[name]

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)
    return totals


def run_mode(args: argparse.Namespace, mode: str) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.annotations:
        data = annotated_data(Path(args.annotations), args.videos, args.clips, args.dim, args.patches)
    else:
        data = random_data(args.videos, args.queries_per_video, args.clips, args.dim, args.patches)
    sets = [f"model.num_clips={args.clips}", f"train.batch_videos={args.batch_videos}",
            f"train.multi_pair={'true' if mode == 'multi' else 'false'}"]
    if args.head:
        sets.append(f"model.head={args.head}")
    cfg = override(preset(args.preset), sets + args.set)
    prepared, _ = prepare(data, cfg.model.num_clips, cfg.model.max_words)
    sampler = make_sampler(prepared, data, cfg)
    dims = {"frame": args.dim, "patch": args.dim, "word": 300, "sentence": 2400}
    torch.manual_seed(0)
    model, opt, sched = build_training(cfg, dims, 10**6, device)
    crit = build_criterion(cfg.loss, cfg.model)
    batches = iterate_batches(prepared, sampler, 0)  # lazily: assembling a batch is timed too
    # multi-pair: the same batches with one query per video, for the whole-step ceiling
    ones = iterate_batches(prepared, one_query_sampler(sampler), 0) if mode == "multi" else None

    def step(it) -> tuple[float, int, int]:  # seconds (assembly included), queries, videos
        t = time.perf_counter()
        b = next(it, None)
        if b is None:
            return 0.0, 0, 0
        train_step(model, crit, opt, sched, b.to(device), 0.5, cfg, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, b.num_queries, b.num_videos

    for _ in range(args.warmup):
        step(batches)
        if ones is not None:
            step(ones)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    module_s = time_modules(model)
    queries = videos_enc = n = 0
    dt = t_one = 0.0
    one_videos = 0
    for _ in range(args.steps):
        sec, nq, nv = step(batches)
        if nq == 0:
            break
        dt += sec
        queries += nq
        videos_enc += nv
        n += 1
        if ones is not None:  # interleaved, so load drift hits both alike; kept out of module_s
            kept = dict(module_s)
            sec, nq1, nv1 = step(ones)
            if nv1 != nv or nq1 != nv:
                raise RuntimeError(f"one-query batch holds {nv1} videos / {nq1} queries, "
                                   f"expected {nv} / {nv}")
            t_one += sec
            one_videos += nv1
            module_s.clear()
            module_s.update(kept)
    forward = dict(module_s)  # the timed steps only (inference below adds to module_s)
    qpv = len(prepared.queries) / len(prepared.videos)
    out = {"mode": mode, "steps": n, "seconds": round(dt, 3), "queries_per_s": queries / dt,
           "videos_per_s": queries / dt / qpv, "video_encodings_per_step": videos_enc / n,
           "queries_per_step": queries / n, "params": sum(p.numel() for p in model.parameters()),
           "module_forward_s_per_step": {k: v / n for k, v in sorted(forward.items())},
           "head": cfg.model.head,
           "per_query_share": sum(v for k, v in forward.items() if k in per_query_modules(cfg.model.head))
           / sum(forward.values())}
    if ones is not None:
        fit = fit_step_costs(dt, queries, t_one, videos_enc)
        out["step_fit"] = {"t_all_s": dt / n, "t_one_s": t_one / n, "queries_per_step": queries / n,
                           "videos_per_step": videos_enc / n, "one_query_videos": one_videos / n,
                           "v_s": None if fit is None else fit[0],  # seconds per video item
                           "q_s": None if fit is None else fit[1]}  # seconds per query
    if mode == "multi":  # inference: every query once, multi-pair batches
        t0 = time.perf_counter()
        evaluate_model(model, prepared, data.records, batch_videos=cfg.train.batch_videos, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        out["inference_queries_per_s"] = len(data.records) / dt
        out["inference_videos_per_s"] = len(prepared.videos) / dt
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=200, help="videos (synthetic default: ~150-250)")
    p.add_argument("--queries-per-video", type=float, default=4.5, help="mean queries per video (synthetic: 909/200)")
    p.add_argument("--clips", type=int, default=32, help="clips per video (the synthetic preset: 32)")
    p.add_argument("--dim", type=int, default=256, help="feature width D of frames and patches")
    p.add_argument("--patches", type=int, default=4)
    p.add_argument("--preset", default="synthetic")
    p.add_argument("--shape", choices=sorted(SHAPES), default=None,
                   help="a real dataset's shape: its preset, clips and training annotations; "
                        "--videos defaults to enough for the steps, --dim to 512 (C3D conv5)")
    p.add_argument("--annotations", default=None,
                   help="annotation file whose first --videos videos give the query counts")
    p.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                   help="where --shape finds the annotation files (default ../shared/data)")
    p.add_argument("--set", action="append", default=[], help="config override, e.g. model.d_model=256")
    p.add_argument("--head", choices=("span", "tan2d", "mmn"), default=None,
                   help="grounding head (model.head; default: the preset's, span)")
    p.add_argument("--heads", nargs="+", choices=("span", "tan2d", "mmn"), default=None,
                   help="several heads in one run (each with every --shapes entry); one table")
    p.add_argument("--shapes", nargs="+", choices=("synthetic", *sorted(SHAPES)), default=None,
                   help="several shapes in one run ('synthetic': no --shape); one table")
    p.add_argument("--batch-videos", type=int, default=8)
    p.add_argument("--steps", type=int, default=12, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="write the figures to this file")
    p.add_argument("--mode", choices=("multi", "single"), default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.heads or args.shapes:
        return run_grid(args)
    if args.shape:
        given = set(sys.argv[1:])
        args.preset = args.shape
        args.annotations = args.annotations or str(Path(args.data_root) / SHAPES[args.shape])
        if "--clips" not in given:
            args.clips = preset(args.shape).model.num_clips
        if "--batch-videos" not in given:
            args.batch_videos = preset(args.shape).train.batch_videos
        if "--videos" not in given:  # enough whole batches for the warm-up and timed steps
            args.videos = args.batch_videos * (args.warmup + args.steps)
        if "--dim" not in given:
            args.dim = 512
    if args.mode:  # child process: one mode, JSON on stdout
        print(json.dumps(run_mode(args, args.mode)))
        return 0
    results = {}
    for mode in ("multi", "single"):
        cmd = [sys.executable, __file__, "--mode", mode] + [a for a in sys.argv[1:] if a != "--json"
                                                            and not a.endswith(".json")]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    m, s = results["multi"], results["single"]
    speedup = m["queries_per_s"] / s["queries_per_s"]
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores"
                   + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""),
        "load_avg": os.getloadavg(), "torch": torch.__version__,
        "args": {k: v for k, v in vars(args).items() if k not in ("json", "mode")},
        "multi_pair": m, "single_pair": s, "speedup": speedup,
    }
    print(f"{'mode':<12}{'queries/s':>11}{'videos/s':>10}{'enc/step':>10}{'q/step':>8}{'peak MiB':>10}")
    for name, r in (("multi-pair", m), ("single-pair", s)):
        peak = r.get("cuda_peak_mib", r["peak_rss_mib"])
        print(f"{name:<12}{r['queries_per_s']:>11.1f}{r['videos_per_s']:>10.2f}"
              f"{r['video_encodings_per_step']:>10.1f}{r['queries_per_step']:>8.1f}{peak:>10.0f}")
    print(f"{'module forward s/step':<22}{'multi':>8}{'single':>8}"
          f"   (head {m['head']}; per query: {', '.join(per_query_modules(m['head']))})")
    for k in m["module_forward_s_per_step"]:
        print(f"  {k:<20}{m['module_forward_s_per_step'][k]:>8.3f}{s['module_forward_s_per_step'].get(k, 0):>8.3f}")
    print(f"per-query share of the forward pass: multi-pair {m['per_query_share']:.0%}, "
          f"single-pair {s['per_query_share']:.0%}")
    f = m["step_fit"]
    qpv = m["queries_per_step"] / m["video_encodings_per_step"]
    cap = None if f["q_s"] is None else step_ceiling(qpv, f["v_s"], f["q_s"])
    if f["q_s"] is None:
        fitted = "Q = B: no spread to fit, ceiling 1"
    else:
        fitted = (f"v {f['v_s']:.4f} s/video, q {f['q_s']:.4f} s/query, whole-step ceiling "
                  + ("n/a (fit out of range)" if cap is None else f"{cap:.2f}x"))
    print(f"whole step: {f['t_all_s']:.3f} s for {f['queries_per_step']:.1f} queries, "
          f"{f['t_one_s']:.3f} s with one query per video; {fitted}")
    print(f"multi-pair speed-up: {speedup:.2f}x; inference {m['inference_queries_per_s']:.1f} queries/s "
          f"({m['inference_videos_per_s']:.2f} videos/s); load avg {report['load_avg'][0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def one_query_sampler(sampler: GroupSampler) -> GroupSampler:
    """The sampler's epoch-0 batches with each group keeping only its first query: the same
    groups in the same order (the shuffle depends on the seed and the number of groups only)."""
    groups = [Group(g.video_id, g.query_ids[:1]) for g in sampler.epoch_groups(0)]
    return GroupSampler(groups, sampler.batch_size, seed=sampler.seed, shuffle=sampler.shuffle,
                        rank=sampler.rank, world_size=sampler.world_size)


def ceiling(queries_per_video: float, share: float) -> float:
    """Forward-share ceiling: the largest multi-pair speed-up a forward per-query share allows
    (module docstring)."""
    return queries_per_video * (1.0 - share) + share


def fit_step_costs(t_all: float, queries: int, t_one: float,
                   videos: int) -> tuple[float, float] | None:
    """``(v, q)``: whole-step seconds per video item and per query from ``t_all`` seconds for
    ``videos`` items with ``queries`` queries and ``t_one`` seconds for the same items with one
    query each (module docstring). None when ``queries == videos`` (no spread to fit)."""
    if videos <= 0 or queries < videos:
        raise ValueError(f"need videos > 0 and queries >= videos, "
                         f"got {videos} videos, {queries} queries")
    if queries == videos:
        return None
    q = (t_all - t_one) / (queries - videos)
    return t_one / videos - q, q


def step_ceiling(queries_per_video: float, v: float, q: float) -> float | None:
    """Whole-step ceiling ``qpv * (v + q) / (v + qpv * q)`` (module docstring); None when the fit
    is out of range (``v < 0`` or ``q < 0``, or both 0)."""
    if v < 0 or q < 0 or v + queries_per_video * q <= 0:
        return None
    return queries_per_video * (v + q) / (v + queries_per_video * q)


def run_grid(args: argparse.Namespace) -> int:
    """Every (shape, head) of ``--shapes`` x ``--heads``, each a run of this script (its own two
    processes), in one table with both ceilings (forward-share and whole-step; module docstring)."""
    import tempfile

    skip = {"--heads", "--shapes", "--json", "--head", "--shape"}
    passthrough, drop = [], False
    for a in sys.argv[1:]:
        if a.startswith("--"):
            drop = a in skip
        if not drop:
            passthrough.append(a)
    rows = []
    for shape in args.shapes or ["synthetic"]:
        for head in args.heads or ["mmn"]:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "r.json"
                cmd = [sys.executable, __file__, *passthrough, "--head", head, "--json", str(out)]
                if shape != "synthetic":
                    cmd += ["--shape", shape]
                subprocess.run(cmd, capture_output=True, text=True, check=True)
                rep = json.loads(out.read_text())
            m, s = rep["multi_pair"], rep["single_pair"]
            qpv = m["queries_per_step"] / m["video_encodings_per_step"]
            fwd_cap = ceiling(qpv, m["per_query_share"])
            f = m["step_fit"]
            note = ""
            if f["q_s"] is None:
                cap, step_share = 1.0, None
                note = "Q = B: no spread to fit; multi = single, ceiling 1"
            else:
                cap = step_ceiling(qpv, f["v_s"], f["q_s"])
                step_share = f["q_s"] * f["queries_per_step"] / f["t_all_s"]
                if cap is None:
                    note = "fit out of range (v < 0 or q < 0): no whole-step ceiling"
            rows.append({"shape": shape, "head": head, "queries_per_video": qpv,
                         "multi_videos_per_s": m["videos_per_s"], "single_videos_per_s": s["videos_per_s"],
                         "multi_queries_per_s": m["queries_per_s"], "single_queries_per_s": s["queries_per_s"],
                         "speedup": rep["speedup"], "forward_per_query_share": m["per_query_share"],
                         "forward_share_ceiling": fwd_cap, "step_fit": f,
                         "step_per_query_share": step_share, "step_ceiling": cap,
                         "of_step_ceiling": None if cap is None else rep["speedup"] / cap,
                         "note": note, "load_avg": rep["load_avg"][0]})
            print(f"done {shape} / {head}: {rep['speedup']:.2f}x (whole-step ceiling "
                  f"{'n/a' if cap is None else f'{cap:.2f}x'}, "
                  f"forward-share {fwd_cap:.2f}x) {note}",
                  file=sys.stderr)

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.0%}"

    print("| shape | head | q/video | VPS multi | VPS single | q/s multi | q/s single | speed-up | "
          "fwd per-query share | fwd-share ceiling | step v / q (ms) | step per-query share | "
          "whole-step ceiling | of whole-step ceiling | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = r["step_fit"]
        vq = "Q = B" if f["q_s"] is None else f"{f['v_s'] * 1e3:.0f} / {f['q_s'] * 1e3:.0f}"
        cap = "n/a" if r["step_ceiling"] is None else f"{r['step_ceiling']:.2f}x"
        print(f"| {r['shape']} | {r['head']} | {r['queries_per_video']:.2f} | {r['multi_videos_per_s']:.2f} | "
              f"{r['single_videos_per_s']:.2f} | {r['multi_queries_per_s']:.1f} | {r['single_queries_per_s']:.1f} | "
              f"**{r['speedup']:.2f}x** | {r['forward_per_query_share']:.0%} | "
              f"{r['forward_share_ceiling']:.2f}x | "
              f"{vq} | {pct(r['step_per_query_share'])} | {cap} | {pct(r['of_step_ceiling'])} | "
              f"{r['load_avg']:.1f} |")
    for r in rows:
        if r["note"]:
            print(f"- {r['shape']} / {r['head']}: {r['note']}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()} {os.cpu_count()} cores", "torch": torch.__version__,
            "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
