"""``mktn reproduce``: raw videos to the final report in one command (the ``reproduce`` Prefect flow).

With no arguments it generates the synthetic benchmark into the work directory
on the first run and runs everything on it; with ``--dataset-videos`` and
``--annotations`` it does the same for that dataset. Reruns reuse every cached
step. See docs/flows.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--work", default=None,
        help="work directory: data, stores, runs, report, cached results "
        "(default $MKTN_WORK, else $MKTN_ARTIFACTS, else ./mktn-work)",
    )
    parser.add_argument("--quick", action="store_true", help="the 12-video synthetic set and 3 epochs (a first look, tests)")
    parser.add_argument("--dataset-videos", default=None, metavar="DIR", help="folder of the dataset's raw videos")
    parser.add_argument(
        "--annotations", nargs="+", default=None, metavar="[SPLIT=]PATH",
        help="annotation files, e.g. train=charades_sta_train.txt test=charades_sta_test.txt "
        "(a bare path's split comes from its name)",
    )
    parser.add_argument("--format", default="auto", help="annotation format: charades-sta, activitynet, tacos, jsonl (default: sniffed)")
    parser.add_argument("--durations", default=None, help="video durations file (Charades_v1_*.csv or JSON) when the format lacks them")
    parser.add_argument("--dataset-name", default=None, help="store name of the dataset (default: the videos folder's parent name)")
    parser.add_argument("--ablate", action="store_true", help="also train each 'w/o' variant and add the ablation table")
    parser.add_argument("--preset", default="synthetic", help="model preset (default synthetic)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE", help="model config override (repeatable)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's; 3 with --quick)")
    parser.add_argument("--backbone", default=None, help="extraction backbone (default: the extractor's default, tiny3d)")
    parser.add_argument("--weights", default=None, help="local backbone weights file (default: seeded random init)")
    parser.add_argument("--glove", default=None, help="local GloVe/word2vec file (default: vectors trained on the dataset)")
    parser.add_argument(
        "--dask", default=None, metavar="ADDRESS|local",
        help="spread extraction over Dask: 'local' (a LocalCluster) or a scheduler address",
    )
    parser.add_argument("--workers", type=int, default=2, help="videos extracted at once (default 2)")
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flows.dataset import DatasetSpec, parse_annotation_args

    dataset = None
    if args.dataset_videos or args.annotations:
        if not (args.dataset_videos and args.annotations):
            print("mktn reproduce: give both --dataset-videos DIR and --annotations FILES", file=sys.stderr)
            return 2
        videos = Path(args.dataset_videos).resolve()
        if not videos.is_dir():
            print(f"mktn reproduce: --dataset-videos {str(videos)!r} is not a folder", file=sys.stderr)
            return 2
        try:
            annotations = parse_annotation_args(args.annotations)
            missing = [p for p in annotations.values() if not Path(p).is_file()]
            if missing:
                raise ValueError(f"annotation file(s) not found: {missing}")
            name = args.dataset_name or (videos.parent.name if videos.name == "videos" else videos.name)
            dataset = DatasetSpec(
                name=name, videos_dir=str(videos), annotations=annotations, format=args.format,
                durations=str(Path(args.durations).resolve()) if args.durations else None,
            ).to_dict()
        except ValueError as exc:
            print(f"mktn reproduce: {exc}", file=sys.stderr)
            return 2
    extractor = {k: v for k, v in {"backbone": args.backbone, "weights": args.weights}.items() if v}
    encoder = {"vectors": {"path": str(Path(args.glove).resolve())}} if args.glove else None

    import logging
    import os

    # without PREFECT_API_URL, Prefect starts a temporary local server; its 20 s default
    # start-up limit is too short on a loaded 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    from flows.reproduce import reproduce

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call otherwise
    t0 = time.perf_counter()
    try:
        summary = reproduce(
            work_dir=args.work, dataset=dataset, quick=args.quick, ablate=args.ablate,
            preset=args.preset, overrides=args.overrides or None, epochs=args.epochs,
            extractor=extractor or None, encoder=encoder, dask=args.dask, max_workers=args.workers,
        )
    except Exception as exc:  # noqa: BLE001 - the flow's logs above say where; name it here
        print(f"mktn reproduce failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("fix the cause and rerun the same command: finished steps are reused", file=sys.stderr)
        return 1
    wall = time.perf_counter() - t0
    if args.json:
        print(json.dumps({**summary, "wall_seconds": round(wall, 2)}, indent=2, default=str))
    else:
        m = summary["metrics"]
        print(
            f"\nMKTN on {summary['dataset']}: R1@0.5 {m['R1@0.5']:.2f}  R1@0.7 {m['R1@0.7']:.2f}  "
            f"R5@0.5 {m['R5@0.5']:.2f}  mIoU {m['mIoU']:.2f}  ({int(m['num_queries'])} queries, {wall:.0f} s)"
        )
        print(f"report:  {summary['report']}")
        print(f"metrics: {summary['metrics_json']}")
        failed = summary["extraction"]["failed"]
        if failed:
            print(f"warning: {len(failed)} video(s) failed to extract: {', '.join(sorted(failed))}")
    return 0
