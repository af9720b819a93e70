"""Inference and evaluation: network outputs -> ranked spans (seconds) -> prediction records -> metrics.

``decode`` turns start/end distributions into candidate spans: score(i, j) =
p_start(i) * p_end(j) for j >= i (and j - i < ``max_span_clips`` when set); each
candidate is refined by the float predictor's offsets and mapped to seconds
through the clip windows (``model.spans.clip_indices_to_span``); temporal NMS
keeps the top ``top_k``. Metrics come from ``model.metrics.evaluate_predictions``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import model_from_checkpoint
from model.data import (
    Batch,
    GroundingData,
    GroupSampler,
    PreparedData,
    collate,
    make_groups,
    prepare,
)
from model.metrics import evaluate_predictions, format_metrics, write_predictions
from model.spans import clip_indices_to_span, temporal_nms
from pipeline.datasets.records import QueryMoment
from storage.atomic import atomic_write_json

log = logging.getLogger(__name__)


def decode_query(start_logits: torch.Tensor, end_logits: torch.Tensor, offsets: torch.Tensor,
                 clip_times: np.ndarray, *, top_k: int = 5, nms_iou: float = 0.5,
                 max_span_clips: int = 0, candidates: int = 30) -> tuple[list[list[float]], list[float]]:
    """One query: start/end logits [L], offsets [L, 2], its video's clip windows [T, 2] (T valid clips)
    -> (spans in seconds best first, scores)."""
    t = len(clip_times)
    # a diverged network must still yield valid (if useless) spans: NaN -> uniform, offsets -> 0
    ps = torch.nan_to_num(start_logits[:t].float(), nan=0.0).softmax(0)
    pe = torch.nan_to_num(end_logits[:t].float(), nan=0.0).softmax(0)
    offsets = torch.nan_to_num(offsets.float(), nan=0.0).clamp(0.0, 1.0)
    joint = ps[:, None] * pe[None, :]  # (T, T)
    allowed = torch.ones(t, t, dtype=torch.bool).triu()
    if max_span_clips > 0:
        allowed &= ~torch.ones(t, t, dtype=torch.bool).triu(max_span_clips)
    joint = joint.masked_fill(~allowed, -1.0).flatten()
    k = min(candidates, int(allowed.sum()))
    scores, idx = joint.topk(k)
    off = offsets.float().cpu().numpy()
    spans = []
    for flat in idx.tolist():
        i, j = divmod(flat, t)
        spans.append(clip_indices_to_span(i, j, clip_times, float(off[i, 0]), float(off[j, 1])))
    keep = temporal_nms(spans, scores.numpy(), iou_threshold=nms_iou, top_k=top_k)
    return [list(map(float, spans[i])) for i in keep], [float(scores[i]) for i in keep]


def predict_batch(outputs: dict[str, torch.Tensor], batch: Batch, prepared: PreparedData, *,
                  top_k: int = 5, nms_iou: float = 0.5, max_span_clips: int = 0) -> list[dict[str, Any]]:
    """Prediction records for every query of a batch."""
    records = []
    start, end, off = (outputs[k].detach().cpu() for k in ("start_logits", "end_logits", "float_offsets"))
    for j, qid in enumerate(batch.query_ids):
        vid = batch.video_ids[int(batch.query_video[j])]
        spans, scores = decode_query(start[j], end[j], off[j], prepared.videos[vid].clip_times,
                                     top_k=top_k, nms_iou=nms_iou, max_span_clips=max_span_clips)
        records.append({"query_id": qid, "video_id": vid, "spans": spans, "scores": scores})
    return records


@dataclass
class EvalOutput:
    metrics: dict[str, float]
    predictions: list[dict[str, Any]]
    video_embed: dict[str, np.ndarray]  # video id -> global embedding
    query_embed: dict[str, np.ndarray]  # query id -> global embedding


@torch.inference_mode()
def evaluate_model(model: torch.nn.Module, prepared: PreparedData, records: Sequence[QueryMoment], *,
                   batch_videos: int = 8, top_k: int = 5, nms_iou: float = 0.5, max_span_clips: int = 0,
                   device: torch.device | str = "cpu", amp: bool = False) -> EvalOutput:
    """Run the network on every query of ``records`` (multi-pair batches, no shuffling) and score it."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    groups = make_groups(prepared, records, multi_pair=True, max_queries=_max_queries(model))
    sampler = GroupSampler(groups, batch_videos, seed=0, shuffle=False)
    preds: list[dict[str, Any]] = []
    v_emb: dict[str, np.ndarray] = {}
    q_emb: dict[str, np.ndarray] = {}
    for groups_b in sampler.batches(0):
        batch = collate(prepared, groups_b).to(device)
        with _autocast(device, amp):
            out = model(batch, 1.0)
        preds.extend(predict_batch(out, batch, prepared, top_k=top_k, nms_iou=nms_iou,
                                   max_span_clips=max_span_clips))
        for i, vid in enumerate(batch.video_ids):
            v_emb[vid] = out["video_embed"][i].float().cpu().numpy()
        for j, qid in enumerate(batch.query_ids):
            q_emb[qid] = out["query_embed"][j].float().cpu().numpy()
    model.train(was_training)
    gt = [r for r in records if r.query_id in prepared.queries]
    if not gt:
        raise ValueError("no query of these records has features; nothing to evaluate")
    metrics = evaluate_predictions(preds, gt, nms_iou=nms_iou)
    return EvalOutput(metrics, preds, v_emb, q_emb)


def _max_queries(model: torch.nn.Module) -> int:
    cfg = getattr(getattr(model, "module", model), "cfg", None)
    return int(getattr(cfg, "max_queries_per_video", 16))


def _autocast(device: torch.device, amp: bool) -> Any:
    if device.type == "cuda" and amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def evaluate_checkpoint(checkpoint: str | os.PathLike[str], data: GroundingData, *, split: str = "test",
                        out_dir: str | os.PathLike[str] | None = None, device: str | None = None,
                        batch_videos: int | None = None) -> dict[str, float]:
    """Load a checkpoint, predict every query of ``split``, write ``predictions_<split>.jsonl`` and
    ``metrics_<split>.json`` under ``out_dir`` (when given), return the metrics."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, ckpt, cfg, norm = model_from_checkpoint(checkpoint, dev)
    records = data.split(split)
    if not records:
        splits = sorted({r.split for r in data.records})
        raise ValueError(f"no records in split {split!r}; the annotations have splits {splits}")
    prepared, _ = prepare(GroundingData(data.videos, data.queries, records), cfg.model.num_clips,
                          cfg.model.max_words, norm=norm)
    result = evaluate_model(model, prepared, records, batch_videos=batch_videos or cfg.train.batch_videos,
                            top_k=cfg.train.eval_top_k, nms_iou=cfg.train.nms_iou,
                            max_span_clips=cfg.model.max_span_clips, device=dev, amp=cfg.train.amp)
    if prepared.skipped:
        log.warning("skipped during evaluation: %s", prepared.skipped)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_predictions(out / f"predictions_{split}.jsonl", result.predictions)
        atomic_write_json(out / f"metrics_{split}.json",
                          {"split": split, "checkpoint": str(checkpoint), "metrics": result.metrics,
                           "skipped": prepared.skipped, "config_digest": ckpt.get("config_digest")})
    log.info("%s\n%s", split, format_metrics(result.metrics))
    return result.metrics
