"""Generate the synthetic benchmark: plan every video, render + encode them, write annotations and a manifest.

Layout of ``out``::

    videos/<video_id>.mp4          H.264 yuv420p, written atomically
    annotations/{train,val,test}.jsonl
                                   Moment-DETR/Lighthouse JSONL (qid, query, duration, vid,
                                   relevant_windows) + split, relation, anchor_qid, event
    synth.json                     config, seed, code version, statistics, per-file sha256;
                                   written last: its presence means the dataset is complete
    .synth-plan.json               config + seed of the run in progress (guards reruns)

Everything is deterministic for (config, seed): each video draws from its own
``SeedSequence([seed, index, stream])`` (stream 0: the scene, 1: the sentences,
2: the order its queries are listed in, 3: the text-only clauses of the
redundancy control), so the result does not depend on the
number of workers or on which videos a rerun skips.

Query order carries no answer: each video's queries are listed in a seeded
random order (not in event order) and numbered in that listed order
(``<vid>_q0`` is the first line of the video, whatever its moment), so neither
the position of a line nor its ``qid`` says when its moment is.

The generator of the scene, events and sentences is the config's ``domain``
(``pipeline.synth.domains``); everything here is shared by all domains.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.provenance import code_version
from pipeline.synth.config import SynthConfig
from pipeline.synth.domains import all_noun_words, get_domain
from pipeline.synth.language import Query
from pipeline.synth.redundancy import dilute_queries, visible_share
from pipeline.synth.writer import write_mp4
from storage.atomic import atomic_write_json, atomic_write_text
from storage.fingerprint import file_digest

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
MANIFEST = "synth.json"
PLAN = ".synth-plan.json"
# 2: queries listed in a seeded random order per video and numbered in that order (1: event order);
#    the config names its domain
FORMAT_VERSION = 2
_SPLIT_STREAM = 1 << 20
_SCENE, _LANGUAGE, _ORDER, _TEXT_ONLY = 0, 1, 2, 3  # per-video SeedSequence streams


@dataclass(frozen=True)
class SynthResult:
    """What ``generate_benchmark`` did."""

    out: Path
    num_videos: int
    num_queries: int
    total_seconds: float
    encoded: int  # videos encoded by this run
    skipped: int  # videos found complete from an earlier run
    elapsed: float  # wall seconds of this run
    stats: dict[str, Any] = field(default_factory=dict)


def video_id(index: int, domain: str = "shapes") -> str:
    return get_domain(domain).video_id(index)


def plan_videos(cfg: SynthConfig, seed: int) -> list[tuple[Any, list[Query]]]:
    """Every video's script and its queries in listing order, a seeded shuffle (cheap: no pixels)."""
    domain = get_domain(cfg.domain)
    planned = []
    for i in range(cfg.num_videos):
        scene_rng = np.random.default_rng(np.random.SeedSequence([seed, i, _SCENE]))
        lang_rng = np.random.default_rng(np.random.SeedSequence([seed, i, _LANGUAGE]))
        order_rng = np.random.default_rng(np.random.SeedSequence([seed, i, _ORDER]))
        script = domain.make_script(domain.video_id(i), scene_rng, cfg)
        queries = domain.describe(script, lang_rng)  # in event order
        if cfg.redundancy < 1:
            text_rng = np.random.default_rng(np.random.SeedSequence([seed, i, _TEXT_ONLY]))
            queries = dilute_queries(queries, cfg.redundancy, text_rng)
        planned.append((script, [queries[int(k)] for k in order_rng.permutation(len(queries))]))
    return planned


def assign_splits(cfg: SynthConfig, seed: int) -> list[str]:
    """Split name per video index: a seeded permutation cut at the configured fractions."""
    n = cfg.num_videos
    counts = [int(round(f * n)) for f in cfg.splits[1:]]
    if n >= 3:  # val and test are never empty when there are 3+ videos
        counts = [max(c, 1) if f > 0 else c for c, f in zip(counts, cfg.splits[1:], strict=True)]
    n_train = n - sum(counts)
    perm = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM])).permutation(n)
    names = ["train"] * n_train + ["val"] * counts[0] + ["test"] * counts[1]
    out = [""] * n
    for rank, idx in enumerate(perm):
        out[int(idx)] = names[rank]
    return out


