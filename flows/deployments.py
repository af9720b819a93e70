"""Deployments of every flow, served from one process (``mktn serve``).

``build_deployments`` turns each flow into a ``RunnerDeployment`` with
``flow.to_deployment(name, parameters=..., cron=/interval=)``; ``serve`` hands
them to ``prefect.serve``, which registers them with the Prefect API
(``$PREFECT_API_URL``) and runs every flow run started from the UI, the API or
``prefect deployment run <flow>/<name> --param k=v`` in a subprocess here.

The re-evaluation deployment carries the schedule (cron or interval); the
others run on demand. Default parameters point at the work directory and
stores, so ``prefect deployment run extract-features/mktn --param
videos_dir=/data/videos --param dataset=mine`` is all a user has to type.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from prefect.types.entrypoint import EntrypointType

from flows.workspace import Workspace
from pipeline.provenance import code_version

logger = logging.getLogger(__name__)

DEFAULT_NAME = "mktn"
DEFAULT_REEVALUATE_CRON = "0 3 * * *"  # nightly at 03:00 UTC: new data lands in the day


@dataclass(frozen=True)
class ServeConfig:
    """What ``mktn serve`` deploys: names, defaults and the re-evaluation schedule."""

    name: str = DEFAULT_NAME
    work_dir: str | None = None
    feature_store: str | None = None
    query_store: str | None = None
    datasets_root: str | None = None
    checkpoints: tuple[str, ...] = ()
    dask: str | None = None
    max_workers: int = 2
    reevaluate_cron: str | None = DEFAULT_REEVALUATE_CRON
    reevaluate_interval_s: float | None = None  # wins over the cron when given
    schedule_active: bool = True
    tags: tuple[str, ...] = field(default=("mktn",))


def _flows() -> dict[str, Any]:
    from flows.embed import embed_queries
    from flows.evaluate import evaluate
    from flows.extract import extract_features
    from flows.reevaluate import reevaluate
    from flows.reproduce import reproduce
    from flows.train import train

    return {
        "extract-features": extract_features,
        "embed-queries": embed_queries,
        "train": train,
        "evaluate": evaluate,
        "reproduce": reproduce,
        "re-evaluate": reevaluate,
    }


def build_deployments(cfg: ServeConfig) -> list[Any]:
    """One ``RunnerDeployment`` per flow, named ``cfg.name``; the re-evaluation one scheduled."""
    ws = Workspace.at(cfg.work_dir, feature_store=cfg.feature_store, query_store=cfg.query_store)
    stores = {"work_dir": ws.root, "feature_store": ws.feature_store, "query_store": ws.query_store}
    runner = {"dask": cfg.dask, "max_workers": cfg.max_workers}
    flows = _flows()
    params: dict[str, dict[str, Any]] = {
        "extract-features": {"work_dir": ws.root, "feature_store": ws.feature_store, **runner},
        "embed-queries": dict(stores),
        "train": dict(stores),
        "evaluate": dict(stores),
        "reproduce": {"work_dir": ws.root, **runner},
        "re-evaluate": {**stores, **runner, "checkpoints": list(cfg.checkpoints)},
    }
    if cfg.datasets_root:
        params["re-evaluate"]["datasets_root"] = cfg.datasets_root
    descriptions = {
        "extract-features": "Decode videos and extract 3D-CNN clip/patch features into the Zarr feature store.",
        "embed-queries": "Tokenize and embed (GloVe + skip-thought) a dataset's queries into the query store.",
        "train": "Train MKTN on a dataset's features and queries; checkpoint under <work>/runs.",
        "evaluate": "Evaluate a checkpoint: R@1/R@5 at IoU 0.3/0.5/0.7 and mIoU.",
        "reproduce": "Raw videos to the final report: extract, embed, train, evaluate, report.",
        "re-evaluate": "Scan a datasets root for new/changed datasets, fill the stores, evaluate checkpoints.",
    }
    deployments = []
    for flow_name, flow_obj in flows.items():
        accepted = set(inspect.signature(flow_obj.fn).parameters)
        unknown = sorted(set(params[flow_name]) - accepted)
        if unknown:  # a served run would crash on them: fail at serve time instead
            raise ValueError(f"deployment defaults {unknown} are not parameters of flow {flow_name!r}")
        kwargs: dict[str, Any] = {
            "name": cfg.name,
            "parameters": params[flow_name],
            "description": descriptions[flow_name],
            "tags": list(cfg.tags),
            "version": code_version(),
            # load the flow by module path (the package is installed), not by file path, so
            # the served runs work from any working directory and inside the Docker image
            "entrypoint_type": EntrypointType.MODULE_PATH,
        }
        if flow_name == "re-evaluate":
            if cfg.reevaluate_interval_s:
                kwargs["interval"] = timedelta(seconds=cfg.reevaluate_interval_s)
            elif cfg.reevaluate_cron:
                kwargs["cron"] = cfg.reevaluate_cron
            kwargs["paused"] = not cfg.schedule_active
            # overlapping scheduled runs would race on results.csv: one at a time (the table
            # update itself is also locked, flows/reevaluate.py)
            kwargs["concurrency_limit"] = 1
        deployments.append(flow_obj.to_deployment(**kwargs))
    return deployments


def serve(cfg: ServeConfig, *, limit: int | None = None) -> None:
    """Register every deployment and run their flow runs here until interrupted."""
    from prefect import serve as prefect_serve

    deployments = build_deployments(cfg)
    logger.info("serving %d deployments named %r", len(deployments), cfg.name)
    prefect_serve(*deployments, limit=limit)
