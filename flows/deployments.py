"""Deployments of every flow, served from one process (``mktn serve``) or declared in
``prefect.yaml`` for a work pool; both are made from :data:`FLOWS`, the one registration
point of a deployable flow.

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

import argparse
import importlib
import inspect
import json
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


@dataclass(frozen=True)
class FlowEntry:
    """One deployable flow: the single place a flow is registered.

    ``mktn serve`` (:func:`build_deployments`) and ``prefect.yaml`` (:func:`render_prefect_yaml`,
    checked against the file by ``tests/test_deployments_registry.py``) are both made from
    :data:`FLOWS`; adding a flow is one entry here, then ``python -m flows.deployments
    --write-prefect-yaml`` (docs/flows.md "Adding a flow").
    """

    name: str  # the Prefect flow name (deployments are "<name>/<deployment name>")
    entrypoint: str  # module path, "flows.extract.extract_features"
    description: str
    # which serve-time defaults the deployment gets: keys of build_deployments' defaults
    # (work_dir, feature_store, query_store, dask, max_workers, checkpoints, datasets_root)
    serve_defaults: tuple[str, ...] = ("work_dir", "feature_store", "query_store")
    # prefect.yaml parameters (templated from the environment where `prefect deploy` runs)
    yaml_parameters: tuple[tuple[str, Any], ...] = (("work_dir", "{{ $MKTN_WORK }}"),)
    scheduled: bool = False  # carries the re-evaluation schedule (cron or interval)

    def load(self) -> Any:
        """The flow object."""
        module, _, attr = self.entrypoint.rpartition(".")
        return getattr(importlib.import_module(module), attr)


_RUNNER = ("dask", "max_workers")

FLOWS: tuple[FlowEntry, ...] = (
    FlowEntry("extract-features", "flows.extract.extract_features",
              "Decode videos and extract 3D-CNN clip/patch features into the Zarr feature store.",
              serve_defaults=("work_dir", "feature_store", *_RUNNER),
              yaml_parameters=(("work_dir", "{{ $MKTN_WORK }}"), ("max_workers", 2))),
    FlowEntry("embed-queries", "flows.embed.embed_queries",
              "Tokenize and embed (GloVe + skip-thought) a dataset's queries into the query store."),
    FlowEntry("train", "flows.train.train",
              "Train MKTN on a dataset's features and queries; checkpoints under <work>/runs."),
    FlowEntry("evaluate", "flows.evaluate.evaluate",
              "Evaluate a checkpoint: R@1/R@5 at IoU 0.3/0.5/0.7 and mIoU."),
    FlowEntry("reproduce", "flows.reproduce.reproduce",
              "Raw videos to the final report: extract, embed, train, evaluate, report.",
              serve_defaults=("work_dir", *_RUNNER)),
    FlowEntry("re-evaluate", "flows.reevaluate.reevaluate",
              "Scan a datasets root for new or changed datasets, fill the stores, evaluate checkpoints.",
              serve_defaults=("work_dir", "feature_store", "query_store", *_RUNNER, "checkpoints",
                              "datasets_root"),
              yaml_parameters=(("work_dir", "{{ $MKTN_WORK }}"),
                               ("datasets_root", "{{ $MKTN_DATASETS_ROOT }}")),
              scheduled=True),
)


def _flows() -> dict[str, Any]:
    """``{flow name: flow object}`` of :data:`FLOWS`."""
    return {entry.name: entry.load() for entry in FLOWS}


def build_deployments(cfg: ServeConfig) -> list[Any]:
    """One ``RunnerDeployment`` per :data:`FLOWS` entry, named ``cfg.name``; the scheduled one
    (re-evaluate) carries the cron or interval."""
    ws = Workspace.at(cfg.work_dir, feature_store=cfg.feature_store, query_store=cfg.query_store)
    available: dict[str, Any] = {
        "work_dir": ws.root, "feature_store": ws.feature_store, "query_store": ws.query_store,
        "dask": cfg.dask, "max_workers": cfg.max_workers, "checkpoints": list(cfg.checkpoints),
    }
    if cfg.datasets_root:
        available["datasets_root"] = cfg.datasets_root
    deployments = []
    for entry in FLOWS:
        flow_obj = entry.load()
        params = {k: available[k] for k in entry.serve_defaults if k in available}
        accepted = set(inspect.signature(flow_obj.fn).parameters)
        unknown = sorted(set(params) - accepted)
        if unknown:  # a served run would crash on them: fail at serve time instead
            raise ValueError(f"deployment defaults {unknown} are not parameters of flow {entry.name!r}")
        kwargs: dict[str, Any] = {
            "name": cfg.name,
            "parameters": params,
            "description": entry.description,
            "tags": list(cfg.tags),
            "version": code_version(),
            # load the flow by module path (the package is installed), not by file path, so
            # the served runs work from any working directory and inside the Docker image
            "entrypoint_type": EntrypointType.MODULE_PATH,
        }
        if entry.scheduled:
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


_YAML_HEADER = """\
# Deployments of every MKTN flow for `prefect deploy --all`, run by a worker of a
# process work pool (`mktn serve` serves the same flows without a work pool: see
# docs/flows.md). Entrypoints are module paths: the worker's Python environment must
# have the project installed (`pip install -e .` or the Docker image).
#
# GENERATED from flows/deployments.py FLOWS by `python -m flows.deployments --write-prefect-yaml`;
# edit FLOWS, not this file (tests/test_deployments_registry.py checks they agree).
#
#   prefect work-pool create mktn-process --type process
#   prefect deploy --all
#   prefect worker start --pool mktn-process
#   prefect deployment run extract-features/mktn --param videos_dir=/data/videos --param dataset=mine
#
# Parameter defaults come from the environment where `prefect deploy` runs:
# MKTN_WORK (work directory: stores, runs, reports, cached results) and
# MKTN_DATASETS_ROOT (the folder re-evaluate scans).
name: mktn
prefect-version: {prefect_version}

