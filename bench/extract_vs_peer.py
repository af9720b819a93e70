"""This project's extraction against v-iashin/video_features, side by side on the same videos.

    python bench/extract_vs_peer.py [--peer PATH] [--peer-deps DIR] [--videos 10]
        [--clips-per-video 4] [--video-dir DIR] [--threads 2] [--steps mktn grid1 peer bounds]
        [--bound-clips N] [--bound-batch B] [--probe-cache DIR] [--lock FILE] [--json out.json]
    python bench/extract_vs_peer.py --merge a.json b.json ... [--json all.json]

Both extractors run torchvision R(2+1)D-18 (random init: no weights are downloaded, and
throughput does not depend on the weight values) on the same synthetic mp4s (written here
with PyAV, 320x240 at 25 fps; video i has ``clips-per-video - 2 + i % 5`` whole 16-frame
clips), 16-frame clips, stride 16, short side 128, centre crop 112, every frame (the
videos' own 25 fps), CPU, ``--threads`` torch threads. Each extractor runs in its own child
process, as a user would run it, and reports its clips, the seconds of its extraction
(after the interpreter and imports) and its peak RSS (``ru_maxrss`` of that child alone,
from ``os.wait4``).

- mktn: ``extract_videos`` with the default settings (batch size chosen by the probe, or
  the probe's choice remembered from an earlier run, patch features on: 4x4 grid), into a
  fresh Zarr store; step ``grid1`` runs it with ``--grid 1`` (patch features as small as
  they go) to show what the patch head costs end to end. ``--probe-cache DIR`` is the
  ``MKTN_CACHE_DIR`` of these runs (default: a fresh folder per invocation, so its first
  run probes); each run reports whether its batch size was probed or remembered.
- video_features: its ``main.py`` with ``feature_type=r21d device=cpu
  on_extraction=save_numpy``, imported and run in the child with two patches, printed in
  the output: ``torchvision.models.get_model(..., weights='DEFAULT')`` is made to build
  with ``weights=None`` (seeded random init), and, where the installed torchvision no
  longer has ``torchvision.io.read_video`` (removed in torchvision 0.24), a stand-in with
  the removed function's behaviour (PyAV decode of every frame to an RGB uint8 THWC
  tensor) is installed. Its own code is not changed. It needs ``omegaconf`` and
  ``opencv-python-headless`` (``pip install omegaconf opencv-python-headless``, or
  ``--peer-deps DIR`` for a ``pip install --target DIR`` folder).

  Getting the peer: ``git clone https://github.com/v-iashin/video_features`` and pass the
  folder as ``--peer``. Without ``--peer`` (or when the folder has no ``main.py``) the peer
  is skipped with a message and only this project's figures are printed.

Bounds (step ``bounds``), each in a child on the same clips: decode-only over all clips
(this project's ``ClipStream`` plus normalisation; the peer's ``read_video`` plus its
transforms) and compute-only on the first ``--bound-clips`` pre-decoded clips (the model
forward alone: the backbone as the peer runs it, one clip at a time with glibc's allocator
defaults, as the peer's process has them; this project's backbone at batch 1 and its clip +
patch head at the batch size the probe chose, with the allocator setting extraction uses).

``--steps`` runs the steps in the order given (repeats allowed), so the two sides can be
alternated; several invocations on one ``--video-dir`` (the videos are written once and
reused) keep each lock hold short, and ``--merge`` combines their ``--json`` reports (all
clips over all seconds per side) into the ratio and the compute-bound ratios.
``--lock PATH`` takes an exclusive ``flock`` on PATH around each measurement (not around
writing the videos), so timings are not shared with other torch jobs on the machine and
no single hold is long; or run each invocation under ``flock`` yourself.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

CLIP_LEN = 16
FPS = 25
SIZE = (320, 240)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@contextlib.contextmanager
def _locked(path: str | None) -> Iterator[None]:
    if not path:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def clips_of(i: int, per_video: int) -> int:
    """Whole 16-frame clips in video ``i``: ``per_video - 2 .. per_video + 2`` in turn."""
    return per_video - 2 + i % 5


def make_videos(folder: Path, count: int, per_video: int = 4, seed: int = 0) -> list[Path]:
    """``count`` mp4s of ``per_video - 2 .. per_video + 2`` whole 16-frame clips: moving
    blocks on a textured background. Files already there from the same arguments are kept."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / "videos.json"
    want = {"count": count, "per_video": per_video, "seed": seed, "size": SIZE, "fps": FPS}
    names = [folder / f"v{i:02d}.mp4" for i in range(count)]
    if stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(want)):
        if all(n.is_file() for n in names):
            return names
    stamp.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    w, h = SIZE
    out = []
    for i in range(count):
        clips = clips_of(i, per_video)
        path = names[i]
        container = av.open(str(path), "w")
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        base = rng.integers(40, 200, (h, w, 3), dtype=np.uint8)
        colour = rng.integers(0, 255, 3)
        for f in range(clips * CLIP_LEN):
            img = base.copy()
            x, y = (7 * f + 13 * i) % (w - 40), (3 * f + 5 * i) % (h - 40)
            img[y : y + 40, x : x + 40] = colour
            img[:, :, i % 3] = np.roll(img[:, :, i % 3], f, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        out.append(path)
    stamp.write_text(json.dumps(want))
    return out


# --- children ----------------------------------------------------------------------------


def _child_mktn(videos: list[str], store: str, threads: int, grid: int) -> dict[str, Any]:
    import torchvision.models.video  # noqa: F401  imported before the clock, as in the peer's child

    from pipeline.extract import ExtractionConfig, extract_videos

    config = ExtractionConfig(
        backbone="r2plus1d_18",
        grid=grid,
        fps=FPS,
        clip_len=CLIP_LEN,
        stride=CLIP_LEN,
        resize=128,
        crop=112,
        geometry="crop",
        threads=threads,
        device="cpu",
        dataset="bench",
    )
    from pipeline import extract

    # seconds inside the model's forward (normalisation excluded): the rest of the run is
    # decode contention, model build, probe warm-ups, writing, waiting
    in_forward = [0.0]
    build = extract.get_model

    def get_model(*a: Any, **k: Any) -> Any:
        model = build(*a, **k)
        if "forward" not in vars(model):
            forward = model.forward

            def timed(*fa: Any, **fk: Any) -> Any:
                t = time.perf_counter()
                try:
                    return forward(*fa, **fk)
                finally:
                    in_forward[0] += time.perf_counter() - t

            model.forward = timed
        return model

    extract.get_model = get_model  # type: ignore[assignment]
    t0 = time.perf_counter()
    summary = extract_videos(videos, store, config, progress=False)
    seconds = time.perf_counter() - t0
    assert not summary.failed, summary.format()

    probes = {
        str(k): {str(b): round(t, 4) for b, t in p.per_clip.items()}
        for k, p in extract._PROBES.items()
    }
    return {
        "clips": summary.num_clips,
        "seconds": seconds,
        "batch": extract.last_batch_choice(),
        "probe_seconds_per_clip": probes,
        "probe_remembered": any(p.remembered for p in extract._PROBES.values()),
        "forward_seconds": in_forward[0],
    }


def _read_video_stand_in(path: str, pts_unit: str = "sec", **_: Any):
    """torchvision<0.24 ``read_video`` with its PyAV backend: all frames, RGB, uint8 THWC."""
    import av
    import torch

    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    video = torch.as_tensor(np.stack(frames)) if frames else torch.empty((0, 1, 1, 3))
    return video, torch.empty((1, 0)), {"video_fps": fps}


def _patch_peer() -> list[str]:
    import types

    import torch
    import torchvision.models as tvm

    patched = []
    original = tvm.get_model

    def get_model(name: str, weights: Any = None, **kwargs: Any) -> torch.nn.Module:
        torch.manual_seed(0)
        return original(name, weights=None, **kwargs)

    tvm.get_model = get_model
    patched.append(
        "torchvision.models.get_model(weights='DEFAULT') -> weights=None (seeded random init)"
    )
    try:
        from torchvision.io.video import read_video  # noqa: F401
    except ImportError:
        import torchvision.io

        shim = types.ModuleType("torchvision.io.video")
        shim.read_video = _read_video_stand_in  # type: ignore[attr-defined]
        sys.modules["torchvision.io.video"] = shim
        torchvision.io.video = shim  # type: ignore[attr-defined]
        patched.append(
            "torchvision.io.video.read_video (gone from this torchvision) -> a PyAV stand-in "
            "with the removed function's behaviour"
        )
    return patched


def _child_peer(
    peer: str, videos: list[str], out: str, threads: int, decode_only: bool
) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    patched = _patch_peer()
    sys.path.insert(0, peer)
    os.chdir(peer)
    from omegaconf import OmegaConf

    listing = Path(out) / "videos.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("\n".join(videos) + "\n")
    cli = OmegaConf.from_dotlist(
        [
            "feature_type=r21d",
            "device=cpu",
            "on_extraction=save_numpy",
            f"output_path={out}/features",
            f"tmp_path={out}/tmp",
            f"file_with_video_paths={listing}",
        ]
    )
    if decode_only:  # the peer's own decode + transforms, no model
        from models.r21d.extract_r21d import ExtractR21D
        from torchvision.io.video import read_video  # the (patched) one the peer uses

        args = OmegaConf.merge(OmegaConf.load("configs/r21d.yml"), cli)
        extractor = ExtractR21D(args)
        t0, clips = time.perf_counter(), 0
        for v in videos:
            rgb, _, _ = read_video(v, pts_unit="sec")
            rgb = extractor.transforms(rgb)
            clips += (rgb.shape[1] - CLIP_LEN) // CLIP_LEN + 1
        return {"clips": clips, "seconds": time.perf_counter() - t0, "patched": patched}
    import main as peer_main

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        peer_main.main(cli)
    seconds = time.perf_counter() - t0
    feats = sorted(Path(out, "features").rglob("*_r21d.npy"))  # under <feature_type>/<model>/
    clips = sum(int(np.load(f).shape[0]) for f in feats)
    return {"clips": clips, "seconds": seconds, "files": len(feats), "patched": patched}


def _spawn(args: list[str], env_extra: dict[str, str], log: Path) -> dict[str, Any]:
    """Run this file as a child with ``args``; its JSON result plus its own peak RSS."""
    env = dict(os.environ, **env_extra)
    t0 = time.perf_counter()
    with open(log, "w") as err, tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *args], stdout=out, stderr=err, env=env
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"child {args[:2]} failed ({proc.returncode}):\n{tail}")
    result = json.loads(text.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    result["wall_s"] = time.perf_counter() - t0
    if "seconds" in result:
        result["clips_per_s"] = result["clips"] / result["seconds"]
    return result


# --- bounds: each in its own child on the same clips --------------------------------------


def _child_bounds(
    videos: list[str], threads: int, batch: int, clips: int | None, tune: bool
) -> dict[str, Any]:
    """Decode alone (all clips) and the forward alone (the first ``clips`` pre-decoded ones).

    ``tune``: with the allocator setting extraction runs with (this project); without it,
    glibc's defaults (what the peer runs with).
    """
    import torch

    from pipeline.backbones import build_extractor
    from pipeline.extract import tune_cpu_allocator
    from pipeline.video import ClipSampling, ClipStream

    torch.set_num_threads(threads)
    applied = tune_cpu_allocator() if tune else False
    sampling = ClipSampling(
        fps=FPS, clip_len=CLIP_LEN, stride=CLIP_LEN, resize=128, crop=112, geometry="crop"
    )
    model = build_extractor("r2plus1d_18", grid=4)
    t0, kept, decoded = time.perf_counter(), [], 0
    for v in videos:
        for b in ClipStream(v, sampling).batches(8):
            x = model.normalize(torch.from_numpy(b.frames))
            decoded += x.shape[0]
            if clips is None or sum(k.shape[0] for k in kept) < clips:
                kept.append(x)
    decode_s = time.perf_counter() - t0
    data = torch.cat(kept)[:clips]
    n = data.shape[0]
    net = model.net

    def backbone(x: torch.Tensor) -> torch.Tensor:  # what the peer runs: fc = Identity
        return net.avgpool(net.layer4(net.layer3(net.layer2(net.layer1(net.stem(x)))))).flatten(1)

    def timed(fn: Any, bs: int) -> float:
        with torch.inference_mode():
            fn(data[:bs])  # warm-up: oneDNN primitives for this shape
            t0 = time.perf_counter()
            for i in range(0, n, bs):
                fn(data[i : i + bs])
            return n / (time.perf_counter() - t0)

    out: dict[str, Any] = {
        "clips": n,
        "allocator_tuned": applied,
        "decoded_clips": decoded,
        "mktn_decode_clips_per_s": decoded / decode_s,
    }
    if tune:  # this project: the backbone and the clip + patch head at the probe's batch
        for bs in sorted({1, batch}):
            out[f"backbone_b{bs}"] = timed(backbone, bs)
        out[f"with_patch_head_b{batch}"] = timed(model, batch)
    else:  # the peer's forward: the backbone, one clip at a time, glibc defaults
        out["backbone_b1"] = timed(backbone, 1)
    return out


def summarise(report: dict[str, Any]) -> list[str]:
    """The figures the issue asks for, from whatever runs ``report`` holds."""
    lines = []
    mk = report.get("mktn_runs", [])
    pe = report.get("peer_runs", [])

    def rate(runs: list[dict[str, Any]]) -> float:  # all clips over all seconds
        return sum(r["clips"] for r in runs) / sum(r["seconds"] for r in runs)

    if mk:
        lines.append(
            "mktn runs: "
            + "; ".join(
                f"{r['clips']} clips {r['clips_per_s']:.3f}/s batch {r['batch']}"
                f" ({'remembered' if r.get('probe_remembered') else 'probed'}),"
                f" {r['peak_rss_mb']:.0f} MB"
                for r in mk
            )
            + f" -> {rate(mk):.3f} clips/s"
        )
    if pe:
        lines.append(
            "video_features runs: "
            + "; ".join(
                f"{r['clips']} clips {r['clips_per_s']:.3f}/s, {r['peak_rss_mb']:.0f} MB"
                for r in pe
            )
            + f" -> {rate(pe):.3f} clips/s"
        )
    if mk and pe:
        lines.append(f"ratio mktn / video_features: {rate(mk) / rate(pe):.2f}x (target >= 1.2x)")
    b = report.get("bounds")
    if b:
        batch = b["batch"]
        head = b["mktn"][f"with_patch_head_b{batch}"]
        lines.append(
            "compute bounds (forward alone, clips/s): mktn "
            + ", ".join(
                f"{k} {v:.3f}" for k, v in b["mktn"].items() if k.startswith(("back", "with"))
            )
            + f"; peer backbone_b1 {b['peer']['backbone_b1']:.3f} (glibc defaults)"
            + f"; decode: mktn {b['mktn']['mktn_decode_clips_per_s']:.1f}"
            + (
                f", peer {b['peer_decode_clips_per_s']:.1f}"
                if "peer_decode_clips_per_s" in b
                else ""
            )
        )
        if mk:
            lines.append(f"mktn end to end / compute bound: {rate(mk) / head:.2f} (target >= 0.90)")
        if pe:
            lines.append(
                f"video_features end to end / compute bound: {rate(pe) / b['peer']['backbone_b1']:.2f}"
                f" (glibc defaults; {rate(pe) / b['mktn']['backbone_b1']:.2f} against the"
                " backbone with this project's allocator setting)"
            )
    return lines


STEPS = ("mktn", "grid1", "peer", "bounds")


def _remembered_batch(env: dict[str, str]) -> int | None:
    """The batch size an earlier invocation's probe chose, from ``--probe-cache``."""
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        entries = json.loads(Path(env["MKTN_CACHE_DIR"], "cpu-batch-size.json").read_text())
        chosen = {e["chosen"] for e in entries["entries"].values()}
        if len(chosen) == 1:
            return int(chosen.pop())
    return None


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--peer", default=None, help="a video_features checkout (see above)")
    ap.add_argument("--peer-deps", default=None, help="extra PYTHONPATH folder for the peer")
    ap.add_argument("--videos", type=int, default=10)
    ap.add_argument(
        "--clips-per-video",
        type=int,
        default=4,
        help="video i has N-2+i%%5 whole clips (default 4: 2..6, 40 clips for 10 videos)",
    )
    ap.add_argument(
        "--video-dir", default=None, help="write the videos here and reuse them (default: temp)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lock", default=None, help="flock this file around each measurement")
    ap.add_argument(
        "--steps",
        nargs="+",
        choices=STEPS,
        default=None,
        help="what to run, in this order, repeats allowed (default: mktn grid1 peer bounds)",
    )
    ap.add_argument("--no-grid1", action="store_true", help="skip the --grid 1 run")
    ap.add_argument(
        "--bound-clips",
        type=int,
        default=None,
        help="time the forward bounds on the first N clips (default: all of them)",
    )
    ap.add_argument(
        "--bound-batch",
        type=int,
        default=None,
        help="batch size of the patch-head bound (default: the last mktn run's, else the "
        "one remembered in --probe-cache, else 4)",
    )
    ap.add_argument(
        "--probe-cache",
        default=None,
        help="MKTN_CACHE_DIR for this project's runs, where the probe's choice is remembered "
        "(default: a fresh folder per invocation, so its first run probes)",
    )
    ap.add_argument("--json", default=None, help="write the report here")
    ap.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="no measurement: combine the --json reports of earlier invocations and summarise",
    )
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        kind, payload = args.child[0], json.loads(args.child[1])
        runner = {"mktn": _child_mktn, "peer": _child_peer, "bounds": _child_bounds}[kind]
        print(json.dumps(runner(**payload)))
        return

    if args.merge:
        merged: dict[str, Any] = {"mktn_runs": [], "peer_runs": [], "grid1_runs": [], "from": []}
        for f in args.merge:
            part = json.loads(Path(f).read_text())
            merged["from"].append(
                {k: part.get(k) for k in ("date", "machine", "load_before", "load_after", "steps")}
            )
            for k in ("mktn_runs", "peer_runs", "grid1_runs"):
                merged[k] += part.get(k, [])
            if "bounds" in part:
                merged["bounds"] = part["bounds"]
        for line in summarise(merged):
            print(line)
        if args.json:
            Path(args.json).write_text(json.dumps(merged, indent=2, default=str))
        return

    from importlib.metadata import version

    steps = list(args.steps or [x for x in STEPS if not (x == "grid1" and args.no_grid1)])
    report: dict[str, Any] = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {version('torch')}",
        "threads": args.threads,
        "steps": steps,
        "load_before": _load(),
        "mktn_runs": [],
        "peer_runs": [],
        "grid1_runs": [],
    }
    print(f"{report['date']}  {report['machine']}  load {report['load_before']}", flush=True)
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    here = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    peer = args.peer
    if peer and not Path(peer, "main.py").is_file():
        print(f"--peer {peer}: no main.py there; skipping video_features", flush=True)
        peer = None
    elif not peer:
        print(
            "no --peer given: skipping video_features "
            "(git clone https://github.com/v-iashin/video_features; --peer that folder)",
            flush=True,
        )
    with tempfile.TemporaryDirectory(prefix="mktn-vs-peer-") as tmp:
        tmpd = Path(tmp)
        env["MKTN_CACHE_DIR"] = args.probe_cache or str(tmpd / "cache")
        t0 = time.perf_counter()
        vdir = Path(args.video_dir) if args.video_dir else tmpd / "videos"
        videos = make_videos(vdir, args.videos, args.clips_per_video)
        names = [str(v) for v in videos]
        total = sum(clips_of(i, args.clips_per_video) for i in range(args.videos))
        print(
            f"{len(videos)} videos in {vdir} ({time.perf_counter() - t0:.1f} s), "
            f"{total} clips each side",
            flush=True,
        )
        counter = iter(range(1000))

        def mktn(grid: int, tag: str) -> dict[str, Any]:
            payload = {
                "videos": names,
                "store": str(tmpd / f"{tag}.zarr"),
                "threads": args.threads,
                "grid": grid,
            }
            with _locked(args.lock):
                res = _spawn(["--child", "mktn", json.dumps(payload)], env, tmpd / f"{tag}.log")
            res["load_after"] = _load()
            return res

        def peer_run(decode_only: bool, tag: str) -> dict[str, Any]:
            penv = dict(env)
            if args.peer_deps:
                penv["PYTHONPATH"] = os.pathsep.join([args.peer_deps, penv["PYTHONPATH"]])
            payload = {
                "peer": str(Path(peer).resolve()),  # type: ignore[arg-type]
                "videos": names,
                "out": str(tmpd / tag),
                "threads": args.threads,
                "decode_only": decode_only,
            }
            with _locked(args.lock):
                res = _spawn(["--child", "peer", json.dumps(payload)], penv, tmpd / f"{tag}.log")
            res["load_after"] = _load()
            return res

        def bound_run(batch: int, tune: bool, tag: str) -> dict[str, Any]:
            payload = {
                "videos": names,
                "threads": args.threads,
                "batch": batch,
                "clips": args.bound_clips,
                "tune": tune,
            }
            with _locked(args.lock):
                return _spawn(["--child", "bounds", json.dumps(payload)], env, tmpd / f"{tag}.log")

        for step in steps:
            n = next(counter)
            if step in ("mktn", "grid1"):
                grid = 4 if step == "mktn" else 1
                r = mktn(grid, f"mktn-{n}")
                report[f"{step}_runs"].append(r)
                print(
                    f"mktn ({'defaults, patch features on, 4x4 grid' if grid == 4 else '--grid 1'}): "
                    f"{r['clips']} clips in {r['seconds']:.1f} s = {r['clips_per_s']:.3f} clips/s, "
                    f"batch {r['batch']} ({'remembered' if r['probe_remembered'] else 'probe'}, "
                    f"s/clip: {r['probe_seconds_per_clip']}), peak RSS {r['peak_rss_mb']:.0f} MB, "
                    f"{r['forward_seconds']:.1f} s in the forward  "
                    f"(load {r['load_after']})",
                    flush=True,
                )
            elif step == "peer" and peer:
                try:
                    r = peer_run(False, f"peer-{n}")
                except RuntimeError as exc:
                    print(f"video_features could not run; skipping it: {exc}", flush=True)
                    continue
                report["peer_runs"].append(r)
                print("video_features patched in its child: " + "; ".join(r["patched"]), flush=True)
                print(
                    f"video_features (r21d, cpu): {r['clips']} clips in {r['seconds']:.1f} s = "
                    f"{r['clips_per_s']:.3f} clips/s, peak RSS {r['peak_rss_mb']:.0f} MB  "
                    f"(load {r['load_after']})",
                    flush=True,
                )
            elif step == "bounds":
                done = report["mktn_runs"]
                batch = args.bound_batch or (
                    int(done[-1]["batch"] or 1) if done else _remembered_batch(env) or 4
                )
                b: dict[str, Any] = {"batch": batch}
                b["mktn"] = bound_run(batch, True, f"bounds-mktn-{n}")
                b["peer"] = bound_run(batch, False, f"bounds-peer-{n}")
                if peer:
                    pdec = peer_run(True, f"peer-decode-{n}")
                    b["peer_decode_clips_per_s"] = pdec["clips"] / pdec["seconds"]
                report["bounds"] = b
        for line in summarise(report):
            print(line, flush=True)
    report["load_after"] = _load()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
