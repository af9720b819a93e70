"""``mktn serve``: register every flow's deployment with the Prefect API and run their flow runs.

Needs a Prefect server (``prefect server start``) and ``PREFECT_API_URL``
pointing at it; then ``prefect deployment run extract-features/mktn --param
videos_dir=... --param dataset=...`` starts a run that executes here. See
docs/flows.md for the whole path.
"""

from __future__ import annotations

import argparse
import os
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="mktn", help="deployment name: <flow>/<name> (default mktn)")
    parser.add_argument(
        "--work", default=None,
        help="work directory for stores, runs, reports and cached results "
        "(default $MKTN_WORK, else $MKTN_ARTIFACTS, else ./mktn-work)",
    )
    parser.add_argument("--feature-store", default=None, help="feature store root or URL (default <work>/stores/features.zarr or $MKTN_FEATURE_STORE)")
    parser.add_argument("--query-store", default=None, help="query store root or URL (default <work>/stores/queries.zarr or $MKTN_QUERY_STORE)")
    parser.add_argument(
        "--datasets-root", default=os.environ.get("MKTN_DATASETS_ROOT"),
        help="folder of dataset directories that re-evaluate scans (default $MKTN_DATASETS_ROOT)",
    )
    parser.add_argument(
        "--checkpoint", action="append", default=[], dest="checkpoints",
        help="checkpoint re-evaluate scores on every dataset (repeatable; default: every best.pt under <work>/runs)",
    )
    parser.add_argument(
        "--dask", default=os.environ.get("MKTN_DASK_ADDRESS") or None,
        help="extraction task runner: 'local' (a Dask LocalCluster) or a scheduler address "
        "(default $MKTN_DASK_ADDRESS; unset: a thread pool here)",
    )
    parser.add_argument("--workers", type=int, default=2, help="videos extracted at once (default 2)")
    sched = parser.add_mutually_exclusive_group()
    sched.add_argument(
        "--reevaluate-cron", default="0 3 * * *",
        help="cron schedule of the re-evaluate deployment (default '0 3 * * *', nightly 03:00 UTC)",
    )
    sched.add_argument(
        "--reevaluate-interval", type=float, default=None, metavar="SECONDS",
        help="run re-evaluate every SECONDS instead of on the cron schedule",
    )
    parser.add_argument("--no-schedule", action="store_true", help="create the re-evaluate schedule paused")
    parser.add_argument("--limit", type=int, default=None, help="most flow runs at once (default: no limit)")
    parser.add_argument("--dry-run", action="store_true", help="list the deployments and exit without serving")
    from pipeline.cli import add_storage_option_argument

    add_storage_option_argument(parser)  # the flow runs served here inherit the environment
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flows.deployments import ServeConfig, build_deployments, serve

    cfg = ServeConfig(
        name=args.name,
        work_dir=args.work,
        feature_store=args.feature_store,
        query_store=args.query_store,
        datasets_root=args.datasets_root,
        checkpoints=tuple(args.checkpoints),
        dask=args.dask,
        max_workers=args.workers,
        reevaluate_cron=None if args.reevaluate_interval else args.reevaluate_cron,
        reevaluate_interval_s=args.reevaluate_interval,
        schedule_active=not args.no_schedule,
    )
    if args.dry_run:
        for d in build_deployments(cfg):
            sched = ", ".join(str(s.schedule) for s in (d.schedules or [])) or "on demand"
            print(f"{d.flow_name}/{d.name}  [{sched}]  {d.entrypoint}")
        return 0
    if not os.environ.get("PREFECT_API_URL"):
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            print(
                "mktn serve: PREFECT_API_URL is not set; start a server with `prefect server start` "
                "and `export PREFECT_API_URL=http://127.0.0.1:4200/api` (or `prefect config set ...`)",
                file=sys.stderr,
            )
            return 2
    from pipeline.cli import quiet_third_party

    quiet_third_party(getattr(args, "verbose", 0))  # no httpx line per poll of the server
    serve(cfg, limit=args.limit)
    return 0
