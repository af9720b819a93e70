"""Inference and evaluation: network outputs -> ranked spans (seconds) -> prediction records -> metrics.

``decode`` turns start/end distributions into candidate spans: score(i, j) =
p_start(i) * p_end(j) for j >= i (and j - i < ``max_span_clips`` when set); each
candidate is refined by the float predictor's offsets and mapped to seconds
through the clip windows (``model.spans.clip_indices_to_span``); temporal NMS
keeps the top ``top_k``. The moment-map heads (``model.head = tan2d | mmn``) are decoded by
``model.moment_map.decode_map`` instead (``decode_outputs`` picks by the outputs present), into the
same records. Metrics come from ``model.metrics.evaluate_predictions``. ``top_k``, ``nms_iou`` and
``max_span_clips`` are the config's ``eval`` section (``model.config.EvalConfig``); ``evaluate_model``
takes the whole config and reads that section plus the three training settings evaluation follows.
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
from model.config import EvalConfig, MKTNConfig
from model.data import (
    Batch,
    GroundingData,
    GroupSampler,
    PreparedData,
    collate,
    make_groups,
    prepare,
)
from model.metrics import (
    evaluate_predictions,
    format_metrics,
    write_moment_detr_predictions,
    write_predictions,
)
from model.moment_map import decode_map
from model.spans import clip_edges, temporal_nms
from pipeline.datasets.records import QueryMoment
from pipeline.overrides import strict_replace
from storage.atomic import atomic_write_json

log = logging.getLogger(__name__)


def decode_query(start_logits: torch.Tensor, end_logits: torch.Tensor, offsets: torch.Tensor,
                 clip_times: np.ndarray, *, top_k: int = 5, nms_iou: float = 0.5,
                 max_span_clips: int = 0, candidates: int = 32) -> tuple[list[list[float]], list[float]]:
    """One query: start/end logits [L], offsets [L, 2], its video's clip windows [T, 2] (T valid clips)
    -> (spans in seconds best first, scores).

    Every allowed ``(i, j)`` pair is a candidate, best score first; temporal NMS runs on the best
    ``candidates`` and, while it keeps fewer than ``top_k``, on 4x as many, up to all of them, so a
    query gets ``top_k`` distinct spans whenever the video has enough clips (a peaked distribution's
    best few dozen pairs are all near-duplicates of its best span)."""
    t = len(clip_times)
    # a diverged network must still yield valid (if useless) spans: NaN -> uniform, offsets -> 0
    ps = torch.nan_to_num(start_logits[:t].float(), nan=0.0).softmax(0)
    pe = torch.nan_to_num(end_logits[:t].float(), nan=0.0).softmax(0)
    off = torch.nan_to_num(offsets.float(), nan=0.0).clamp(0.0, 1.0).cpu().numpy()
    allowed = torch.ones(t, t, dtype=torch.bool).triu()
    if max_span_clips > 0:
        allowed &= ~torch.ones(t, t, dtype=torch.bool).triu(max_span_clips)
    pairs = allowed.nonzero().numpy()  # (M, 2) row-major
    joint = (ps[:, None] * pe[None, :])[allowed].numpy().astype(np.float64)  # (M,)
    order = np.argsort(-joint, kind="stable")
    edges = clip_edges(clip_times)
    positions = np.arange(t + 1, dtype=np.float64)
    k = min(max(int(candidates), int(top_k)), len(order))
    while True:
        sel = order[:k]
        i, j = pairs[sel, 0], pairs[sel, 1]
        s = np.interp(i + off[i, 0], positions, edges)
        e = np.maximum(s, np.interp(j + off[j, 1], positions, edges))
        spans = np.stack([s, e], axis=1)
        keep = temporal_nms(spans, joint[sel], iou_threshold=nms_iou, top_k=top_k)
        if len(keep) >= top_k or k >= len(order):
            break
        k = min(len(order), 4 * k)
    return [[float(x) for x in spans[i]] for i in keep], [float(joint[sel][i]) for i in keep]


DECODED = {"span": ("start_logits", "end_logits", "float_offsets"), "map": ("map_scores", "map_mask")}


def decoded_outputs(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The outputs a decoder reads (on the CPU): the moment map's when present, else the span head's."""
    keys = DECODED["map"] if "map_scores" in outputs else DECODED["span"]
    return {k: outputs[k].detach().cpu() for k in keys}


