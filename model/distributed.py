"""Multi-process training with ``torch.distributed``: process group, sharding, reductions.

Launch with ``torchrun`` (one process per GPU, or per CPU slot with gloo)::

    torchrun --nproc-per-node 4 -m pipeline.cli train --distributed ...

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_from_env` reads them, picks the backend (NCCL when
CUDA is available, gloo otherwise), binds the process to ``cuda:LOCAL_RANK`` and
returns a :class:`DistributedContext`. Without those variables (a plain
``python`` run) it returns the single-process context, so the same code path
serves both.

Sharding: every rank builds the same seeded per-epoch order of video groups;
rank ``r`` of ``W`` takes batches ``r, r + W, r + 2W, ...`` of it (the trainer's
``GroupSampler(rank=, world_size=)``). One optimiser step therefore sees ``W``
batches, the *global batch*; DDP averages the ranks' gradients, which equals one
step on the mean of the ``W`` per-batch losses. :func:`steps_per_epoch` cuts the
epoch to a whole number of global batches so no rank waits in an all-reduce the
others never reach.

Only rank 0 writes (checkpoints, metrics files, logs of record): wrap the writes
in ``if ctx.is_main:`` and follow them with :func:`barrier` when other ranks read
them next. Metrics computed per rank are combined with :func:`all_reduce_metrics`
(a sum of value x weight over ranks, divided by the summed weight).
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

_ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
BACKENDS = ("nccl", "gloo")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job. ``world_size == 1`` means no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the one process that writes checkpoints and metrics (rank 0)."""
        return self.rank == 0


def _env_int(env: Mapping[str, str], name: str) -> int:
    raw = env[name]
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"environment variable {name}={raw!r} is not an integer; launch with torchrun, "
            "which sets RANK, LOCAL_RANK and WORLD_SIZE"
        ) from None
    if value < 0:
        raise ValueError(f"environment variable {name}={value} must be >= 0")
    return value


def default_backend() -> str:
    """``nccl`` when CUDA is available, else ``gloo``."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_from_env(
    backend: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 1800.0,
) -> DistributedContext:
    """Join the process group described by torchrun's environment variables.

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) nothing is initialised and the
    single-process context is returned (device ``cuda`` if available, else ``cpu``).
    ``backend`` defaults to :func:`default_backend`. Calling it again in a process
    whose group is already initialised returns the context of that group.
    """
    env = os.environ if env is None else env
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not supported; use one of {BACKENDS}")
    world = _env_int(env, "WORLD_SIZE") if "WORLD_SIZE" in env else 1
    if world <= 1:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        return DistributedContext(device=device)

    missing = [v for v in _ENV_VARS if v not in env]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world} but {', '.join(missing)} not set; launch with "
            "`torchrun --nproc-per-node N ...`, which sets all of "
            + ", ".join(_ENV_VARS)
        )
    rank = _env_int(env, "RANK")
    local_rank = _env_int(env, "LOCAL_RANK")
    if rank >= world:
        raise ValueError(f"RANK={rank} is not below WORLD_SIZE={world}")
    backend = backend or default_backend()
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError("backend 'nccl' needs CUDA, which is not available; use --backend gloo")
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} GPU(s); "
                "start at most one process per GPU (--nproc-per-node)"
            )
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            # Under torchrun, ``env://`` (it reuses the launcher's store); for an explicit
            # ``env`` mapping, the same address as a tcp:// rendezvous.
            init_method="env://" if env is os.environ else (
                f"tcp://{env['MASTER_ADDR']}:{_env_int(env, 'MASTER_PORT')}"
            ),
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        log.info("joined process group: rank %d/%d, backend %s, device %s", rank, world, backend, device)
    return DistributedContext(rank, world, local_rank, backend, device)


def shutdown(ctx: DistributedContext) -> None:
    """Leave the process group (no-op for a single process)."""
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    """Wait for every rank (no-op for a single process)."""
    if ctx.is_distributed:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.local_rank])
        else:
            dist.barrier()


def wrap_model(model: nn.Module, ctx: DistributedContext, *, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` on ``ctx.device``, wrapped in ``DistributedDataParallel`` when distributed.

    DDP broadcasts rank 0's parameters and buffers at construction, so every rank
    starts from identical weights even if they were initialised differently.
    ``find_unused_parameters`` is needed when some parameters get no gradient in a
    step (ablation variants that switch a branch off).
    """
    model = model.to(ctx.device)
    if not ctx.is_distributed:
        return model
    device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (what checkpoints store), or ``model`` itself."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def steps_per_epoch(num_batches: int, ctx: DistributedContext) -> int:
    """Optimiser steps per epoch when rank ``r`` takes batches ``r, r+W, ...``.

    The remainder (``num_batches % W`` trailing batches) is dropped so that every
    rank takes the same number of steps: DDP's gradient all-reduce would otherwise
    wait forever for a rank that has run out of batches.

    >>> steps_per_epoch(10, DistributedContext(rank=0, world_size=4))
    2
    >>> steps_per_epoch(10, DistributedContext())
    10
    """
    steps = num_batches // ctx.world_size
    if steps == 0 and num_batches > 0:
        raise ValueError(
            f"{num_batches} batch(es) per epoch cannot feed {ctx.world_size} ranks; "
            "lower the batch size or start fewer processes"
        )
    return steps


def all_reduce_metrics(
    metrics: Mapping[str, float], ctx: DistributedContext, *, weight: float = 1.0
) -> dict[str, float]:
    """Weighted mean of each metric over ranks: ``sum_r w_r m_r / sum_r w_r``.

    ``weight`` is this rank's share (e.g. its number of queries). Every rank must pass
    the same keys; the result is identical on all ranks.
    """
    keys = sorted(metrics)
    if not ctx.is_distributed:
        return {k: float(metrics[k]) for k in keys}
    values = torch.tensor([float(metrics[k]) * weight for k in keys] + [weight], dtype=torch.float64)
    values = values.to(ctx.device)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    total = float(values[-1])
    if total <= 0:
        raise ValueError(f"all_reduce_metrics: summed weight is {total}; every rank passed weight 0")
    return {k: float(values[i]) / total for i, k in enumerate(keys)}


def broadcast_flag(flag: bool, ctx: DistributedContext) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. early stopping decided from rank 0's view)."""
    if not ctx.is_distributed:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=ctx.device)
    dist.broadcast(t, src=0)
    return bool(t.item())
