"""bench/train_throughput.py: the whole-step ceiling's arithmetic, checked by hand."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():  # a module
    spec = importlib.util.spec_from_file_location("mktn_bench_train_throughput",
                                                  ROOT / "bench" / "train_throughput.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tp = _load()


def test_fit_and_ceiling_by_hand() -> None:
    # 8 videos, 40 queries: 10 s a step; the same 8 videos with one query each: 4 s.
    # q = (10 - 4) / (40 - 8) = 0.1875 s per query; v = 4 / 8 - 0.1875 = 0.3125 s per video.
    v, q = tp.fit_step_costs(10.0, 40, 4.0, 8)
    assert q == pytest.approx(0.1875)
    assert v == pytest.approx(0.3125)
    # qpv 5: single-pair 0.5 s per query, multi-pair 0.3125 / 5 + 0.1875 = 0.25 s: 2x
    assert tp.step_ceiling(5.0, v, q) == pytest.approx(2.0)
    # equal to (T_one / B) / (T_all / Q) = 0.5 / 0.25 when qpv = Q / B
    assert tp.step_ceiling(5.0, v, q) == pytest.approx((4.0 / 8) / (10.0 / 40))


def test_ceiling_limits() -> None:
    # a free query (q = 0): every repeat of the video saved, the ceiling is qpv
    assert tp.step_ceiling(3.7, 0.2, 0.0) == pytest.approx(3.7)
    # a free video (v = 0): nothing to share, ceiling 1
    assert tp.step_ceiling(3.7, 0.0, 0.2) == pytest.approx(1.0)
    # 2.19 queries per video, v = 0.3, q = 0.1: 2.19 * 0.4 / (0.3 + 0.219) = 0.876 / 0.519
    assert tp.step_ceiling(2.19, 0.3, 0.1) == pytest.approx(0.876 / 0.519)
    assert tp.step_ceiling(2.19, 0.3, 0.1) == pytest.approx(1.6879, abs=1e-4)


def test_no_spread_and_noise() -> None:
    assert tp.fit_step_costs(3.0, 8, 2.9, 8) is None  # Q == B: nothing to fit, no division
    v, q = tp.fit_step_costs(3.0, 16, 3.2, 8)  # the one-query step slower: q < 0 (noise)
    assert q == pytest.approx(-0.025)
    assert tp.step_ceiling(2.0, v, q) is None
    assert tp.step_ceiling(2.0, 0.0, 0.0) is None
    with pytest.raises(ValueError, match="queries >= videos"):
        tp.fit_step_costs(3.0, 4, 2.0, 8)


def test_one_query_sampler_keeps_batches() -> None:
    from model.data import Group, GroupSampler

    groups = [Group(f"v{i}", tuple(f"v{i}#{k}" for k in range(1 + i % 3))) for i in range(10)]
    sampler = GroupSampler(groups, 4, seed=3, shuffle_queries=True)
    ones = tp.one_query_sampler(sampler)
    for full, one in zip(sampler.batches(0), ones.batches(0), strict=True):
        assert [g.video_id for g in full] == [g.video_id for g in one]
        assert [g.query_ids[:1] for g in full] == [g.query_ids for g in one]
