"""The prior-only baseline: spans chosen from the training moments alone, never looking at the video
or the query. It is the floor a grounding model must clear.

Candidates are the training moments in normalised time; each is scored by its mean
IoU with every training moment; temporal NMS keeps the best five. Every evaluation
query gets the same five spans, scaled to its video's duration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from model.metrics import evaluate_predictions
from model.spans import pairwise_temporal_iou, temporal_nms
from pipeline.datasets.records import QueryMoment


def fit_prior(train: Sequence[QueryMoment], top_k: int = 5, nms_iou: float = 0.5,
              max_candidates: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """-> (normalised spans [k, 2], scores [k]) best first."""
    if not train:
        raise ValueError("the prior baseline needs training records; the train split is empty")
    spans = np.array([[r.start / r.duration, r.end / r.duration] for r in train if r.duration > 0])
    spans = np.clip(spans, 0.0, 1.0)
    cand = spans[np.random.default_rng(0).permutation(len(spans))[:max_candidates]]
    scores = pairwise_temporal_iou(cand, spans).mean(axis=1)
    keep = temporal_nms(cand, scores, iou_threshold=nms_iou, top_k=top_k)
    return cand[keep], scores[keep]


def prior_predictions(prior: tuple[np.ndarray, np.ndarray],
                      records: Sequence[QueryMoment]) -> list[dict[str, Any]]:
    spans, scores = prior
    return [{"query_id": r.query_id, "video_id": r.video_id,
             "spans": (spans * r.duration).tolist(), "scores": scores.tolist()} for r in records]


def prior_baseline(train: Sequence[QueryMoment], evaluate_on: Sequence[QueryMoment]) -> dict[str, float]:
    """Metrics of the prior-only baseline on ``evaluate_on``."""
    return evaluate_predictions(prior_predictions(fit_prior(train), evaluate_on), list(evaluate_on))