build: null
push: null
pull: null

definitions:
  work_pool: &pool
    name: mktn-process
    work_queue_name: default
  tags: &tags [mktn]

deployments:
"""


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    text = str(value)
    # quote what YAML would misread (": ", leading "{", "#"); JSON strings are valid YAML
    return json.dumps(text) if (": " in text or text[:1] in "{[&*!|>%@`#" or " #" in text) else text


def render_prefect_yaml(prefect_version: str | None = None) -> str:
    """``prefect.yaml``'s text, made from :data:`FLOWS`."""
    if prefect_version is None:
        import prefect

        prefect_version = prefect.__version__
    out = [_YAML_HEADER.format(prefect_version=prefect_version)]
    for i, entry in enumerate(FLOWS):
        if i:
            out.append("\n")
        out.append(f"  - name: {DEFAULT_NAME}\n")
        out.append(f"    entrypoint: {entry.entrypoint}\n")
        out.append(f"    description: {_yaml_scalar(entry.description)}\n")
        out.append("    tags: *tags\n")
        out.append("    parameters:\n")
        for key, value in entry.yaml_parameters:
            out.append(f"      {key}: {_yaml_scalar(value)}\n")
        if entry.scheduled:
            out.append("    schedules:\n")
            out.append(f'      - cron: "{DEFAULT_REEVALUATE_CRON}"  # nightly at 03:00 UTC; change here or '
                       "with `mktn serve --reevaluate-cron`\n")
            out.append("        timezone: UTC\n")
            out.append("        active: true\n")
        out.append("    work_pool: *pool\n")
    return "".join(out)


def serve(cfg: ServeConfig, *, limit: int | None = None) -> None:
    """Register every deployment and run their flow runs here until interrupted."""
    from prefect import serve as prefect_serve

    deployments = build_deployments(cfg)
    logger.info("serving %d deployments named %r", len(deployments), cfg.name)
    prefect_serve(*deployments, limit=limit)


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.deployments --write-prefect-yaml [PATH]``: regenerate prefect.yaml."""
    parser = argparse.ArgumentParser(prog="python -m flows.deployments")
    parser.add_argument("--write-prefect-yaml", metavar="PATH", nargs="?", const="prefect.yaml",
                        help="write the prefect.yaml made from FLOWS (default path: ./prefect.yaml)")
    args = parser.parse_args(argv)
    text = render_prefect_yaml()
    if args.write_prefect_yaml:
        from storage.atomic import atomic_write_text

        atomic_write_text(args.write_prefect_yaml, text)
        print(f"wrote {args.write_prefect_yaml} ({len(FLOWS)} deployments)")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
