"""`torchrun --nproc-per-node 2 mktn train --distributed --device cpu` on real stores (gloo).

Rank r of 2 takes batches r, r+2, ... of the shared seeded order of video groups, so each
DDP step is one step on the mean of two batches' losses, each batch with its own in-batch
negatives. A single process built from the trainer's own pieces (``build_training``,
``make_sampler``, ``build_criterion``) stepping on that mean must end at the same weights.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from model_fixtures import planted_data, write_stores

from model.data import collate, make_groups, prepare
from model.losses import build_criterion
from model.train import build_training, make_sampler, seed_everything
from pipeline.cli import build_parser
from pipeline.cli.train import config_from_args, data_from_args

WORLD = 2
# Small and deterministic: no dropout (each rank would draw its own masks), fp32, no early stop.
# The augmentations draw per rank too: off here (they are tested on their own).
SETTINGS = ["model.dropout=0", "model.input_dropout=0", "train.temporal_crop=0", "train.splice=0", "train.word_dropout=0", "model.d_model=32", "model.num_heads=2", "model.num_clips=16",
            "model.num_objects=2", "model.num_phrases=2", "model.num_activities=2",
            "train.patience=100", "train.amp=false", "train.warmup_fraction=0.2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def train_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    # 10 train videos in batches of 2 -> 5 batches: the fifth cannot be shared by 2 ranks.
    data = planted_data(num_videos=14, queries_per_video=2, clips=16, dim=12, sentence_dim=16,
                        splits=(0.7, 0.15))
    features, queries, ann = write_stores(data, tmp_path_factory.mktemp("stores"))
    sets = [x for s in SETTINGS for x in ("--set", s)]
    return ["--features", str(features), "--queries", str(queries), "--annotations", str(ann),
            *sets, "--epochs", "2", "--batch-videos", "2", "--threads", "1", "--no-progress"]


def _reference(train_args: list[str]) -> tuple[dict[str, torch.Tensor], int, dict[str, torch.Tensor]]:
    """One process: each step back-propagates the mean of the losses of batches 2s and 2s+1.

    Also returns, per parameter element, the largest |gradient| seen (before clipping).
    """
    args = build_parser("train").parse_args(["train", *train_args, "--out", "unused"])
    cfg, data = config_from_args(args), data_from_args(args)
    seed_everything(cfg.train.seed)
    prepared, _ = prepare(data, cfg.model.num_clips, cfg.model.max_words)
    sampler = make_sampler(prepared, data, cfg)  # world size 1: the whole order
    steps = len(sampler) // WORLD
    total = steps * cfg.train.epochs
    v, q = next(iter(prepared.videos.values())), next(iter(prepared.queries.values()))
    dims = {"frame": v.frames.shape[-1], "patch": v.patches.shape[-1],
            "word": q.words.shape[-1], "sentence": q.sentence.shape[-1]}
    model, opt, sched = build_training(cfg, dims, total, torch.device("cpu"))
    criterion = build_criterion(cfg.loss, cfg.model)
    gmax = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    step = 0
    for epoch in range(cfg.train.epochs):
        batches = sampler.batches(epoch)
        for s in range(steps):
            model.train()
            opt.zero_grad(set_to_none=True)
            losses = []
            for groups in batches[s * WORLD:(s + 1) * WORLD]:
                batch = collate(prepared, groups)
                loss, _ = criterion(model(batch, step / total), batch)
                losses.append(loss)
            torch.stack(losses).mean().backward()
            for n, p in model.named_parameters():
                if p.grad is not None:
                    gmax[n] = torch.maximum(gmax[n], p.grad.abs())
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            sched.step()
            step += 1
    return model.state_dict(), step, gmax


def test_torchrun_ddp_training_matches_single_process_on_the_global_batch(
    train_args: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    mktn = Path(sys.executable).parent / "mktn"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD),
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "--no-python", str(mktn),
           "train", *train_args, "--distributed", "--device", "cpu", "--out", str(out), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout[run.stdout.index("{"):])  # only rank 0 prints

    ref_state, ref_steps, gmax = _reference(train_args)
    assert result["steps"] == ref_steps == 2 * 2, "2 epochs x (5 batches // 2 ranks)"
    last = torch.load(out / "last.pt", weights_only=False)
    assert not any(k.startswith("module.") for k in last["model"]), "checkpoints hold the plain module"
    # Some elements have an exactly zero true gradient (attention key biases, the bias before
    # a softmax: shift-invariant); their float gradient is rounding noise, which Adam turns
    # into +-lr steps of arbitrary sign. Those are only checked to move no more than that.
    lr, compared = last["config"]["train"]["lr"], 0
    for name, ref in ref_state.items():
        got = last["model"][name]
        if name.endswith("running_mean"):
            # the centring's running mean (evaluation only) follows rank 0's batches under DDP,
            # as BatchNorm's does without SyncBatchNorm; training uses each batch's own mean
            assert got.shape == ref.shape and bool(torch.isfinite(got).all()), name
            continue
        if name not in gmax:  # a buffer
            torch.testing.assert_close(got, ref, msg=name)
            continue
        live = gmax[name] > 1e-6
        torch.testing.assert_close(got[live], ref[live], rtol=1e-4, atol=1e-5, msg=name)
        assert ((got - ref)[~live].abs() <= 2 * lr * ref_steps).all(), name
        compared += int(live.sum())
    assert compared > 0.95 * sum(p.numel() for p in gmax.values())  # the rest: unused rows

    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [x for x in lines if x["kind"] == "step"]
    assert len(steps) == ref_steps, "only rank 0 wrote the log, one line per global step"
    assert all("total_global" in x for x in steps)
    assert {p.name for p in out.iterdir()} >= {"best.pt", "last.pt", "log.jsonl", "result.json"}


def test_ranks_get_equal_disjoint_batches(train_args: list[str]) -> None:
    args = build_parser("train").parse_args(["train", *train_args, "--out", "unused"])
    cfg, data = config_from_args(args), data_from_args(args)
    prepared, _ = prepare(data, cfg.model.num_clips, cfg.model.max_words)
    groups = {g.video_id for g in make_groups(prepared, data.split("train"), multi_pair=True, max_queries=16)}
    full = make_sampler(prepared, data, cfg).batches(0)
    assert len(full) % WORLD == 1, "the fixture leaves one batch over, which must be dropped"
    shards = [make_sampler(prepared, data, cfg, rank=r, world_size=WORLD) for r in range(WORLD)]
    for epoch in range(2):
        parts = [s.batches(epoch) for s in shards]
        assert len(parts[0]) == len(parts[1]) == len(full) // WORLD
        seen = [g.video_id for p in parts for b in p for g in b]
        assert len(seen) == len(set(seen)) and set(seen) <= groups
