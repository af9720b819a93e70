"""Task runners for the flows: a small thread pool on one machine, or Dask across many.

Why a thread pool of 2 on the development machine: it has 2 cores and torch
already uses both for one clip batch; two torch jobs each using both cores
slowed one ~15x (docs/benchmarks.md). So the extraction flow runs
``max_workers`` tasks at once and gives each ``cores // max_workers`` torch
threads (see :func:`torch_threads_per_worker`): one video decodes (decord
releases the GIL) while another computes, without oversubscribing the CPU.

``--dask local`` starts a real ``distributed.LocalCluster`` (one process per
worker, one thread each); ``--dask tcp://host:8786`` uses a running scheduler,
so extraction spreads over every machine that runs ``dask worker``. The ``--dask`` value is
read, and failed tasks are retried, by the policy both scale-out paths share
(``pipeline/scaleout.py``; the Prefect-free path is ``pipeline/distributed_extract.py``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from pipeline.scaleout import LOCAL, parse_dask_address

logger = logging.getLogger(__name__)

DEFAULT_MAX_WORKERS = 2


def cpu_count() -> int:
    """Cores this process may use (respects CPU affinity / container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def torch_threads_per_worker(max_workers: int) -> int:
    """Torch intra-op threads per concurrent task so ``max_workers`` tasks fill the cores once."""
    return max(1, cpu_count() // max(1, max_workers))


def build_task_runner(dask: str | None = None, max_workers: int = DEFAULT_MAX_WORKERS) -> Any:
    """A task runner from the ``--dask`` flag.

    - ``None`` or ``""``: ``ThreadPoolTaskRunner(max_workers)`` on this machine.
    - ``"local"``: ``DaskTaskRunner`` over a new ``distributed.LocalCluster`` with
      ``max_workers`` single-threaded worker processes.
    - an address (``tcp://10.0.0.5:8786`` or ``10.0.0.5:8786``): ``DaskTaskRunner``
      attached to that running scheduler.
    """
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    if not dask:
        return ThreadPoolTaskRunner(max_workers=max_workers)
    address = parse_dask_address(dask)  # the same reading as mktn extract --dask
    from prefect_dask import DaskTaskRunner

    if address == LOCAL:
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": max_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            },
        )
    return DaskTaskRunner(address=address)
