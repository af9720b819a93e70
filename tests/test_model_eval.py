"""Decoding, the prior-only baseline and the measured alignment score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.alignment import alignment_scores
from model.evaluate import decode_query
from model.prior import fit_prior, prior_baseline
from pipeline.datasets.records import QueryMoment


def test_decode_query_ranks_the_peaked_span_first():
    clip_times = np.stack([np.arange(10.0), np.arange(10.0) + 1], axis=1)
    start, end = torch.full((12,), -5.0), torch.full((12,), -5.0)
    start[3], end[6] = 5.0, 5.0
    start[10] = end[10] = 50.0  # padding beyond the 10 valid clips is ignored
    off = torch.zeros(12, 2)
    off[3, 0], off[6, 1] = 0.5, 0.25
    spans, scores = decode_query(start, end, off, clip_times, top_k=5, nms_iou=0.5)
    assert spans[0] == pytest.approx([3.5, 6.25])
    assert scores == sorted(scores, reverse=True) and 1 <= len(spans) <= 5
    assert all(0 <= s <= e <= 10 for s, e in spans)
    spans, _ = decode_query(start, end, off, clip_times, max_span_clips=2)  # 3 -> 6 is 4 clips long
    assert spans[0][1] - spans[0][0] <= 2.0 + 1e-6
    nan = decode_query(torch.full((12,), float("nan")), end, off * float("nan"), clip_times)
    assert len(nan[0]) >= 1 and np.isfinite(np.asarray(nan[0])).all()


def _records(n: int, split: str, rng: np.random.Generator) -> list[QueryMoment]:
    out = []
    for i in range(n):
        d = float(rng.uniform(10, 30))
        s = float(rng.uniform(0, 0.3)) * d  # moments cluster early in the video
        out.append(QueryMoment(f"{split}{i}", f"v{i}", "q", s, s + 0.3 * d, d, split))
    return out


def test_prior_fits_where_moments_are():
    rng = np.random.default_rng(0)
    train, test = _records(200, "train", rng), _records(50, "test", rng)
    spans, scores = fit_prior(train)
    assert 1 <= len(spans) <= 5 and spans.shape[1] == 2 and bool((spans >= 0).all() and (spans <= 1).all())
    assert scores[0] == max(scores) and spans[0][0] < 0.35
    m = prior_baseline(train, test)
    assert m["num_queries"] == 50 and m["R5@0.3"] > 80.0
    with pytest.raises(ValueError, match="train split is empty"):
        fit_prior([])


def test_alignment_scores_identical_vs_random():
    rng = np.random.default_rng(0)
    recs = [QueryMoment(f"q{i}", f"v{i // 2}", "s", 0, 1, 2, "test") for i in range(40)]
    v = {f"v{j}": rng.normal(size=16) for j in range(20)}
    same = {r.query_id: v[r.video_id] + 0.01 * rng.normal(size=16) for r in recs}
    aligned = alignment_scores(v, same, recs, k=3)
    assert aligned["mutual_knn"] > 0.9 and aligned["retrieval_r1"] == 1.0
    other = {r.query_id: rng.normal(size=16) for r in recs}
    rand = alignment_scores(v, other, recs, k=3)
    assert rand["mutual_knn"] < 0.5 and rand["chance_knn"] == pytest.approx(3 / 19)
    with pytest.raises(ValueError, match="at least 3 videos"):
        alignment_scores({"v0": v["v0"]}, same, recs[:2])
