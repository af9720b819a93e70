"""Controls: how much of a grounding score needs the video, and how much the annotation order.

Every evaluation reports, beside the model's metrics, four controls (``CONTROL_KEYS``), each a
metrics dict of ``model.metrics.evaluate_predictions`` over the same queries:

- ``prior``: the prior-only baseline (``model.prior.fit_prior``: no video, no query);
- ``order_prior``: the order-aware prior (``model.prior.fit_order_prior``): what a query's rank
  in its video's annotation list and the video's query count alone predict, fit on train;
- ``video_swapped``: the model with every video's features replaced by those of another video of
  the same evaluation set (a fixed seeded derangement, ``derangement``), *keeping the query's own
  time axis*: the donor's clips are resampled onto this video's clip grid (nearest clip by
  relative position, ``resample_clips``), so clip windows, durations, masks and targets are the
  video's own; only what the clips show changes;
- ``order_shuffled``: the model with each video's queries in a seeded shuffled annotation order
  (``shuffle_query_order``): the order CSM reads (``model.query_order = "annotation"``) and the
  grouping that follows from it. A model with ``query_order = "none"`` scores exactly the same.

``full - video_swapped`` is what needs the video, ``full - order_shuffled`` what needs the order
(``controls_summary`` says both in one sentence). Each model control is one extra evaluation pass.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from model.data import PreparedData
from model.evaluate import evaluate_model
from model.prior import order_prior_baseline, prior_baseline
from pipeline.datasets.records import QueryMoment

CONTROL_KEYS = ("prior", "order_prior", "video_swapped", "order_shuffled")
CONTROL_LABELS = {
    "prior": "prior only (no video, no query)",
    "order_prior": "order-aware prior (rank in the annotation + query count)",
    "video_swapped": "MKTN, every video's features swapped for another's",
    "order_shuffled": "MKTN, each video's queries in shuffled order",
}


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A seeded permutation of ``range(n)`` with no fixed point (Sattolo's algorithm: one n-cycle).

    >>> p = derangement(5, seed=1)
    >>> sorted(p.tolist()) == list(range(5)) and all(p[i] != i for i in range(5))
    True
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}")
    rng = np.random.default_rng(seed)
    perm = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i))  # j < i: Sattolo, never a fixed point
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def resample_clips(x: torch.Tensor, n: int) -> torch.Tensor:
    """Clips ``[T, ...]`` -> ``[n, ...]``: clip ``k`` takes the clip at the same relative position
    (``floor((k + 0.5) T / n)``; repeats when ``n > T``, skips when ``n < T``)."""
    t = x.shape[0]
    idx = torch.clamp(((torch.arange(n, dtype=torch.float64) + 0.5) * t / n).floor().long(), max=t - 1)
    return x[idx]


def swap_videos(prepared: PreparedData, video_ids: Sequence[str], seed: int = 0
                ) -> tuple[PreparedData, dict[str, str]]:
    """``prepared`` with the clip and patch features of each of ``video_ids`` replaced by those of
    another of them (a seeded derangement), resampled onto the video's own valid clips.

    Returns (the swapped data, video id -> donor video id). Queries, clip windows, durations and
    masks are untouched; videos outside ``video_ids`` too.
    """
    ids = sorted(set(video_ids) & set(prepared.videos))
    perm = derangement(len(ids), seed)
    donors = {ids[i]: ids[int(perm[i])] for i in range(len(ids))}
    videos = dict(prepared.videos)
    for vid, donor in donors.items():
        pv, dv = prepared.videos[vid], prepared.videos[donor]
        frames = torch.zeros_like(pv.frames)
        patches = torch.zeros_like(pv.patches)
        frames[: pv.valid] = resample_clips(dv.frames[: dv.valid], pv.valid)
        patches[: pv.valid] = resample_clips(dv.patches[: dv.valid], pv.valid)
        videos[vid] = replace(pv, frames=frames, patches=patches)
    return PreparedData(videos, prepared.queries, prepared.num_clips, dict(prepared.skipped)), donors


def shuffle_query_order(prepared: PreparedData, records: Sequence[QueryMoment], seed: int = 0) -> PreparedData:
    """``prepared`` with each video's queries (those of ``records``) given a seeded shuffled
    annotation order (``PreparedQuery.order``); features and targets untouched."""
    by_video: dict[str, list[str]] = {}
    for r in records:
        if r.query_id in prepared.queries:
            by_video.setdefault(r.video_id, []).append(r.query_id)
    queries = dict(prepared.queries)
    for vid in sorted(by_video):
        qids = sorted(by_video[vid], key=lambda q: prepared.queries[q].order)
        orders = [prepared.queries[q].order for q in qids]
        rng = np.random.default_rng([int(seed), zlib.crc32(vid.encode("utf-8"))])
        for q, k in zip(qids, rng.permutation(len(qids)).tolist(), strict=True):
            queries[q] = replace(prepared.queries[q], order=orders[k])
    return PreparedData(prepared.videos, queries, prepared.num_clips, dict(prepared.skipped))


def prior_controls(train: Sequence[QueryMoment], records: Sequence[QueryMoment]) -> dict[str, dict[str, float]]:
    """The two priors (fit on ``train``) on ``records``; empty without training records."""
    if not train:
        return {}
    return {"prior": prior_baseline(train, records), "order_prior": order_prior_baseline(train, records)}


def compute_controls(model: torch.nn.Module, prepared: PreparedData, records: Sequence[QueryMoment],
                     train: Sequence[QueryMoment], *, seed: int = 0, **eval_kwargs: Any
                     ) -> dict[str, dict[str, float]]:
    """Every control of ``CONTROL_KEYS`` on ``records`` (``eval_kwargs`` go to ``evaluate_model``:
    the run's ``cfg``, ``device``, ``batch_videos``, ``multi_pair``). A control that cannot
    be computed is left out: the priors without training records, the swap with fewer than two
    videos."""
    out = prior_controls(train, records)
    videos = sorted({r.video_id for r in records if r.query_id in prepared.queries})
    if len(videos) >= 2:
        swapped, _ = swap_videos(prepared, videos, seed)
        out["video_swapped"] = evaluate_model(model, swapped, records, **eval_kwargs).metrics
    shuffled = shuffle_query_order(prepared, records, seed)
    out["order_shuffled"] = evaluate_model(model, shuffled, records, **eval_kwargs).metrics
    return {k: out[k] for k in CONTROL_KEYS if k in out}


def controls_summary(metrics: Mapping[str, float], controls: Mapping[str, Mapping[str, float]],
                     key: str = "R1@0.5") -> str:
    """One sentence: how much of ``metrics[key]`` needs the video (full - video_swapped) and how
    much the order (full - order_shuffled), with the priors for scale.

    >>> print(controls_summary({"R1@0.5": 43.45}, {"video_swapped": {"R1@0.5": 24.83},
    ...       "order_shuffled": {"R1@0.5": 15.86}, "prior": {"R1@0.5": 6.9}}))  # doctest: +NORMALIZE_WHITESPACE
    Of MKTN's R1@0.5 of 43.45, 18.62 points need the video (24.83 with every video's features
    swapped for another's) and 27.59 need the annotation order (15.86 with each video's queries
    shuffled); the prior alone scores 6.90.
    """
    full = float(metrics[key])
    parts = []
    if "video_swapped" in controls:
        sw = float(controls["video_swapped"][key])
        parts.append(f"{full - sw:.2f} points need the video ({sw:.2f} with every video's features "
                     "swapped for another's)")
    if "order_shuffled" in controls:
        sh = float(controls["order_shuffled"][key])
        parts.append(f"{full - sh:.2f} need the annotation order ({sh:.2f} with each video's queries "
                     "shuffled)")
    text = f"Of MKTN's {key} of {full:.2f}, " + (" and ".join(parts) if parts else "no model control ran")
    priors = []
    if "prior" in controls:
        priors.append(f"the prior alone scores {float(controls['prior'][key]):.2f}")
    if "order_prior" in controls:
        priors.append(f"the order-aware prior {float(controls['order_prior'][key]):.2f}")
    return text + ("; " + ", ".join(priors) if priors else "") + "."
