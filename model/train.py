"""The MKTN trainer: multi-pair (or single-pair) batches, AdamW + warm-up/decay, exact resume.

The pieces are separate functions so a distributed runner can reuse them:
``build_training`` (model, optimiser, scheduler), ``make_sampler`` (the seeded,
shardable order of video groups), ``train_step`` (one optimiser step, NaN-safe),
``checkpoint_payload``/``save_checkpoint`` (rank-0 writes, behind
``is_main_process``), ``evaluate_model`` (validation). ``train`` composes them.

Outputs in ``out_dir``: ``last.pt`` (every epoch and every ``checkpoint_every``
steps), ``best.pt`` (best validation R1@0.5), ``log.jsonl`` (one line per step with
each loss term, one per epoch with validation metrics), ``result.json``, and, when
the data has a test split, ``predictions_test.jsonl`` (and the same in Moment-DETR's
format, ``predictions_test_moment_detr.jsonl``) + ``metrics_test.json`` of the best checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from model.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from model.config import MKTNConfig, validate
from model.controls import compute_controls, controls_summary
from model.data import (
    Batch,
    GroundingData,
    GroupSampler,
    NormStats,
    PreparedData,
    iterate_batches,
    make_groups,
    prepare,
)
from model.distributed import DistributedContext, all_reduce_metrics, wrap_model
from model.evaluate import _autocast, evaluate_model, write_split_evaluation
from model.losses import MKTNCriterion, build_criterion
from model.matching import DIAGNOSTICS, embedding_diagnostics
from model.mktn import MKTN, build_model
from storage.atomic import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)
SELECT_METRIC = "R1@0.5"


class TrainingAborted(RuntimeError):
    """Too many non-finite losses: the run stops rather than train on garbage."""


@dataclass
class TrainResult:
    out_dir: str
    best_checkpoint: str
    last_checkpoint: str
    best_epoch: int
    best_val: dict[str, float]
    test: dict[str, float] | None
    epochs_run: int
    steps: int
    bad_steps: int
    stopped_early: bool
    wall_s: float
    train_queries: int
    train_videos: int
    skipped: dict[str, int] = field(default_factory=dict)
    # the split model selection used: "val", or "train" (loudly) when the data has no val split
    selection_split: str = "val"
    # the controls of the test evaluation (model.controls; None when off or without a test split)
    controls: dict[str, dict[str, float]] | None = None
    # per epoch: mean train loss terms, embedding diagnostics (ANS kept, mean cosines), val metrics
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_main_process(rank: int = 0) -> bool:
    """The one check that guards every write (checkpoints, logs, metrics)."""
    return rank == 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_training(cfg: MKTNConfig, dims: dict[str, int], total_steps: int, device: torch.device
                   ) -> tuple[MKTN, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Model on ``device``, AdamW (no decay on norms, biases, embeddings) and the warm-up/decay schedule."""
    model = build_model(cfg.model, dims["frame"], dims["patch"], dims["word"], dims["sentence"]).to(device)
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "pos" in name or "embed" in name or "queries" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.train.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.train.lr)
    warmup = max(1, int(cfg.train.warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * t)) if cfg.train.schedule == "cosine" else 1.0 - t

    return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def make_sampler(prepared: PreparedData, data: GroundingData, cfg: MKTNConfig, *, rank: int = 0,
                 world_size: int = 1) -> GroupSampler:
    """Training groups: whole videos (multi-pair) or single queries, ``batch_videos`` per batch.

    Single-pair batches hold as many queries as a multi-pair batch holds on average, so
    both modes see the same number of queries per step and epochs are comparable.
    """
    train = data.split("train")
    order = cfg.model.query_order
    groups = make_groups(prepared, train, multi_pair=cfg.train.multi_pair,
                         max_queries=cfg.model.max_queries_per_video, query_order=order, seed=cfg.train.seed)
    batch = cfg.train.batch_videos
    if not cfg.train.multi_pair:
        mp = make_groups(prepared, train, multi_pair=True, max_queries=cfg.model.max_queries_per_video)
        per_video = sum(len(g.query_ids) for g in mp) / max(1, len(mp))
        batch = max(2, round(batch * per_video))
    # query_order "none": each video's queries are dealt anew every epoch (seeded), so neither the
    # order inside a group nor the grouping carries the annotation order
    return GroupSampler(groups, batch, seed=cfg.train.seed, rank=rank, world_size=world_size,
                        shuffle_queries=order == "none")