def annotation_records(
    script: Any, queries: Sequence[Query], split: str, domain: str = "shapes"
) -> list[dict[str, Any]]:
    """The JSONL records of one video, one per query, in the order of ``queries``.

    Query ids number the queries in that order (``<vid>_q0``, ``<vid>_q1``, ...), so
    with the shuffled order of :func:`plan_videos` they say nothing about time;
    ``anchor_qid`` names the anchor's query by the same numbering.
    """
    event_record = get_domain(domain).event_record
    qid_of_event = {q.event: f"{script.video_id}_q{k}" for k, q in enumerate(queries)}
    records = []
    for q in queries:
        ev = script.events[q.event]
        records.append(
            {
                "qid": qid_of_event[q.event],
                "query": q.sentence,
                "duration": round(script.duration, 4),
                "vid": script.video_id,
                "relevant_windows": [[round(ev.start, 4), round(ev.end, 4)]],
                "split": split,
                "relation": q.relation,
                "anchor_qid": qid_of_event[q.anchor] if q.anchor >= 0 else None,
                "event": event_record(script, q.event),
            }
        )
    return records


_NOUN_WORDS = all_noun_words()


def order_start_correlation(records: Sequence[dict[str, Any]]) -> float:
    """Mean over videos (3+ queries) of the Spearman correlation between listed position and start time.

    1.0 when every video lists its queries in event order; near 0 when the order says nothing.
    """
    by_video: dict[str, list[float]] = {}
    for r in records:
        by_video.setdefault(r["vid"], []).append(float(r["relevant_windows"][0][0]))
    rhos = []
    for starts in by_video.values():
        if len(starts) < 3:
            continue
        ranks = np.argsort(np.argsort(starts, kind="stable"), kind="stable").astype(float)
        pos = np.arange(len(starts), dtype=float)
        if ranks.std() > 0:
            rhos.append(float(np.corrcoef(pos, ranks)[0, 1]))
    return round(float(np.mean(rhos)), 4) if rhos else 0.0