def decode_outputs(outputs: dict[str, torch.Tensor], j: int, clip_times: np.ndarray,
                   settings: EvalConfig = EvalConfig()) -> tuple[list[list[float]], list[float]]:
    """Query ``j`` of a batch's outputs -> (spans in seconds best first, scores), by the head's decoder
    with ``settings`` (``top_k``, ``nms_iou``, ``max_span_clips``)."""
    kw: dict[str, Any] = dict(top_k=settings.top_k, nms_iou=settings.nms_iou,
                              max_span_clips=settings.max_span_clips)
    if "map_scores" in outputs:
        return decode_map(outputs["map_scores"][j], outputs["map_mask"][j], clip_times, **kw)
    return decode_query(outputs["start_logits"][j], outputs["end_logits"][j], outputs["float_offsets"][j],
                        clip_times, **kw)


def predict_batch(outputs: dict[str, torch.Tensor], batch: Batch, prepared: PreparedData,
                  settings: EvalConfig = EvalConfig(), **changes: Any) -> list[dict[str, Any]]:
    """Prediction records for every query of a batch (span head or moment map, by the outputs),
    decoded with ``settings``; ``changes`` replace some of its fields (``top_k=1``)."""
    settings = strict_replace(settings, changes, "eval setting(s)")
    records = []
    out = decoded_outputs(outputs)
    for j, qid in enumerate(batch.query_ids):
        vid = batch.video_ids[int(batch.query_video[j])]
        spans, scores = decode_outputs(out, j, prepared.videos[vid].clip_times, settings)
        records.append({"query_id": qid, "video_id": vid, "spans": spans, "scores": scores})
    return records


@dataclass
class EvalOutput:
    metrics: dict[str, float]
    predictions: list[dict[str, Any]]
    video_embed: dict[str, np.ndarray]  # video id -> global embedding
    query_embed: dict[str, np.ndarray]  # query id -> global embedding


@torch.inference_mode()
def evaluate_model(model: torch.nn.Module, prepared: PreparedData, records: Sequence[QueryMoment],
                   cfg: MKTNConfig | None = None, *, device: torch.device | str = "cpu",
                   batch_videos: int | None = None, multi_pair: bool | None = None) -> EvalOutput:
    """Run the network on every query of ``records`` (no shuffling) and score it.

    ``cfg`` (the run's config) decides everything config-derived: decoding and scoring by
    ``cfg.eval`` (top_k, nms_iou, max_span_clips), ``cfg.train.batch_videos`` videos per batch,
    CUDA autocast by ``cfg.train.amp``, and ``cfg.train.multi_pair``: evaluate the way the model
    was trained, with whole-video groups or one query per group (a single-pair model never saw
    other queries of its video in CSM). ``batch_videos``/``multi_pair`` override the config's;
    without a config: ``EvalConfig()``, 8 videos, no autocast, multi-pair.
    Groups follow the model's ``query_order`` (``"none"``: a fixed seeded
    order, seed 0). A query of ``records`` without features (``prepared`` skipped it) counts
    as a miss: it stays in the denominator (IoU 0) and ``metrics["missing"]`` counts it.
    """
    settings = cfg.eval if cfg is not None else EvalConfig()
    amp = cfg.train.amp if cfg is not None else False
    if batch_videos is None:
        batch_videos = cfg.train.batch_videos if cfg is not None else 8
    if multi_pair is None:
        multi_pair = cfg.train.multi_pair if cfg is not None else True
    was_training = model.training
    model.eval()
    device = torch.device(device)
    mcfg = _model_cfg(model)
    max_queries = int(getattr(mcfg, "max_queries_per_video", 16))
    groups = make_groups(prepared, records, multi_pair=multi_pair, max_queries=max_queries,
                         query_order=str(getattr(mcfg, "query_order", "none")), seed=0)
    batch = batch_videos
    if not multi_pair:  # as many queries per batch as a multi-pair batch holds (as in training)
        videos = {g.video_id for g in groups}
        batch = max(1, round(batch_videos * len(groups) / max(1, len(videos))))
    sampler = GroupSampler(groups, batch, seed=0, shuffle=False)
    preds: list[dict[str, Any]] = []
    v_emb: dict[str, np.ndarray] = {}
    q_emb: dict[str, np.ndarray] = {}
    for groups_b in sampler.batches(0):
        b = collate(prepared, groups_b).to(device)
        with _autocast(device, amp):
            out = model(b, 1.0)
        preds.extend(predict_batch(out, b, prepared, settings))
        for i, vid in enumerate(b.video_ids):
            v_emb[vid] = out["video_embed"][i].float().cpu().numpy()
        for j, qid in enumerate(b.query_ids):
            q_emb[qid] = out["query_embed"][j].float().cpu().numpy()
    model.train(was_training)
    gt = [r for r in records if r.query_id in prepared.queries]
    if not gt:
        raise ValueError("no query of these records has features; nothing to evaluate")
    metrics = count_missing_as_misses(evaluate_predictions(preds, gt, nms_iou=settings.nms_iou), len(records))
    return EvalOutput(metrics, preds, v_emb, q_emb)