def train_step(model: torch.nn.Module, criterion: MKTNCriterion, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, batch: Batch, progress: float,
               cfg: MKTNConfig, device: torch.device,
               scaler: torch.amp.GradScaler | None = None,
               distributed: bool = False) -> dict[str, float] | None:
    """One optimiser step; returns the loss terms, or None when the loss or gradients were not finite
    (the step is skipped: no update, scheduler not advanced).

    ``distributed``: ``model`` is DDP-wrapped. A rank then never skips on its own loss
    (the others would wait in the gradient all-reduce): it back-propagates, the NaN
    reaches every rank's averaged gradients, and all ranks skip the step together.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with _autocast(device, cfg.train.amp):
        outputs = model(batch, progress)
    loss, logs = criterion(outputs, batch)
    if not torch.isfinite(loss) and not distributed:
        return None
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.update()
        return None
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    logs["grad_norm"] = float(grad_norm)
    logs["lr"] = float(optimizer.param_groups[0]["lr"])
    tau = float(outputs["tau"])
    if not math.isnan(tau):
        logs["tau"] = tau
    diag = embedding_diagnostics(outputs, batch.query_video, batch.same_video)
    logs.update({k: v for k, v in diag.items() if not math.isnan(v)})
    return logs


def split_diagnostics(logs: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """-> (loss terms and optimiser values, embedding diagnostics) of a ``train_step`` result."""
    diag = {k: v for k, v in logs.items() if k in DIAGNOSTICS}
    return {k: v for k, v in logs.items() if k not in DIAGNOSTICS}, diag


def epoch_means(sums: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
    return {k: round(sums[k] / counts[k], 6) for k in sorted(sums) if counts.get(k)}


def collapse_warning(diag: dict[str, float], tau: float | None) -> str | None:
    """A message when an epoch's global embeddings look collapsed (ANS removing nearly every negative)."""
    kept = diag.get("ans_kept")
    if kept is None or tau is None or kept >= 0.05:
        return None
    return (f"ANS kept {kept:.1%} of the negatives at tau={tau:.3f} (mean video-video cosine "
            f"{diag.get('video_cos', float('nan')):.3f}, query-query {diag.get('query_cos', float('nan')):.3f}): "
            "the global embeddings have collapsed and RINCE/contrast/alignment see no negatives; "
            "check model.embed_centering, lower model.tau_end or use model.negative_selection=none")


