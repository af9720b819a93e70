"""Evaluation: prediction records -> R@{1,5} at IoU {0.3, 0.5, 0.7} and mIoU. Pure functions.

A prediction record is one query's ranked candidate spans in seconds::

    {"query_id": "q1", "video_id": "v1", "spans": [[s, e], ...], "scores": [...]}

``evaluate_predictions`` sorts a record's candidates by score (stable, so equal
scores keep the given order), applies temporal NMS (``nms_iou``, default 0.5;
``None`` turns it off), and scores the first k survivors against the ground truth:

- ``R{k}@{t}``: percent of queries for which at least one of the top-k spans
  has IoU >= t with the ground truth (up to 1e-9 of float error; fewer than k
  candidates: those there are);
- ``mIoU``: mean IoU of the top-1 span, in percent;
- a ground truth with several windows (``extra["windows"]``, as the ``jsonl``
  adapter keeps Moment-DETR's ``relevant_windows``) counts the *best* IoU over
  its windows, for both recall and mIoU.

- ``mAP@0.5``, ``mAP@0.75``, ``mAP`` (the mean over IoU 0.5:0.05:0.95): moment retrieval
  mean average precision as moment_detr's ``standalone_eval`` (and Lighthouse) compute it.
  Per query: its first ``MAP_MAX_WINDOWS`` (10) windows *as given* (no NMS), ranked by
  score (stable); walking down the ranking, a window is a true positive at threshold t if
  its best-IoU ground-truth window not yet taken has IoU >= t (the windows are tried in
  decreasing IoU; one below t makes it a false positive), else a false positive; the
  query's AP is the area under the precision-recall curve with precision made monotone
  (the interpolation of ActivityNet's detection AP); mAP is the mean over queries, in percent.
  The comparison is plain ``>=`` (no tolerance), as there.

Prediction files are read in this project's format or in Moment-DETR/Lighthouse's
(``{"qid", "query", "vid", "pred_relevant_windows": [[start, end, score], ...]}``), told
apart line by line; ``write_moment_detr_predictions`` writes the latter.

The set of query ids must equal the ground truth's exactly: a missing or an
extra id (or a duplicate, or a video id that disagrees) is an error that lists them.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.spans import pairwise_temporal_iou, temporal_nms
from pipeline.datasets.records import QueryMoment
from storage.atomic import atomic_open

RECALL_KS: tuple[int, ...] = (1, 5)
_EPS = 1e-9  # IoU 0.7 computed as 0.69999999 still counts at IoU >= 0.7
IOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)
METRIC_KEYS: tuple[str, ...] = tuple(
    f"R{k}@{t}" for k in RECALL_KS for t in IOU_THRESHOLDS
) + ("mIoU",)
MAP_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5:0.05:0.95
MAP_KEYS: tuple[str, ...] = ("mAP@0.5", "mAP@0.75", "mAP")
MAP_MAX_WINDOWS = 10  # standalone_eval's max_pred_windows

__all__ = [
    "IOU_THRESHOLDS",
    "MAP_KEYS",
    "MAP_THRESHOLDS",
    "METRIC_KEYS",
    "RECALL_KS",
    "PredictionRecord",
    "best_window_iou",
    "evaluate_predictions",
    "format_metrics",
    "average_precision",
    "ground_truth_windows",
    "rank_spans",
    "read_predictions",
    "write_moment_detr_predictions",
    "write_predictions",
]


@dataclass(frozen=True)
class PredictionRecord:
    """One query's ranked candidate spans (seconds) and their scores (higher is better)."""

    query_id: str
    video_id: str
    spans: tuple[tuple[float, float], ...]
    scores: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.spans:
            raise ValueError(f"prediction for query {self.query_id!r} has no spans; give at least one [start, end]")
        for s, e in self.spans:
            if not (math.isfinite(s) and math.isfinite(e)) or e < s:
                raise ValueError(
                    f"prediction for query {self.query_id!r} has span [{s}, {e}]: spans must be finite "
                    "with end >= start (seconds)"
                )
        if self.scores and len(self.scores) != len(self.spans):
            raise ValueError(
                f"prediction for query {self.query_id!r} has {len(self.spans)} spans but "
                f"{len(self.scores)} scores; give one score per span (or none: the order is the ranking)"
            )
        if any(not math.isfinite(x) for x in self.scores):
            raise ValueError(f"prediction for query {self.query_id!r} has a non-finite score")

    def to_dict(self) -> dict[str, Any]:
        return {
            "query_id": self.query_id,
            "video_id": self.video_id,
            "spans": [[float(s), float(e)] for s, e in self.spans],
            "scores": [float(x) for x in self.scores],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PredictionRecord:
        missing = [k for k in ("query_id", "video_id", "spans") if k not in d]
        if missing:
            raise ValueError(f"prediction record lacks {missing}; expected keys query_id, video_id, spans, scores")
        spans_raw = d["spans"]
        if not isinstance(spans_raw, list) or not all(
            isinstance(sp, (list, tuple)) and len(sp) == 2 for sp in spans_raw
        ):
            raise ValueError(f"prediction for query {d['query_id']!r}: 'spans' must be a list of [start, end] pairs")
        return cls(
            query_id=str(d["query_id"]),
            video_id=str(d["video_id"]),
            spans=tuple((float(s), float(e)) for s, e in spans_raw),
            scores=tuple(float(x) for x in d.get("scores") or ()),
        )


    @classmethod
    def from_moment_detr(cls, d: Mapping[str, Any]) -> PredictionRecord:
        """A Moment-DETR/Lighthouse line: ``qid``, ``vid``, ``pred_relevant_windows`` [[s, e, score], ...]."""
        missing = [k for k in ("qid", "vid", "pred_relevant_windows") if k not in d]
        if missing:
            raise ValueError(f"Moment-DETR prediction lacks {missing}; expected qid, query, vid, pred_relevant_windows")
        wins = d["pred_relevant_windows"]
        if not isinstance(wins, list) or not all(isinstance(w, (list, tuple)) and len(w) in (2, 3) for w in wins):
            raise ValueError(f"prediction for qid {d['qid']!r}: 'pred_relevant_windows' must be a list of "
                             "[start, end, score] triples")
        sizes = {len(w) for w in wins}
        if len(sizes) > 1:
            raise ValueError(f"prediction for qid {d['qid']!r} mixes [start, end] and [start, end, score] windows")
        return cls(query_id=str(d["qid"]), video_id=str(d["vid"]),
                   spans=tuple((float(w[0]), float(w[1])) for w in wins),
                   scores=tuple(float(w[2]) for w in wins) if sizes == {3} else ())

    def to_moment_detr(self, query: str = "") -> dict[str, Any]:
        """The Moment-DETR/Lighthouse line; a decimal query id is written as the integer it was."""
        text = self.query_id
        qid: str | int = int(text) if text.isdigit() and str(int(text)) == text else text
        scores = self.scores or tuple(float(-i) for i in range(len(self.spans)))
        return {"qid": qid, "query": query, "vid": self.video_id,
                "pred_relevant_windows": [[float(s), float(e), float(x)]
                                          for (s, e), x in zip(self.spans, scores, strict=True)]}


def _as_record(p: PredictionRecord | Mapping[str, Any]) -> PredictionRecord:
    return p if isinstance(p, PredictionRecord) else PredictionRecord.from_dict(p)


def read_predictions(path: str | os.PathLike[str]) -> list[PredictionRecord]:
    """Read a JSONL file of prediction records, in this project's format or Moment-DETR's
    (``pred_relevant_windows``); a bad line is an error naming ``file:line``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"predictions file {str(p)!r} does not exist")
    records: list[PredictionRecord] = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("a line must be a JSON object")
                if "pred_relevant_windows" in obj:
                    records.append(PredictionRecord.from_moment_detr(obj))
                else:
                    records.append(PredictionRecord.from_dict(obj))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{p}:{lineno}: bad prediction record: {exc}") from exc
    return records


def write_predictions(
    path: str | os.PathLike[str], records: Iterable[PredictionRecord | Mapping[str, Any]]
) -> int:
    """Write prediction records as JSONL, atomically; returns the number written."""
    n = 0
    with atomic_open(path, "w") as fh:
        for rec in records:
            fh.write(json.dumps(_as_record(rec).to_dict()) + "\n")
            n += 1
    return n


def write_moment_detr_predictions(
    path: str | os.PathLike[str], records: Iterable[PredictionRecord | Mapping[str, Any]],
    queries: Mapping[str, str] | None = None,
) -> int:
    """Write Moment-DETR/Lighthouse JSONL (``qid``, ``query``, ``vid``, ``pred_relevant_windows``),
    windows in rank order; ``queries`` maps query ids to their sentences. Returns the count."""
    n = 0
    with atomic_open(path, "w") as fh:
        for rec in records:
            r = _as_record(rec)
            fh.write(json.dumps(r.to_moment_detr((queries or {}).get(r.query_id, ""))) + "\n")
            n += 1
    return n


def interpolated_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the precision-recall curve with precision made non-increasing (from the right).

    >>> interpolated_average_precision(np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0]))
    0.8333333333333333
    """
    prec = np.concatenate([[0.0], precision, [0.0]])
    rec = np.concatenate([[0.0], recall, [1.0]])
    prec = np.maximum.accumulate(prec[::-1])[::-1]
    steps = np.flatnonzero(rec[1:] != rec[:-1]) + 1
    return float(np.sum((rec[steps] - rec[steps - 1]) * prec[steps]))


def average_precision(spans: np.ndarray, scores: np.ndarray, windows: np.ndarray,
                      thresholds: Sequence[float] = MAP_THRESHOLDS) -> np.ndarray:
    """One query's AP at each IoU threshold: predicted ``spans`` [N, 2] with ``scores`` [N]
    against ground-truth ``windows`` [W, 2] (see the module docstring) -> [len(thresholds)].

    >>> average_precision(np.array([[0.0, 4.0], [10.0, 12.0]]), np.array([0.9, 0.8]),
    ...                   np.array([[0.0, 4.0], [10.0, 14.0]]), (0.5, 0.75)).tolist()
    [1.0, 0.5]
    """
    out = np.zeros(len(thresholds))
    n = len(spans)
    if n == 0 or len(windows) == 0:
        return out
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ious = pairwise_temporal_iou(np.asarray(spans, np.float64)[order], np.asarray(windows, np.float64))
    for ti, thr in enumerate(thresholds):
        taken = np.zeros(len(windows), dtype=bool)
        tp = np.zeros(n)
        for i in range(n):
            for j in np.argsort(ious[i], kind="stable")[::-1]:  # as standalone_eval: ties, later first
                if ious[i, j] < thr:
                    break
                if not taken[j]:
                    taken[j] = True
                    tp[i] = 1.0
                    break
        hits = np.cumsum(tp)
        precision = hits / np.arange(1, n + 1)
        recall = hits / len(windows)
        out[ti] = interpolated_average_precision(precision, recall)
    return out


def ground_truth_windows(gt: QueryMoment) -> np.ndarray:
    """The ground-truth windows ``[W, 2]`` of a record: ``extra["windows"]`` if present, else its span."""
    windows = gt.extra.get("windows") if gt.extra else None
    if windows:
        arr = np.asarray(windows, dtype=np.float64).reshape(-1, 2)
        return arr
    return np.asarray([[gt.start, gt.end]], dtype=np.float64)


def best_window_iou(spans: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """IoU of each span ``[N, 2]`` with its best-matching window ``[W, 2]`` -> ``[N]``.

    >>> best_window_iou(np.array([[0.0, 2.0], [5.0, 6.0]]), np.array([[0.0, 4.0], [5.0, 7.0]]))
    array([0.5, 0.5])
    """
    if spans.shape[0] == 0:
        return np.zeros(0)
    return pairwise_temporal_iou(spans, windows).max(axis=1)


def rank_spans(record: PredictionRecord, *, nms_iou: float | None = 0.5, top_k: int | None = None) -> np.ndarray:
    """A record's candidate spans ``[K, 2]`` in rank order, after optional temporal NMS.

    >>> r = PredictionRecord("q", "v", ((0, 10), (0, 9), (20, 30)), (0.5, 0.9, 0.1))
    >>> rank_spans(r, nms_iou=0.5).tolist()
    [[0.0, 9.0], [20.0, 30.0]]
    >>> rank_spans(r, nms_iou=None, top_k=2).tolist()
    [[0.0, 9.0], [0.0, 10.0]]
    """
    spans = np.asarray(record.spans, dtype=np.float64).reshape(-1, 2)
    scores = (
        np.asarray(record.scores, dtype=np.float64)
        if record.scores
        else -np.arange(spans.shape[0], dtype=np.float64)  # no scores: the given order is the ranking
    )
    if nms_iou is None:
        order = np.argsort(-scores, kind="stable")
        if top_k is not None:
            order = order[:top_k]
        return spans[order]
    return spans[temporal_nms(spans, scores, iou_threshold=nms_iou, top_k=top_k)]


def _check_ids(records: Sequence[PredictionRecord], ground_truth: Sequence[QueryMoment]) -> None:
    def listing(ids: Iterable[str]) -> str:
        ids = sorted(ids)
        shown = ", ".join(repr(i) for i in ids[:10])
        return f"{shown}" + (f" ... ({len(ids)} in all)" if len(ids) > 10 else "")

    gt_ids = [g.query_id for g in ground_truth]
    dup_gt = [q for q, n in Counter(gt_ids).items() if n > 1]
    if dup_gt:
        raise ValueError(f"ground truth has duplicate query ids: {listing(dup_gt)}")
    pred_ids = [r.query_id for r in records]
    dup = [q for q, n in Counter(pred_ids).items() if n > 1]
    if dup:
        raise ValueError(f"predictions have more than one record for query ids: {listing(dup)}")
    missing = set(gt_ids) - set(pred_ids)
    extra = set(pred_ids) - set(gt_ids)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing predictions for {len(missing)} ground-truth queries: {listing(missing)}")
        if extra:
            parts.append(f"{len(extra)} predicted query ids are not in the ground truth: {listing(extra)}")
        raise ValueError(
            "prediction query ids do not match the ground truth; "
            + "; ".join(parts)
            + ". Predict every query of the annotation file (and only those), or evaluate on the matching split."
        )
    gt_video = {g.query_id: g.video_id for g in ground_truth}
    wrong = [r for r in records if r.video_id != gt_video[r.query_id]]
    if wrong:
        r = wrong[0]
        raise ValueError(
            f"{len(wrong)} predictions name a different video than the ground truth, e.g. query "
            f"{r.query_id!r}: predicted video {r.video_id!r}, ground truth {gt_video[r.query_id]!r}"
        )


def evaluate_predictions(
    predictions: Iterable[PredictionRecord | Mapping[str, Any]],
    ground_truth: Sequence[QueryMoment],
    *,
    nms_iou: float | None = 0.5,
    ks: Sequence[int] = RECALL_KS,
    thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> dict[str, float]:
    """Score prediction records against ground truth; see the module docstring for the definitions.

    Returns ``{"R1@0.3": ..., "R1@0.5": ..., "R1@0.7": ..., "R5@0.3": ..., "R5@0.5": ...,
    "R5@0.7": ..., "mIoU": ..., "num_queries": N}`` (percentages, except the count).

    >>> gt = [QueryMoment("q1", "v", "a", 0.0, 4.0, 10.0, "test"), QueryMoment("q2", "v", "b", 5.0, 9.0, 10.0, "test")]
    >>> m = evaluate_predictions([{"query_id": "q1", "video_id": "v", "spans": [[0, 2]]},
    ...                           {"query_id": "q2", "video_id": "v", "spans": [[5, 9]]}], gt)
    >>> m["R1@0.3"], m["R1@0.5"], m["R1@0.7"], m["mIoU"], m["num_queries"]
    (100.0, 100.0, 50.0, 75.0, 2)
    """
    records = [_as_record(p) for p in predictions]
    if not ground_truth:
        raise ValueError("ground truth is empty: nothing to evaluate")
    _check_ids(records, ground_truth)
    by_id = {r.query_id: r for r in records}
    k_max = max(ks)
    hits = {(k, t): 0 for k in ks for t in thresholds}
    iou_sum = 0.0
    for gt in ground_truth:
        ranked = rank_spans(by_id[gt.query_id], nms_iou=nms_iou, top_k=k_max)
        ious = best_window_iou(ranked, ground_truth_windows(gt))
        iou_sum += float(ious[0])
        for k in ks:
            best = float(ious[:k].max())
            for t in thresholds:
                if best >= t - _EPS:
                    hits[(k, t)] += 1
    n = len(ground_truth)
    out: dict[str, float] = {f"R{k}@{t}": 100.0 * hits[(k, t)] / n for k in ks for t in thresholds}
    out["mIoU"] = 100.0 * iou_sum / n
    out.update(mean_average_precision(records, ground_truth))
    out["num_queries"] = n
    return out


def mean_average_precision(predictions: Iterable[PredictionRecord | Mapping[str, Any]],
                           ground_truth: Sequence[QueryMoment]) -> dict[str, float]:
    """``{"mAP@0.5", "mAP@0.75", "mAP"}`` in percent over the ground-truth queries (a query with
    no prediction has AP 0); see the module docstring.

    >>> gt = [QueryMoment("q1", "v", "a", 0.0, 4.0, 10.0, "test")]
    >>> mean_average_precision([{"query_id": "q1", "video_id": "v", "spans": [[0, 3], [0, 4]],
    ...                          "scores": [0.9, 0.8]}], gt)
    {'mAP@0.5': 100.0, 'mAP@0.75': 100.0, 'mAP': 80.0}
    """
    by_id = {r.query_id: r for r in (_as_record(p) for p in predictions)}
    if not ground_truth:
        raise ValueError("ground truth is empty: nothing to evaluate")
    ap = np.zeros((len(ground_truth), len(MAP_THRESHOLDS)))
    for qi, gt in enumerate(ground_truth):
        rec = by_id.get(gt.query_id)
        if rec is None:
            continue
        spans = np.asarray(rec.spans[:MAP_MAX_WINDOWS], dtype=np.float64).reshape(-1, 2)
        scores = (np.asarray(rec.scores[:MAP_MAX_WINDOWS], dtype=np.float64) if rec.scores
                  else -np.arange(len(spans), dtype=np.float64))
        ap[qi] = average_precision(spans, scores, ground_truth_windows(gt))
    per_thr = ap.mean(axis=0)
    at = dict(zip(MAP_THRESHOLDS, per_thr, strict=True))
    return {"mAP@0.5": 100.0 * float(at[0.5]), "mAP@0.75": 100.0 * float(at[0.75]),
            "mAP": 100.0 * float(per_thr.mean())}


def format_metrics(metrics: Mapping[str, float]) -> str:
    """A two-line plain-text table of the metrics, in the usual column order."""
    keys = [k for k in METRIC_KEYS if k in metrics] + [k for k in metrics if k not in METRIC_KEYS]
    header = "  ".join(f"{k:>8}" for k in keys)
    values = "  ".join(
        f"{int(metrics[k]):>8d}" if k in ("num_queries", "missing") else f"{metrics[k]:>8.2f}" for k in keys
    )
    return header + "\n" + values