def count_missing_as_misses(metrics: dict[str, float], total: int) -> dict[str, float]:
    """Metrics over the ``metrics["num_queries"]`` evaluated queries -> over all ``total`` queries,
    the others counted as misses (recall 0, IoU 0); ``missing`` says how many.

    >>> count_missing_as_misses({"R1@0.5": 50.0, "mIoU": 40.0, "num_queries": 2}, 4)
    {'R1@0.5': 25.0, 'mIoU': 20.0, 'num_queries': 4, 'missing': 2}
    """
    n = int(metrics["num_queries"])
    if total < n:
        raise ValueError(f"total={total} is smaller than the {n} evaluated queries")
    missing = total - n
    if missing:
        log.warning("%d of %d queries have no features and count as misses", missing, total)
    out: dict[str, float] = {k: (v * n / total if k != "num_queries" else v) for k, v in metrics.items()}
    out["num_queries"] = total
    out["missing"] = missing
    return out


def _model_cfg(model: torch.nn.Module) -> Any:
    return getattr(getattr(model, "module", model), "cfg", None)


def _autocast(device: torch.device, amp: bool) -> Any:
    if device.type == "cuda" and amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


@dataclass
class CheckpointEval:
    """A checkpoint on one split: its metrics, the controls (``model.controls``), its predictions."""

    split: str
    metrics: dict[str, float]
    controls: dict[str, dict[str, float]] | None
    predictions: list[dict[str, Any]]
    skipped: dict[str, int]
    multi_pair: bool


def evaluate_split(checkpoint: str | os.PathLike[str], data: GroundingData, *, split: str = "test",
                   out_dir: str | os.PathLike[str] | None = None, device: str | None = None,
                   batch_videos: int | None = None, controls: bool = True,
                   train_records: Sequence[QueryMoment] | None = None) -> CheckpointEval:
    """Load a checkpoint, predict every query of ``split`` (single- or multi-pair groups, as the
    checkpoint was trained), compute the controls (``controls=False`` skips them; the priors are
    fit on ``train_records``, default ``data``'s train split), and write
    ``predictions_<split>.jsonl``, the same in Moment-DETR/Lighthouse's format
    (``predictions_<split>_moment_detr.jsonl``) and ``metrics_<split>.json`` (with ``controls``)
    under ``out_dir``."""
    from model.controls import compute_controls, controls_summary

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, ckpt, cfg, norm = model_from_checkpoint(checkpoint, dev)
    records = data.split(split)
    if not records:
        splits = sorted({r.split for r in data.records})
        raise ValueError(f"no records in split {split!r}; the annotations have splits {splits}")
    prepared, _ = prepare(GroundingData(data.videos, data.queries, records), cfg.model.num_clips,
                          cfg.model.max_words, norm=norm)
    how: dict[str, Any] = dict(cfg=cfg, device=dev, batch_videos=batch_videos or None)
    result = evaluate_model(model, prepared, records, **how)
    ctrl = None
    if controls:
        train = list(train_records) if train_records is not None else data.split("train")
        ctrl = compute_controls(model, prepared, records, train, **how)
    if prepared.skipped:
        log.warning("skipped during evaluation: %s", prepared.skipped)
    if out_dir is not None:
        write_split_evaluation(out_dir, split, checkpoint=checkpoint, metrics=result.metrics,
                               predictions=result.predictions, records=records, skipped=prepared.skipped,
                               controls=ctrl, config_digest=ckpt.get("config_digest"),
                               multi_pair=cfg.train.multi_pair, query_order=cfg.model.query_order)
    log.info("%s\n%s", split, format_metrics(result.metrics))
    if ctrl is not None:
        log.info("%s", controls_summary(result.metrics, ctrl))
    return CheckpointEval(split, result.metrics, ctrl, result.predictions, dict(prepared.skipped),
                          cfg.train.multi_pair)


