"""model.distributed on CPU: a real gloo process group of 2 processes (torch.multiprocessing).

The DDP run must match a single process that takes the same global batch: rank r of W
takes batches r, r+W, ... of the shared seeded order, so one DDP step equals one step on
the mean of those W batch losses.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from model.data import Group, GroupSampler
from model.distributed import (
    DistributedContext,
    all_reduce_metrics,
    barrier,
    broadcast_flag,
    init_from_env,
    shutdown,
    steps_per_epoch,
    unwrap_model,
    wrap_model,
)
from storage.atomic import atomic_open

NUM_GROUPS, BATCH, EPOCHS, LR, SEED = 22, 3, 2, 0.2, 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _data() -> tuple[list[Group], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    groups, items = [], {}
    for i in range(NUM_GROUPS):
        vid = f"v{i:02d}"
        n = 1 + i % 3  # groups of 1-3 queries, like multi-pair video groups
        groups.append(Group(vid, tuple(f"{vid}q{j}" for j in range(n))))
        items[vid] = (torch.randn(n, 6, generator=g), torch.randn(n, 2, generator=g))
    return groups, items


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))


def _batch_loss(model: nn.Module, groups: list[Group], items: dict) -> torch.Tensor:
    # per-group mean, then mean over the batch's groups (a multi-pair style reduction)
    losses = [((model(items[g.video_id][0]) - items[g.video_id][1]) ** 2).mean() for g in groups]
    return torch.stack(losses).mean()


def _train(ctx: DistributedContext, out: Path) -> None:
    groups, items = _data()
    model = wrap_model(_model(seed=100 + ctx.rank), ctx)  # different init per rank: DDP broadcasts rank 0's
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    sampler = GroupSampler(groups, BATCH, seed=SEED, rank=ctx.rank, world_size=ctx.world_size)
    history = []
    for epoch in range(EPOCHS):
        batches = sampler.batches(epoch)
        n_steps = steps_per_epoch(len(GroupSampler(groups, BATCH, seed=SEED).batches(epoch)), ctx)
        total, seen = 0.0, 0
        for groups_b in batches[:n_steps]:
            loss = _batch_loss(model, groups_b, items)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(groups_b)
            seen += len(groups_b)
        history.append(all_reduce_metrics({"loss": total / seen}, ctx, weight=seen)["loss"])
    stop = broadcast_flag(ctx.rank == 0, ctx)  # rank 0 says True; every rank must see True
    if ctx.is_main:
        with atomic_open(out / "final.pt") as fh:
            torch.save({"state": unwrap_model(model).state_dict(), "history": history, "stop": stop}, fh)
    barrier(ctx)
    torch.save({"rank": ctx.rank, "stop": stop, "history": history}, out / f"rank{ctx.rank}.pt")


def _spawned(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    env = {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    ctx = init_from_env("gloo", env=env, timeout_s=120)
    try:
        assert ctx.is_distributed and ctx.rank == rank and ctx.backend == "gloo"
        _train(ctx, Path(out))
    finally:
        shutdown(ctx)


def _reference(world: int) -> tuple[dict[str, torch.Tensor], list[float]]:
    """One process: each step averages the losses of the W batches the ranks would take."""
    groups, items = _data()
    model = _model(seed=100)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    sampler = GroupSampler(groups, BATCH, seed=SEED)
    history = []
    for epoch in range(EPOCHS):
        batches = sampler.batches(epoch)
        n_steps = len(batches) // world
        total, seen = 0.0, 0
        for s in range(n_steps):
            step_batches = batches[s * world : (s + 1) * world]
            losses = [_batch_loss(model, b, items) for b in step_batches]
            opt.zero_grad()
            torch.stack(losses).mean().backward()
            opt.step()
            for b, loss in zip(step_batches, losses, strict=True):
                total += float(loss.detach()) * len(b)
                seen += len(b)
        history.append(total / seen)
    return model.state_dict(), history


def test_ddp_on_two_gloo_processes_matches_single_process(tmp_path: Path) -> None:
    world = 2
    mp.spawn(_spawned, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["final.pt", "rank0.pt", "rank1.pt"], "only rank 0 writes the checkpoint"
    final = torch.load(tmp_path / "final.pt")
    ref_state, ref_history = _reference(world)
    for name, ref in ref_state.items():
        torch.testing.assert_close(final["state"][name], ref, rtol=1e-5, atol=1e-6, msg=name)
    assert final["history"] == pytest.approx(ref_history, rel=1e-5)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    assert all(r["stop"] for r in ranks), "broadcast_flag gives rank 0's value everywhere"
    assert ranks[0]["history"] == ranks[1]["history"], "reduced metrics are identical on all ranks"
    # Sanity: the training did something, so the comparison is not of two untouched models.
    untouched = _model(seed=100).state_dict()
    assert not torch.allclose(untouched["0.weight"], final["state"]["0.weight"])
    # ...and the comparison discriminates: per-batch steps (no global batch) end elsewhere.
    per_batch, _ = _reference(1)
    assert not torch.allclose(per_batch["0.weight"], final["state"]["0.weight"], atol=1e-4)


def test_single_process_context_without_torchrun_env() -> None:
    ctx = init_from_env(env={})
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed) == (0, 1, True, False)
    assert all_reduce_metrics({"b": 2.0, "a": 1}, ctx) == {"a": 1.0, "b": 2.0}
    model = nn.Linear(2, 2)
    assert wrap_model(model, ctx) is model and unwrap_model(model) is model
    assert steps_per_epoch(5, ctx) == 5


def test_bad_launch_environment_is_named() -> None:
    with pytest.raises(ValueError, match="MASTER_ADDR, MASTER_PORT not set; launch with `torchrun"):
        init_from_env(env={"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match=r"RANK='x' is not an integer"):
        init_from_env(
            env={"WORLD_SIZE": "2", "RANK": "x", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
        )
    with pytest.raises(ValueError, match="backend 'mpi' is not supported"):
        init_from_env("mpi", env={})
    with pytest.raises(ValueError, match="cannot feed 4 ranks"):
        steps_per_epoch(3, DistributedContext(rank=0, world_size=4))


def test_torchrun_launch_reads_its_environment(tmp_path: Path) -> None:
    """The real launcher: `torchrun --nproc-per-node 2` sets the variables init_from_env reads."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys, torch
        from model.distributed import init_from_env, all_reduce_metrics, broadcast_flag, shutdown
        torch.set_num_threads(1)
        ctx = init_from_env()
        m = all_reduce_metrics({{"rank": float(ctx.rank)}}, ctx, weight=ctx.rank + 1.0)
        flag = broadcast_flag(ctx.rank == 0, ctx)
        with open({str(tmp_path)!r} + f"/rank{{ctx.rank}}.json", "w") as fh:
            json.dump({{"ctx": [ctx.rank, ctx.world_size, ctx.local_rank, ctx.backend], "m": m,
                        "flag": flag}}, fh)
        shutdown(ctx)
    """))
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(script)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [g["ctx"] for g in got] == [[0, 2, 0, "gloo"], [1, 2, 1, "gloo"]]
    # weighted mean of ranks 0 and 1 with weights 1 and 2: (0*1 + 1*2) / 3
    assert all(g["m"]["rank"] == pytest.approx(2 / 3) for g in got)
    assert all(g["flag"] is True for g in got)