def dataset_stats(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts of the phenomena multi-pair training exploits, from annotation records."""
    by_video: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_video.setdefault(r["vid"], []).append(r)
    relations = Counter(r["relation"] for r in records)
    kinds = Counter(r["event"]["kind"] for r in records)
    shared = 0
    for recs in by_video.values():
        nouns = Counter()  # type: Counter[str]
        for r in recs:
            text = " " + r["query"] + " "
            nouns.update({w for w in _NOUN_WORDS if f" {w} " in text or f" {w}," in text})
        shared += any(c >= 2 for c in nouns.values())
    videos_of_sentence: dict[str, set[str]] = {}
    for r in records:
        videos_of_sentence.setdefault(r["query"], set()).add(r["vid"])
    repeated = {s for s, v in videos_of_sentence.items() if len(v) >= 2}
    n = len(records)
    rel_len = [(w[1] - w[0]) / r["duration"] for r in records for w in r["relevant_windows"][:1]]
    rel_start = [w[0] / r["duration"] for r in records for w in r["relevant_windows"][:1]]
    overlapping = 0
    for recs in by_video.values():
        wins = [r["relevant_windows"][0] for r in recs]
        overlapping += sum(
            1 for i, a in enumerate(wins) if any(j != i and min(a[1], b[1]) > max(a[0], b[0]) for j, b in enumerate(wins))
        )
    return {
        "videos": len(by_video),
        "queries": n,
        "queries_per_video": round(n / max(len(by_video), 1), 3),
        "total_seconds": round(sum(recs[0]["duration"] for recs in by_video.values()), 2),
        "event_kinds": dict(sorted(kinds.items())),
        "relations": dict(sorted(relations.items())),
        "relation_fraction": {k: round(v / n, 4) for k, v in sorted(relations.items())},
        "temporal_connective_fraction": round(1 - relations.get("plain", 0) / max(n, 1), 4),
        "videos_with_shared_noun_fraction": round(shared / max(len(by_video), 1), 4),
        "queries_overlapping_another_fraction": round(overlapping / max(n, 1), 4),
        "sentences_in_several_videos": len(repeated),
        "queries_with_sentence_in_another_video_fraction": round(
            sum(1 for r in records if r["query"] in repeated) / max(n, 1), 4
        ),
        "normalised_length_quantiles": [round(float(q), 3) for q in np.quantile(rel_len, [0.1, 0.5, 0.9])] if n else [],
        "normalised_start_quantiles": [round(float(q), 3) for q in np.quantile(rel_start, [0.1, 0.5, 0.9])] if n else [],
        "listed_order_vs_start_spearman": order_start_correlation(records),
        # the redundancy control: share of content words naming what the video shows
        "visible_word_share": round(visible_share([r["query"] for r in records]), 4),
    }


def _render_one(script: Any, path: str, cfg: SynthConfig) -> tuple[str, int]:
    frames = write_mp4(path, get_domain(cfg.domain).render(script), script.fps, crf=cfg.crf, preset=cfg.preset)
    if frames != script.num_frames:  # pragma: no cover - internal invariant
        raise RuntimeError(f"{script.video_id}: wrote {frames} frames, planned {script.num_frames}")
    return script.video_id, frames


def _same_request(old: dict[str, Any], plan: dict[str, Any]) -> bool:
    """Whether an older format's plan asked for the same dataset (same config, seed, videos)."""
    try:
        old_cfg = SynthConfig.from_dict(old.get("config", {})).to_dict()  # fills fields added since
    except (TypeError, ValueError):
        return False
    return (
        old_cfg == plan["config"]
        and old.get("seed") == plan["seed"]
        and old.get("video_version", 1) == plan["video_version"]
    )


def _check_plan(out: Path, plan: dict[str, Any], overwrite: bool) -> bool:
    """Refuse to mix datasets in ``out``; True when ``out`` holds the same request in an older format.

    Then its videos are kept (same config, seed and renderer: the same pixels) and
    the annotations and manifest are rewritten in the current format.
    """
    path = out / PLAN
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != plan and not overwrite:
            if old.get("format_version") != plan["format_version"] and _same_request(old, plan):
                log.info("%s holds this dataset in format %s; rewriting it in format %s (videos kept)",
                         out, old.get("format_version"), plan["format_version"])
                return True
            raise ValueError(
                f"{out} holds a synthetic dataset generated with a different config or seed "
                f"(see {path}); choose another --out, or pass --overwrite to regenerate it"
            )
    elif (out / "videos").is_dir() and any((out / "videos").glob("*.mp4")) and not overwrite:
        raise ValueError(
            f"{out / 'videos'} already holds mp4 files that this tool did not plan; "
            "choose another --out, or pass --overwrite to replace them"
        )
    return False


def generate_benchmark(
    out: str | os.PathLike[str],
    cfg: SynthConfig,
    seed: int = 0,
    *,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> SynthResult:
    """Write the synthetic benchmark under ``out`` (see the module docstring); skip finished videos.

    One video that fails to render or encode does not stop the others; the run
    then raises ``RuntimeError`` naming the failed ids, leaves the finished
    videos in place (a rerun only redoes the rest) and writes no manifest.
    """
    t0 = time.perf_counter()
    out = Path(out)
    videos_dir = out / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    domain = get_domain(cfg.domain)
    plan = {
        "format_version": FORMAT_VERSION, "seed": int(seed), "config": cfg.to_dict(),
        "video_version": domain.video_version,
    }
    if _check_plan(out, plan, overwrite):
        (out / MANIFEST).unlink(missing_ok=True)
    if overwrite:
        (out / MANIFEST).unlink(missing_ok=True)
        for p in videos_dir.glob("*.mp4"):
            p.unlink()
    atomic_write_json(out / PLAN, plan)
    for stale in videos_dir.glob(".*.mp4.*.tmp"):  # left by a killed run (never taken as complete)
        log.info("removing %s, a partial video from an interrupted run", stale)
        stale.unlink(missing_ok=True)

    planned = plan_videos(cfg, seed)
    splits = assign_splits(cfg, seed)
    todo = [s for s, _ in planned if not (videos_dir / f"{s.video_id}.mp4").is_file()]
    skipped = len(planned) - len(todo)
    if skipped:
        log.info("%d of %d videos already complete in %s; encoding the other %d", skipped, len(planned), videos_dir, len(todo))
    failures: dict[str, str] = {}
    bar = tqdm(total=len(todo), desc="synth videos", unit="video", disable=not progress or not todo)
    if workers <= 1 or len(todo) <= 1:
        for script in todo:
            try:
                _render_one(script, str(videos_dir / f"{script.video_id}.mp4"), cfg)
            except Exception as exc:  # one broken video never takes down the rest
                log.error("video %s failed: %s", script.video_id, exc)
                failures[script.video_id] = f"{type(exc).__name__}: {exc}"
            bar.update(1)
    else:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold torch threads
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures: dict[Future[tuple[str, int]], str] = {
                pool.submit(_render_one, s, str(videos_dir / f"{s.video_id}.mp4"), cfg): s.video_id for s in todo
            }
            for fut in as_completed(futures):
                try:
                    fut.result()
                except Exception as exc:
                    log.error("video %s failed: %s", futures[fut], exc)
                    failures[futures[fut]] = f"{type(exc).__name__}: {exc}"
                bar.update(1)
    bar.close()
    if failures:
        listing = "; ".join(f"{k}: {v}" for k, v in sorted(failures.items())[:10])
        raise RuntimeError(
            f"{len(failures)} of {len(planned)} synthetic videos failed ({listing}); the finished ones are kept "
            f"in {videos_dir}, rerun the same command to retry the rest"
        )

    ann_dir = out / "annotations"
    by_split = _write_annotations(ann_dir, planned, splits, cfg.domain)

    all_records = [r for s in SPLITS for r in by_split[s]]
    stats = dataset_stats(all_records)
    stats["splits"] = {s: {"videos": len({r["vid"] for r in by_split[s]}), "queries": len(by_split[s])} for s in SPLITS}
    files = {f"annotations/{s}.jsonl": file_digest(ann_dir / f"{s}.jsonl") for s in SPLITS}
    files.update({f"videos/{s.video_id}.mp4": file_digest(videos_dir / f"{s.video_id}.mp4") for s, _ in planned})
    manifest = {
        "format_version": FORMAT_VERSION,
        "generator": "mktn synth",
        "domain": cfg.domain,
        "code_version": code_version(),
        "seed": int(seed),
        "config": cfg.to_dict(),
        "annotation_format": "jsonl",
        "stats": stats,
        "files": files,
    }
    atomic_write_json(out / MANIFEST, manifest)
    elapsed = time.perf_counter() - t0
    log.info("synthetic benchmark in %s: %d videos, %d queries, %.0f s of video, %.1f s wall", out,
             stats["videos"], stats["queries"], stats["total_seconds"], elapsed)
    return SynthResult(
        out=out,
        num_videos=len(planned),
        num_queries=len(all_records),
        total_seconds=float(stats["total_seconds"]),
        encoded=len(todo),
        skipped=skipped,
        elapsed=elapsed,
        stats=stats,
    )


def _write_annotations(
    ann_dir: Path, planned: Sequence[tuple[Any, list[Query]]], splits: Sequence[str], domain: str
) -> dict[str, list[dict[str, Any]]]:
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for (script, queries), split in zip(planned, splits, strict=True):
        by_split[split].extend(annotation_records(script, queries, split, domain))
    empty = [s for s in SPLITS if not by_split[s]]
    if empty:
        log.warning("splits %s have no videos (%d videos in all); use --videos 3 or more", empty, len(planned))
    for split in SPLITS:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in by_split[split])
        atomic_write_text(ann_dir / f"{split}.jsonl", text)
    return by_split


def write_annotations_only(ann_dir: str | os.PathLike[str], cfg: SynthConfig, seed: int = 0) -> dict[str, Any]:
    """The annotation files of ``(cfg, seed)`` without rendering a frame (planning is cheap).

    For datasets that differ from a rendered one only in their sentences (another
    ``redundancy``: the videos are the same pixels), e.g. the levels of
    ``mktn sweep-alignment --redundancy``. Returns the dataset statistics.
    """
    by_split = _write_annotations(Path(ann_dir), plan_videos(cfg, seed), assign_splits(cfg, seed), cfg.domain)
    return dataset_stats([r for s in SPLITS for r in by_split[s]])


def is_complete(out: str | os.PathLike[str]) -> bool:
    """True when ``out`` holds a finished dataset of the current format (its manifest lists files that exist).

    A dataset of an older format is not complete: rerunning the generator rewrites it.
    """
    out = Path(out)
    path = out / MANIFEST
    if not path.is_file():
        return False
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        return False
    return all((out / rel).is_file() for rel in manifest.get("files", {}))