def evaluate_checkpoint(checkpoint: str | os.PathLike[str], data: GroundingData, *, split: str = "test",
                        out_dir: str | os.PathLike[str] | None = None, device: str | None = None,
                        batch_videos: int | None = None, controls: bool = True,
                        train_records: Sequence[QueryMoment] | None = None) -> dict[str, float]:
    """``evaluate_split`` -> the metrics only (the controls are in ``metrics_<split>.json``)."""
    return evaluate_split(checkpoint, data, split=split, out_dir=out_dir, device=device,
                          batch_videos=batch_videos, controls=controls, train_records=train_records).metrics


def write_split_evaluation(out_dir: str | os.PathLike[str], split: str, *, checkpoint: str | os.PathLike[str],
                           metrics: dict[str, float], predictions: Sequence[dict[str, Any]],
                           records: Sequence[QueryMoment], skipped: dict[str, int],
                           controls: dict[str, dict[str, float]] | None, **extra: Any) -> None:
    """The files of one checkpoint's evaluation on ``split`` (``evaluate_split`` and ``train()``'s test
    evaluation write the same ones): ``predictions_<split>.jsonl``, the same in Moment-DETR/Lighthouse's
    format and ``metrics_<split>.json`` (``split``, ``checkpoint``, ``metrics``, ``skipped``, the
    ``extra`` keys, and ``controls`` with their summary when computed)."""
    from model.controls import controls_summary

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_predictions(out / f"predictions_{split}.jsonl", predictions)
    write_moment_detr_predictions(out / f"predictions_{split}_moment_detr.jsonl", predictions,
                                  {r.query_id: r.sentence for r in records})
    payload: dict[str, Any] = {"split": split, "checkpoint": str(checkpoint), "metrics": metrics,
                               "skipped": skipped, **extra}
    if controls is not None:
        payload["controls"] = controls
        payload["controls_summary"] = controls_summary(metrics, controls)
    atomic_write_json(out / f"metrics_{split}.json", payload)


def reuse_split_evaluation(source_dir: str | os.PathLike[str], checkpoint: str | os.PathLike[str], *,
                           split: str = "test", out_dir: str | os.PathLike[str] | None = None,
                           controls: bool = True) -> CheckpointEval | None:
    """The evaluation of ``checkpoint`` on ``split`` already written under ``source_dir`` (by
    ``train()``, which evaluates its best checkpoint on the test split, or ``evaluate_split``), copied
    to ``out_dir`` when given; ``None`` when there is none for this checkpoint and split (or it lacks
    the controls and ``controls`` asks for them): then evaluate it (``evaluate_split``).

    The caller vouches that the features, queries and annotations are the ones that evaluation
    read (the evaluate flow compares the training run's digests with its own)."""
    import json
    import shutil

    src = Path(source_dir)
    metrics_file = src / f"metrics_{split}.json"
    preds_file = src / f"predictions_{split}.jsonl"
    if not (metrics_file.is_file() and preds_file.is_file()):
        return None
    try:
        payload = json.loads(metrics_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    recorded = payload.get("checkpoint")
    if payload.get("split") != split or not recorded or Path(recorded).resolve() != Path(checkpoint).resolve():
        return None
    ctrl = payload.get("controls")
    if controls and ctrl is None:
        return None
    if out_dir is not None and Path(out_dir).resolve() != src.resolve():
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name in (preds_file.name, f"predictions_{split}_moment_detr.jsonl"):
            if (src / name).is_file():
                shutil.copyfile(src / name, out / name)
        atomic_write_json(out / metrics_file.name, {**payload, "reused_from": str(metrics_file)})
    with preds_file.open(encoding="utf-8") as fh:  # written by write_predictions: one record a line
        predictions = [json.loads(line) for line in fh if line.strip()]
    log.debug("%s of %s: the evaluation in %s (reused, not evaluated again)", split, checkpoint, metrics_file)
    return CheckpointEval(split, dict(payload["metrics"]), ctrl if controls else None, predictions,
                          dict(payload.get("skipped") or {}), bool(payload.get("multi_pair", True)))