def checkpoint_payload(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       scheduler: torch.optim.lr_scheduler.LRScheduler, cfg: MKTNConfig,
                       state: dict[str, Any], dims: dict[str, int], norm: NormStats,
                       meta: dict[str, Any], vocab: tuple[list[str], np.ndarray] | None = None
                       ) -> dict[str, Any]:
    """Everything resume needs, plus what inference on a new video needs (see model.checkpoint)."""
    text = None
    if vocab is not None:
        text = {"words": list(vocab[0]), "vectors": torch.from_numpy(np.asarray(vocab[1], np.float16))}
    return {
        "text": text,
        "model": getattr(model, "module", model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "state": dict(state),
        "config": cfg.to_dict(),
        "config_digest": cfg.digest(),
        "dims": dict(dims),
        "norm": norm.to_dict(),
        "meta": json.loads(json.dumps(meta, default=str)),
    }


def epoch_record(state: dict[str, Any], cfg: MKTNConfig, val: dict[str, float], train_means: dict[str, float],
                 *, improved: bool, steps_per_epoch: int, elapsed_s: float) -> dict[str, Any]:
    """What ``train``'s ``on_epoch`` callback receives after an epoch (plain JSON-able values).

    ``epoch`` (1-based, just finished), ``epochs`` (planned), ``global_step``, ``steps_per_epoch``,
    ``train`` (the epoch's mean loss terms; ``total`` is the loss), ``val`` (every validation
    metric), ``improved``, ``best_epoch``/``best`` (the model-selection score so far),
    ``stopped_early``, ``elapsed_s`` and ``history`` (every epoch so far, a resumed run's too).
    """
    return {
        "epoch": int(state["epoch"]), "epochs": int(cfg.train.epochs), "global_step": int(state["global_step"]),
        "steps_per_epoch": int(steps_per_epoch), "train": dict(train_means),
        "val": {k: float(v) for k, v in val.items()}, "improved": bool(improved),
        "best_epoch": int(state["best_epoch"]), "best": float(state["best"]), "select_metric": SELECT_METRIC,
        "stopped_early": bool(state["stopped_early"]), "elapsed_s": round(float(elapsed_s), 2),
        "history": [dict(h) for h in state["history"]],
    }


def _dims(prepared: PreparedData) -> dict[str, int]:
    v = next(iter(prepared.videos.values()))
    q = next(iter(prepared.queries.values()))
    return {"frame": int(v.frames.shape[-1]), "patch": int(v.patches.shape[-1]),
            "word": int(q.words.shape[-1]), "sentence": int(q.sentence.shape[-1])}


def _truncate_log(path: Path, step: int) -> None:
    """Keep log lines up to ``step`` (a resumed run rewrites what the interrupted one logged after it)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    atomic_write_text(path, "".join(k + "\n" for k in kept))


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train(cfg: MKTNConfig, data: GroundingData, out_dir: str | os.PathLike[str], *,
          device: str | torch.device | None = None, resume: bool = False, checkpoint_every: int = 0,
          on_step: Callable[[int, dict[str, float]], None] | None = None,
          on_epoch: Callable[[dict[str, Any]], None] | None = None, show_progress: bool = True,
          rank: int = 0, world_size: int = 1,
          distributed: DistributedContext | None = None, controls: bool = True) -> TrainResult:
    """Train MKTN on ``data`` (train split; val split for model selection; test split evaluated at the end).

    ``resume`` continues from ``out_dir/last.pt`` exactly; without it an existing
    ``last.pt`` is an error (pass ``resume=True`` or another ``out_dir``).
    ``on_step(global_step, logs)`` runs after every optimiser step (tests use it to
    interrupt a run). ``on_epoch(record)`` runs on the main process after every epoch's validation
    and checkpoint, with :func:`epoch_record`'s dict (epoch, epochs, steps, the epoch's mean train
    loss terms, the validation metrics, the best epoch so far, the history): a progress hook that
    needs no particular UI (the flows turn it into Prefect artifacts). ``controls``: evaluate the best checkpoint's test controls too
    (``model.controls``: two extra evaluation passes). ``distributed`` (from ``model.distributed.init_from_env`` under
    torchrun): rank, world size and device come from it, the model is wrapped in
    DistributedDataParallel for the optimiser steps, and only rank 0 writes.
    """
    if distributed is not None:
        rank, world_size, device = distributed.rank, distributed.world_size, distributed.device
    validate(cfg)
    t0 = time.perf_counter()
    out = Path(out_dir)
    dev = torch.device(device) if device is not None else _default_device()
    last_path, best_path, log_path = out / "last.pt", out / "best.pt", out / "log.jsonl"
    main = is_main_process(rank)
    if last_path.exists() and not resume:
        raise FileExistsError(f"{last_path} exists: pass --resume to continue that run, or another --out")
    if resume and not last_path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {last_path}; start without --resume")
    if main:
        out.mkdir(parents=True, exist_ok=True)

    ckpt = load_checkpoint(last_path) if resume else None
    if ckpt is not None and not cfg.matches_digest(ckpt["config_digest"]):
        raise ValueError(f"--resume: {last_path} was trained with config {ckpt['config_digest']}, "
                         f"not {cfg.digest()}; resume with the same preset and --set values")
    seed_everything(cfg.train.seed)
    norm = NormStats.from_dict(ckpt["norm"]) if ckpt is not None else None
    prepared, norm = prepare(data, cfg.model.num_clips, cfg.model.max_words, norm=norm)
    if prepared.skipped:
        log.warning("records skipped: %s", prepared.skipped)
    sampler = make_sampler(prepared, data, cfg, rank=rank, world_size=world_size)
    steps_per_epoch = len(sampler)
    if steps_per_epoch == 0:
        raise ValueError("the train split has no usable query (check the annotations' split names and "
                         "that the stores hold their videos and queries)")
    total_steps = steps_per_epoch * cfg.train.epochs
    dims = _dims(prepared)
    model, optimizer, scheduler = build_training(cfg, dims, total_steps, dev)
    criterion = build_criterion(cfg.loss, cfg.model)
    use_fp16 = dev.type == "cuda" and cfg.train.amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if use_fp16 else None
    val_records = data.split("val")
    selection_split = "val"
    if not val_records:
        selection_split = "train"
        log.warning("=" * 72)
        log.warning("NO 'val' SPLIT (splits: %s): best.pt and early stopping are chosen on the TRAIN "
                    "split, which rewards memorising it; give a val split (--annotations val=FILE). "
                    "Recorded as selection_split='train' in result.json.",
                    sorted({r.split for r in data.records}))
        log.warning("=" * 72)
        val_records = data.split("train")
    meta = dict(data.meta)

    state: dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "bad_steps": 0,
                             "best": -1.0, "best_epoch": -1, "best_val": {}, "since_best": 0,
                             "stopped_early": False, "epoch_sums": {}, "epoch_counts": {}, "history": []}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state.update(ckpt["state"])
        set_rng_state(ckpt["rng"])
        if main:
            _truncate_log(log_path, state["global_step"])
        log.info("resumed from %s at epoch %d step %d", last_path, state["epoch"], state["global_step"])
    # DDP for the steps only; evaluation and checkpoints use the plain module (same parameters).
    step_model = wrap_model(model, distributed, find_unused_parameters=True) if distributed else model

    def write_last() -> None:
        if main:
            save_checkpoint(last_path, checkpoint_payload(model, optimizer, scheduler, cfg, state, dims, norm, meta, data.vocab))

    def log_line(obj: dict[str, Any]) -> None:
        if main:
            with log_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(obj) + "\n")

    while state["epoch"] < cfg.train.epochs and not state["stopped_early"]:
        epoch = state["epoch"]
        bar = tqdm(total=steps_per_epoch, initial=state["step_in_epoch"], desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                   disable=not (show_progress and main), leave=False)
        for batch in iterate_batches(prepared, sampler, epoch, skip=state["step_in_epoch"],
                                     crop_probability=cfg.train.temporal_crop,
                                     word_dropout=cfg.train.word_dropout,
                                     splice_probability=cfg.train.splice):
            progress = state["global_step"] / max(1, total_steps)
            logs = train_step(step_model, criterion, optimizer, scheduler, batch.to(dev), progress, cfg, dev,
                              scaler, distributed=distributed is not None and distributed.is_distributed)
            state["step_in_epoch"] += 1
            if logs is None:
                state["bad_steps"] += 1
                log.warning("non-finite loss at epoch %d step %d: step skipped (%d so far)",
                            epoch, state["step_in_epoch"], state["bad_steps"])
                if state["bad_steps"] > cfg.train.max_bad_steps:
                    raise TrainingAborted(
                        f"{state['bad_steps']} steps had a NaN/inf loss (limit train.max_bad_steps="
                        f"{cfg.train.max_bad_steps}); lower train.lr, check the features for NaN, or raise the limit"
                    )
                bar.update(1)
                continue
            state["global_step"] += 1
            if distributed is not None and distributed.is_distributed:  # the step's loss over all ranks
                logs["total_global"] = all_reduce_metrics({"t": logs["total"]}, distributed,
                                                          weight=batch.num_queries)["t"]
            terms, diag = split_diagnostics(logs)
            for k, v in logs.items():
                if k not in ("lr", "grad_norm"):
                    state["epoch_sums"][k] = state["epoch_sums"].get(k, 0.0) + v
                    state["epoch_counts"][k] = state["epoch_counts"].get(k, 0) + 1
            log_line({"kind": "step", "epoch": epoch, "step": state["global_step"],
                      "videos": batch.num_videos, "queries": batch.num_queries, **terms, "diag": diag})
            bar.update(1)
            bar.set_postfix(loss=f"{logs['total']:.3f}")
            if checkpoint_every and state["global_step"] % checkpoint_every == 0:
                write_last()
            if on_step is not None:
                on_step(state["global_step"], logs)
        bar.close()
        val = evaluate_model(model, prepared, val_records, cfg, device=dev)
        score = val.metrics[SELECT_METRIC]
        state["epoch"] = epoch + 1
        state["step_in_epoch"] = 0
        improved = score > state["best"]
        if improved:
            state.update(best=score, best_epoch=epoch + 1, best_val=val.metrics, since_best=0)
        else:
            state["since_best"] += 1
            if state["since_best"] >= cfg.train.patience:
                state["stopped_early"] = True
        means = epoch_means(state["epoch_sums"], state["epoch_counts"])
        train_means, diag_means = split_diagnostics(means)
        state["epoch_sums"], state["epoch_counts"] = {}, {}
        state["history"].append({"epoch": epoch + 1, "train": train_means, "diag": diag_means,
                                 "val": {k: val.metrics[k] for k in (SELECT_METRIC, "R1@0.7", "mIoU")}})
        log_line({"kind": "epoch", "epoch": epoch + 1, "step": state["global_step"], "val": val.metrics,
                  "train": train_means, "diag": diag_means,
                  "best": improved, "elapsed_s": round(time.perf_counter() - t0, 2)})
        nan = float("nan")
        log.info("epoch %d val %s=%.2f mIoU=%.2f%s | ANS kept %.2f, sim pos/neg %.3f/%.3f, "
                 "video cos %.3f (raw %.3f), query cos %.3f (raw %.3f)",
                 epoch + 1, SELECT_METRIC, score, val.metrics["mIoU"], " (best)" if improved else "",
                 *(diag_means.get(k, nan) for k in ("ans_kept", "sim_pos", "sim_neg", "video_cos",
                                                     "video_cos_raw", "query_cos", "query_cos_raw")))
        warning = collapse_warning(diag_means, train_means.get("tau"))
        if warning:
            log.warning("epoch %d: %s", epoch + 1, warning)
        if improved and main:
            save_checkpoint(best_path, checkpoint_payload(model, optimizer, scheduler, cfg, state, dims, norm, meta, data.vocab))
        write_last()
        if on_epoch is not None and main:
            on_epoch(epoch_record(state, cfg, val.metrics, train_means, improved=improved,
                                  steps_per_epoch=steps_per_epoch, elapsed_s=time.perf_counter() - t0))

    test_metrics = None
    test_controls: dict[str, dict[str, float]] | None = None
    test_records = data.split("test")
    if test_records and main and best_path.exists():
        best = load_checkpoint(best_path)
        model.load_state_dict(best["model"])
        res = evaluate_model(model, prepared, test_records, cfg, device=dev)
        test_metrics = res.metrics
        if controls:
            test_controls = compute_controls(model, prepared, test_records, data.split("train"), cfg=cfg,
                                             device=dev)
            log.info("test: %s", controls_summary(test_metrics, test_controls))
        # the same files as model.evaluate.evaluate_split writes: the evaluate flow reuses them
        # (reuse_split_evaluation) rather than evaluate this checkpoint on the test split again
        write_split_evaluation(out, "test", checkpoint=best_path, metrics=test_metrics,
                               predictions=res.predictions, records=test_records, skipped=prepared.skipped,
                               controls=test_controls, selection_split=selection_split,
                               config_digest=cfg.digest(), multi_pair=cfg.train.multi_pair,
                               query_order=cfg.model.query_order)
    train_groups = make_groups(prepared, data.split("train"), multi_pair=True, max_queries=10**9)
    result = TrainResult(
        out_dir=str(out), best_checkpoint=str(best_path), last_checkpoint=str(last_path),
        best_epoch=state["best_epoch"], best_val=state["best_val"], test=test_metrics,
        epochs_run=state["epoch"], steps=state["global_step"], bad_steps=state["bad_steps"],
        stopped_early=state["stopped_early"], wall_s=round(time.perf_counter() - t0, 2),
        train_queries=sum(len(g.query_ids) for g in train_groups), train_videos=len(train_groups),
        skipped=prepared.skipped, selection_split=selection_split, controls=test_controls,
        history=list(state["history"]),
    )
    if main:
        atomic_write_json(out / "result.json", {**result.to_dict(), "config": cfg.to_dict(),
                                                "config_digest": cfg.digest(), "meta": meta})
    return result
