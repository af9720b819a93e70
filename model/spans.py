"""Span geometry: temporal IoU, seconds <-> normalised spans, span <-> clip indices, temporal NMS.

A *span* is ``(start, end)`` with ``start <= end``; a batch of spans is an array
of shape ``[N, 2]``. The IoU functions accept numpy arrays or torch tensors and
return the same kind (torch keeps gradients and the device, so the losses can
call them); everything else works on numpy arrays and Python floats.

>>> temporal_iou(np.array([[0.0, 4.0]]), np.array([[2.0, 6.0]]))
array([0.33333333])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar, overload

import numpy as np
import torch

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)

__all__ = [
    "clip_edges",
    "clip_indices_to_span",
    "generalized_temporal_iou",
    "normalized_to_seconds",
    "pairwise_temporal_iou",
    "seconds_to_normalized",
    "span_to_clip_indices",
    "temporal_iou",
    "temporal_nms",
]


def _check_spans(spans: np.ndarray | torch.Tensor, name: str) -> None:
    if spans.ndim != 2 or spans.shape[-1] != 2:
        raise ValueError(f"{name} must have shape [N, 2] (start, end), got {tuple(spans.shape)}")


def _as_2d(spans: ArrayLike) -> ArrayLike:
    if isinstance(spans, torch.Tensor):
        return spans.reshape(1, 2) if spans.ndim == 1 else spans
    arr = np.asarray(spans, dtype=np.float64)
    return arr.reshape(1, 2) if arr.ndim == 1 else arr


@overload
def temporal_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray: ...
@overload
def temporal_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor: ...
def temporal_iou(a, b):  # type: ignore[no-untyped-def]
    """One-to-one temporal IoU of ``a[i]`` and ``b[i]``: shape ``[N, 2]`` x ``[N, 2]`` -> ``[N]``.

    Zero-length spans have IoU 0 with everything except an identical point (IoU 1).

    >>> temporal_iou(np.array([[0.0, 10.0], [0.0, 1.0], [5.0, 5.0]]),
    ...              np.array([[5.0, 10.0], [2.0, 3.0], [5.0, 5.0]]))
    array([0.5, 0. , 1. ])
    >>> temporal_iou(torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, 5.0]]))
    tensor([0.2500])
    """
    a, b = _as_2d(a), _as_2d(b)
    _check_spans(a, "a")
    _check_spans(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"temporal_iou is one-to-one: shapes {tuple(a.shape)} and {tuple(b.shape)} differ; "
                         "use pairwise_temporal_iou for all pairs")
    if isinstance(a, torch.Tensor):
        inter = (torch.minimum(a[:, 1], b[:, 1]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
        union = torch.maximum(a[:, 1], b[:, 1]) - torch.minimum(a[:, 0], b[:, 0])
        same = (a == b).all(dim=1)
        iou = inter / union.clamp(min=1e-12)
        return torch.where(same & (union <= 0), torch.ones_like(iou), iou)
    inter = np.clip(np.minimum(a[:, 1], b[:, 1]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    union = np.maximum(a[:, 1], b[:, 1]) - np.minimum(a[:, 0], b[:, 0])
    iou = inter / np.maximum(union, 1e-12)
    return np.where((a == b).all(axis=1) & (union <= 0), 1.0, iou)


@overload
def pairwise_temporal_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray: ...
@overload
def pairwise_temporal_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor: ...
def pairwise_temporal_iou(a, b):  # type: ignore[no-untyped-def]
    """IoU of every span of ``a`` with every span of ``b``: ``[N, 2]`` x ``[M, 2]`` -> ``[N, M]``.

    >>> pairwise_temporal_iou(np.array([[0.0, 2.0], [1.0, 3.0]]), np.array([[0.0, 2.0], [2.0, 4.0], [9.0, 9.5]]))
    array([[1.        , 0.        , 0.        ],
           [0.33333333, 0.33333333, 0.        ]])
    >>> pairwise_temporal_iou(torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 2.0], [0.0, 4.0]]))
    tensor([[0.5000, 0.5000]])
    """
    a, b = _as_2d(a), _as_2d(b)
    _check_spans(a, "a")
    _check_spans(b, "b")
    if isinstance(a, torch.Tensor):
        lo = torch.maximum(a[:, None, 0], b[None, :, 0])  # (N, M)
        hi = torch.minimum(a[:, None, 1], b[None, :, 1])
        inter = (hi - lo).clamp(min=0)
        union = torch.maximum(a[:, None, 1], b[None, :, 1]) - torch.minimum(a[:, None, 0], b[None, :, 0])
        same = (a[:, None, :] == b[None, :, :]).all(dim=-1)
        iou = inter / union.clamp(min=1e-12)
        return torch.where(same & (union <= 0), torch.ones_like(iou), iou)
    lo = np.maximum(a[:, None, 0], b[None, :, 0])  # (N, M)
    hi = np.minimum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(hi - lo, 0, None)
    union = np.maximum(a[:, None, 1], b[None, :, 1]) - np.minimum(a[:, None, 0], b[None, :, 0])
    iou = inter / np.maximum(union, 1e-12)
    same = (a[:, None, :] == b[None, :, :]).all(axis=-1)
    return np.where(same & (union <= 0), 1.0, iou)


@overload
def generalized_temporal_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray: ...
@overload
def generalized_temporal_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor: ...
def generalized_temporal_iou(a, b):  # type: ignore[no-untyped-def]
    """One-to-one generalised IoU (IoU minus the empty fraction of the enclosing span), in [-1, 1].

    Unlike IoU it still has a gradient when the spans do not overlap, so a
    regression loss ``1 - giou`` pulls disjoint predictions towards the target.

    >>> generalized_temporal_iou(np.array([[0.0, 1.0], [0.0, 2.0]]), np.array([[3.0, 4.0], [1.0, 3.0]]))
    array([-0.5       ,  0.33333333])
    """
    a, b = _as_2d(a), _as_2d(b)
    iou = temporal_iou(a, b)
    if isinstance(a, torch.Tensor):
        inter = (torch.minimum(a[:, 1], b[:, 1]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
        union = (a[:, 1] - a[:, 0]) + (b[:, 1] - b[:, 0]) - inter
        hull = (torch.maximum(a[:, 1], b[:, 1]) - torch.minimum(a[:, 0], b[:, 0])).clamp(min=1e-12)
        return iou - (hull - union) / hull
    inter = np.clip(np.minimum(a[:, 1], b[:, 1]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    union = (a[:, 1] - a[:, 0]) + (b[:, 1] - b[:, 0]) - inter
    hull = np.maximum(np.maximum(a[:, 1], b[:, 1]) - np.minimum(a[:, 0], b[:, 0]), 1e-12)
    return iou - (hull - union) / hull


def seconds_to_normalized(spans: np.ndarray | Sequence[Sequence[float]], duration: float) -> np.ndarray:
    """Seconds -> fractions of the video in [0, 1] (clipped). ``duration`` must be > 0.

    >>> seconds_to_normalized([[2.0, 5.0], [9.0, 12.0]], 10.0)
    array([[0.2, 0.5],
           [0.9, 1. ]])
    """
    if not duration > 0:
        raise ValueError(f"duration must be > 0 seconds, got {duration!r}")
    arr = _as_2d(np.asarray(spans, dtype=np.float64))
    _check_spans(arr, "spans")
    return np.clip(arr / float(duration), 0.0, 1.0)


def normalized_to_seconds(spans: np.ndarray | Sequence[Sequence[float]], duration: float) -> np.ndarray:
    """Fractions in [0, 1] -> seconds; inputs are clipped to [0, 1] first and ends kept >= starts.

    >>> normalized_to_seconds([[0.25, 0.5], [0.8, 0.6]], 8.0)
    array([[2. , 4. ],
           [6.4, 6.4]])
    """
    if not duration > 0:
        raise ValueError(f"duration must be > 0 seconds, got {duration!r}")
    arr = np.clip(_as_2d(np.asarray(spans, dtype=np.float64)), 0.0, 1.0)
    _check_spans(arr, "spans")
    arr = np.stack([arr[:, 0], np.maximum(arr[:, 0], arr[:, 1])], axis=1)
    return arr * float(duration)


def _clip_times(clip_times: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    ct = np.asarray(clip_times, dtype=np.float64)
    if ct.ndim != 2 or ct.shape[1] != 2 or ct.shape[0] == 0:
        raise ValueError(f"clip_times must have shape [T, 2] with T >= 1 (clip start, end in s), got {ct.shape}")
    if np.any(np.diff(ct[:, 0]) < 0) or np.any(np.diff(ct[:, 1]) < 0):
        raise ValueError("clip_times must be sorted by time (non-decreasing starts and ends)")
    return ct


def _edges(ct: np.ndarray) -> np.ndarray:
    """Cell edges ``[T+1]`` taken from the clip windows themselves.

    The edge between clips ``i`` and ``i + 1`` is ``(end_i + start_{i+1}) / 2``: for back-to-back
    windows (stride == length, and the unequal windows that pooling contiguous clips gives) it is
    exactly their shared boundary; for overlapping windows it is the middle of the overlap, for
    windows with a gap the middle of the gap. (For equal windows this is the midpoint between the
    clip centres; for unequal ones the centres' midpoint would shift the edge by up to a quarter of
    a clip, so that a time inside a window could map to its neighbour.)
    """
    inner = (ct[:-1, 1] + ct[1:, 0]) / 2.0
    return np.concatenate([[ct[0, 0]], inner, [max(ct[-1, 1], inner[-1] if inner.size else ct[-1, 1])]])


def clip_edges(clip_times: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """The cell edges ``[T+1]`` (seconds) of the clip windows ``[T, 2]``: clip ``i`` owns
    ``[edges[i], edges[i+1]]``, and position ``i + f`` (``f`` in [0, 1]) is the time
    ``edges[i] + f (edges[i+1] - edges[i])``. Vectorised decoding maps positions with
    ``np.interp(positions, np.arange(T + 1), clip_edges(ct))``.

    >>> clip_edges([[0.0, 2.0], [2.0, 5.0], [5.0, 6.0]]).tolist()  # unequal back-to-back windows
    [0.0, 2.0, 5.0, 6.0]
    """
    return _edges(_clip_times(clip_times))


def span_to_clip_indices(
    span: Sequence[float], clip_times: np.ndarray | Sequence[Sequence[float]]
) -> tuple[int, int, float, float]:
    """Map a span in seconds to ``(start_clip, end_clip, start_offset, end_offset)``.

    Each clip owns a cell of the time axis (see ``_edges``; for back-to-back
    clips, equal or not, the cell is the clip window itself). A time maps to a fractional position
    ``p`` in ``[0, T]`` by linear interpolation over the cell edges (times
    outside the clips clamp). ``start_clip``/``end_clip`` are the clips whose
    cells contain the start/end (the span predictor's classification targets);
    the offsets are the positions inside those cells, ``p_s - start_clip`` and
    ``p_e - end_clip``, in ``[0, 1]`` (the float predictor's regression targets).
    ``end_clip >= start_clip`` always; ``clip_indices_to_span`` inverts it exactly
    for spans inside the clips.

    >>> ct = [[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [3.0, 4.0]]  # four back-to-back 1-s clips
    >>> span_to_clip_indices((1.25, 3.0), ct)
    (1, 2, 0.25, 1.0)
    >>> span_to_clip_indices((0.0, 4.0), ct)
    (0, 3, 0.0, 1.0)
    >>> span_to_clip_indices((2.5, 2.75), ct)  # shorter than a clip: one clip
    (2, 2, 0.5, 0.75)
    """
    ct = _clip_times(clip_times)
    start, end = float(span[0]), float(span[1])
    if not (np.isfinite(start) and np.isfinite(end)) or end < start:
        raise ValueError(f"span must be finite with end >= start, got {tuple(span)!r}")
    edges = _edges(ct)
    positions = np.arange(edges.shape[0], dtype=np.float64)
    t_count = ct.shape[0]
    p_s = float(np.interp(start, edges, positions))
    p_e = float(np.interp(end, edges, positions))
    i_s = min(int(np.floor(p_s)), t_count - 1)
    i_e = min(max(int(np.ceil(p_e)) - 1, i_s), t_count - 1)
    return i_s, i_e, p_s - i_s, p_e - i_e


def clip_indices_to_span(
    start_clip: float,
    end_clip: float,
    clip_times: np.ndarray | Sequence[Sequence[float]],
    start_offset: float = 0.0,
    end_offset: float = 1.0,
) -> tuple[float, float]:
    """Inverse of ``span_to_clip_indices``: clip index + offset in the cell -> ``(start, end)`` seconds.

    With the default offsets the span covers the whole cells of both clips.

    >>> ct = [[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [3.0, 4.0]]
    >>> clip_indices_to_span(1, 2, ct, 0.25, 1.0)
    (1.25, 3.0)
    >>> clip_indices_to_span(3, 3, ct)
    (3.0, 4.0)
    >>> clip_indices_to_span(2, 0, ct)  # end before start: collapsed onto the start
    (2.0, 2.0)
    """
    ct = _clip_times(clip_times)
    edges = _edges(ct)
    positions = np.arange(edges.shape[0], dtype=np.float64)
    s = float(np.interp(float(start_clip) + float(start_offset), positions, edges))
    e = float(np.interp(float(end_clip) + float(end_offset), positions, edges))
    return s, max(s, e)


def temporal_nms(
    spans: np.ndarray | Sequence[Sequence[float]],
    scores: np.ndarray | Sequence[float],
    iou_threshold: float = 0.5,
    top_k: int | None = None,
) -> np.ndarray:
    """Greedy temporal non-maximum suppression; returns kept indices, best score first.

    A span is dropped when its IoU with an already kept (higher-scored) span is
    ``>= iou_threshold``. Ties in score keep the input order.

    >>> temporal_nms([[0, 10], [1, 10], [20, 30], [0, 9]], [0.9, 0.8, 0.7, 0.95], iou_threshold=0.5)
    array([3, 2])
    >>> temporal_nms([[0, 10], [1, 10], [20, 30]], [0.9, 0.8, 0.7], iou_threshold=0.95, top_k=2)
    array([0, 1])
    """
    sp = _as_2d(np.asarray(spans, dtype=np.float64)) if len(spans) else np.zeros((0, 2))
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    _check_spans(sp, "spans")
    if sc.shape[0] != sp.shape[0]:
        raise ValueError(f"got {sp.shape[0]} spans but {sc.shape[0]} scores")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    order = np.argsort(-sc, kind="stable")
    limit = sp.shape[0] if top_k is None else max(int(top_k), 0)
    keep: list[int] = []
    for i in order:
        if len(keep) >= limit:
            break
        if keep and pairwise_temporal_iou(sp[i : i + 1], sp[keep]).max() >= iou_threshold:
            continue
        keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)
