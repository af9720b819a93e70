"""The prior-only baseline: spans chosen from the training moments alone, never looking at the video
or the query. It is the floor a grounding model must clear.

Candidates are the training moments in normalised time; each is scored by its mean
IoU with every training moment; temporal NMS keeps the best five. Every evaluation
query gets the same five spans, scaled to its video's duration.

The *order-aware* prior (``fit_order_prior``) is the control for datasets whose annotation
lists a video's queries in the order of their moments: it knows only a query's rank in its
video's annotation list and the video's query count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.metrics import evaluate_predictions
from model.spans import pairwise_temporal_iou, temporal_nms
from pipeline.datasets.records import QueryMoment


def normalised_spans(records: Sequence[QueryMoment]) -> np.ndarray:
    """``[N, 2]`` (start, end) as fractions of each record's duration, clipped to [0, 1]."""
    spans = np.array([[r.start / r.duration, r.end / r.duration] for r in records if r.duration > 0],
                     dtype=np.float64).reshape(-1, 2)
    return np.clip(spans, 0.0, 1.0)


def _central_spans(spans: np.ndarray, top_k: int, nms_iou: float,
                   max_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """The spans of ``spans`` with the highest mean IoU to all of them, after NMS, best first."""
    cand = spans[np.random.default_rng(0).permutation(len(spans))[:max_candidates]]
    scores = pairwise_temporal_iou(cand, spans).mean(axis=1)
    keep = temporal_nms(cand, scores, iou_threshold=nms_iou, top_k=top_k)
    return cand[keep], scores[keep]


def fit_prior(train: Sequence[QueryMoment], top_k: int = 5, nms_iou: float = 0.5,
              max_candidates: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """-> (normalised spans [k, 2], scores [k]) best first."""
    if not train:
        raise ValueError("the prior baseline needs training records; the train split is empty")
    return _central_spans(normalised_spans(train), top_k, nms_iou, max_candidates)


def prior_predictions(prior: tuple[np.ndarray, np.ndarray],
                      records: Sequence[QueryMoment]) -> list[dict[str, Any]]:
    spans, scores = prior
    return [{"query_id": r.query_id, "video_id": r.video_id,
             "spans": (spans * r.duration).tolist(), "scores": scores.tolist()} for r in records]


def prior_baseline(train: Sequence[QueryMoment], evaluate_on: Sequence[QueryMoment]) -> dict[str, float]:
    """Metrics of the prior-only baseline on ``evaluate_on``."""
    return evaluate_predictions(prior_predictions(fit_prior(train), evaluate_on), list(evaluate_on))


# ---------------------------------------------------------------- the order-aware prior


def annotation_ranks(records: Sequence[QueryMoment]) -> dict[str, tuple[int, int]]:
    """query id -> (rank of the query in its video's annotation list, that video's query count),
    both counted over ``records`` in the order given (the annotation files' order)."""
    by_video: dict[str, list[str]] = {}
    for r in records:
        by_video.setdefault(r.video_id, []).append(r.query_id)
    return {q: (k, len(qids)) for qids in by_video.values() for k, q in enumerate(qids)}


@dataclass(frozen=True)
class OrderPrior:
    """What a query's rank in its video's annotation list and the video's query count alone
    predict, fit on the train split: per (rank, count) cell, the mean normalised (start, end)
    of its training moments first, then the cell's most central moments (as ``fit_prior``);
    a cell with fewer than ``min_support`` training queries backs off to the rank alone, then
    to all training moments. No video, no query text, no timestamps of the evaluated queries.
    """

    cells: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]
    ranks: dict[int, tuple[np.ndarray, np.ndarray]]
    overall: tuple[np.ndarray, np.ndarray]

    def spans_for(self, rank: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(normalised spans [k, 2], scores [k]) best first for a query at ``rank`` of ``count``."""
        if (rank, count) in self.cells:
            return self.cells[(rank, count)]
        return self.ranks.get(rank, self.overall)


def _cell_prediction(spans: np.ndarray, top_k: int, nms_iou: float,
                     max_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    mean = spans.mean(axis=0, keepdims=True)
    central, scores = _central_spans(spans, top_k, nms_iou, max_candidates)
    cand = np.concatenate([mean, central])
    sc = np.concatenate([[2.0], scores])  # the mean span ranks first (mean IoUs are <= 1)
    keep = temporal_nms(cand, sc, iou_threshold=nms_iou, top_k=top_k)
    return cand[keep], sc[keep]


def fit_order_prior(train: Sequence[QueryMoment], *, top_k: int = 5, nms_iou: float = 0.5,
                    min_support: int = 1, max_candidates: int = 500) -> OrderPrior:
    """Fit ``OrderPrior`` on the training records (in annotation order)."""
    train = [r for r in train if r.duration > 0]
    if not train:
        raise ValueError("the order-aware prior needs training records; the train split is empty")
    ranks = annotation_ranks(train)
    spans = normalised_spans(train)
    by_cell: dict[tuple[int, int], list[int]] = {}
    by_rank: dict[int, list[int]] = {}
    for i, r in enumerate(train):
        k, n = ranks[r.query_id]
        by_cell.setdefault((k, n), []).append(i)
        by_rank.setdefault(k, []).append(i)
    fit = lambda idx: _cell_prediction(spans[idx], top_k, nms_iou, max_candidates)  # noqa: E731
    return OrderPrior(
        cells={c: fit(idx) for c, idx in by_cell.items() if len(idx) >= min_support},
        ranks={k: fit(idx) for k, idx in by_rank.items() if len(idx) >= min_support},
        overall=fit(list(range(len(train)))),
    )


def order_prior_predictions(prior: OrderPrior, records: Sequence[QueryMoment]) -> list[dict[str, Any]]:
    """Prediction records (seconds) for ``records``; ranks and counts come from ``records`` themselves
    (each evaluated video's annotation list)."""
    ranks = annotation_ranks(records)
    out = []
    for r in records:
        spans, scores = prior.spans_for(*ranks[r.query_id])
        out.append({"query_id": r.query_id, "video_id": r.video_id,
                    "spans": (spans * r.duration).tolist(), "scores": scores.tolist()})
    return out


def order_prior_baseline(train: Sequence[QueryMoment], evaluate_on: Sequence[QueryMoment]) -> dict[str, float]:
    """Metrics of the order-aware prior on ``evaluate_on``."""
    return evaluate_predictions(order_prior_predictions(fit_order_prior(train), evaluate_on),
                                list(evaluate_on))
