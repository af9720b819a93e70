"""model.distributed on CPU: the single-process context, launch errors, and a real
`torchrun --nproc-per-node 2` gloo job (reductions, broadcast). The DDP training itself is
checked against single-process training in tests/test_distributed_train.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from torch import nn

from model.distributed import (
    DistributedContext,
    all_reduce_metrics,
    init_from_env,
    steps_per_epoch,
    unwrap_model,
    wrap_model,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
