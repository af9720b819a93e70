"""Span geometry: hand-computed IoUs, numpy/torch agreement, clip-index round trips, NMS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.spans import (
    clip_indices_to_span,
    generalized_temporal_iou,
    normalized_to_seconds,
    pairwise_temporal_iou,
    seconds_to_normalized,
    span_to_clip_indices,
    temporal_iou,
    temporal_nms,
)


def test_temporal_iou_hand_cases() -> None:
    a = np.array([[0.0, 10.0], [2.0, 4.0], [0.0, 1.0], [3.0, 7.0], [1.0, 1.0]])
    b = np.array([[0.0, 10.0], [3.0, 6.0], [1.0, 2.0], [0.0, 10.0], [0.0, 2.0]])
    # identical; 1/4 overlap over 4; touching ends; contained 4/10; point inside a span
    np.testing.assert_allclose(temporal_iou(a, b), [1.0, 0.25, 0.0, 0.4, 0.0])


def test_pairwise_matches_one_to_one_and_torch() -> None:
    rng = np.random.default_rng(0)
    s = rng.uniform(0, 20, size=(7, 1))
    a = np.concatenate([s, s + rng.uniform(0, 10, size=(7, 1))], axis=1)
    s = rng.uniform(0, 20, size=(5, 1))
    b = np.concatenate([s, s + rng.uniform(0, 10, size=(5, 1))], axis=1)
    m = pairwise_temporal_iou(a, b)
    assert m.shape == (7, 5)
    for i in range(7):
        np.testing.assert_allclose(m[i], temporal_iou(np.repeat(a[i : i + 1], 5, 0), b))
    mt = pairwise_temporal_iou(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(mt, torch.Tensor)
    np.testing.assert_allclose(mt.numpy(), m)
    assert ((m >= 0) & (m <= 1)).all()


def test_torch_iou_keeps_gradient() -> None:
    pred = torch.tensor([[1.0, 3.0]], requires_grad=True)
    loss = (1 - generalized_temporal_iou(pred, torch.tensor([[4.0, 6.0]]))).sum()
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0  # disjoint spans still get a gradient


def test_shape_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        temporal_iou(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="pairwise_temporal_iou"):
        temporal_iou(np.zeros((3, 2)), np.zeros((2, 2)))


def test_normalisation_round_trip_and_bad_duration() -> None:
    spans = np.array([[1.5, 4.0], [0.0, 12.0]])
    norm = seconds_to_normalized(spans, 12.0)
    np.testing.assert_allclose(norm, [[0.125, 1 / 3], [0.0, 1.0]])
    np.testing.assert_allclose(normalized_to_seconds(norm, 12.0), spans)
    with pytest.raises(ValueError, match="duration"):
        seconds_to_normalized(spans, 0.0)


@pytest.mark.parametrize(
    "clip_times",
    [
        [[i * 0.5, i * 0.5 + 0.5] for i in range(16)],  # back-to-back 0.5-s clips
        [[i * 0.5, i * 0.5 + 1.0] for i in range(15)],  # 1-s clips, stride 0.5 (overlapping)
    ],
)
def test_clip_index_round_trip(clip_times: list[list[float]]) -> None:
    rng = np.random.default_rng(1)
    t_end = clip_times[-1][1]
    for _ in range(200):
        s, e = sorted(rng.uniform(0, t_end, size=2))
        i_s, i_e, o_s, o_e = span_to_clip_indices((s, e), clip_times)
        assert 0 <= i_s <= i_e < len(clip_times)
        assert 0.0 <= o_s <= 1.0 and 0.0 <= o_e <= 1.0
        rs, re_ = clip_indices_to_span(i_s, i_e, clip_times, o_s, o_e)
        assert rs == pytest.approx(s) and re_ == pytest.approx(e)


def test_clip_indices_clamp_outside_and_reject_bad_spans() -> None:
    ct = [[0.0, 1.0], [1.0, 2.0]]
    assert span_to_clip_indices((-1.0, 5.0), ct) == (0, 1, 0.0, 1.0)
    with pytest.raises(ValueError, match="end >= start"):
        span_to_clip_indices((2.0, 1.0), ct)
    with pytest.raises(ValueError, match="clip_times"):
        span_to_clip_indices((0.0, 1.0), [[1.0, 2.0], [0.0, 1.0]])


def test_nms_hand_case() -> None:
    spans = [[0, 10], [0, 9], [1, 11], [12, 20], [13, 20], [30, 31]]
    scores = [0.9, 0.85, 0.8, 0.7, 0.65, 0.1]
    # [0,9] vs [0,10]: IoU 0.9 -> dropped; [1,11] vs [0,10]: 9/11 -> dropped; [13,20] vs [12,20]: 7/8
    assert temporal_nms(spans, scores, iou_threshold=0.5).tolist() == [0, 3, 5]
    assert temporal_nms(spans, scores, iou_threshold=0.95).tolist() == [0, 1, 2, 3, 4, 5]
    assert temporal_nms(spans, scores, iou_threshold=0.5, top_k=2).tolist() == [0, 3]
    assert temporal_nms(np.zeros((0, 2)), [], iou_threshold=0.5).tolist() == []
