"""``mktn reproduce``: raw videos to the final report in one command (the ``reproduce`` Prefect flow).

With no arguments it generates the synthetic benchmark into the work directory
on the first run and runs everything on it; with ``--dataset-videos`` and
``--annotations`` it does the same for that dataset, and with ``--features-from
FORMAT:PATH`` and ``--annotations`` it imports the published features instead of
extracting them (docs/datasets.md). Reruns reuse every cached
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
    parser.add_argument(
        "--synth-domain", default="shapes", choices=("shapes", "street"), metavar="NAME",
        help="without a dataset: which synthetic benchmark to generate and run on, shapes (default) or "
        "street (a top-down street scene with small objects, 4:3 frames); see docs/synthetic.md",
    )
    parser.add_argument("--dataset-videos", default=None, metavar="DIR", help="folder of the dataset's raw videos")
    parser.add_argument(
        "--features-from", default=None, metavar="FORMAT:PATH",
        help="published clip features instead of videos, imported into the run's feature store "
        "(c3d-hdf5, hdf5, npy-dir, npz-dir, video-features; see mktn import-features and "
        "docs/datasets.md), e.g. c3d-hdf5:sub_activitynet_v1-3.c3d.hdf5",
    )
    t = parser.add_mutually_exclusive_group()
    t.add_argument("--clip-seconds", type=float, default=None, metavar="S",
                   help="with --features-from: clip i covers [i*S, (i+1)*S] seconds (default: the "
                   "source's own time axis, else the annotated duration spread over the clips)")
    t.add_argument("--fps", type=float, default=None, metavar="F",
                   help="with --features-from: F feature rows per second (--clip-seconds 1/F)")
    parser.add_argument("--feature-type", default=None,
                        help="with --features-from video-features:...: the <type> of <name>_<type>.npy "
                        "(rgb+flow joins i3d's streams)")
    parser.add_argument(
        "--annotations", nargs="+", default=None, metavar="[SPLIT=]PATH",
        help="annotation files, e.g. train=charades_sta_train.txt test=charades_sta_test.txt "
        "(a bare path's split comes from its name)",
    )
    parser.add_argument("--format", default="auto", help="annotation format: charades-sta, activitynet, tacos, jsonl (default: sniffed)")
    parser.add_argument("--durations", default=None, help="video durations file (Charades_v1_*.csv or JSON) when the format lacks them")
    parser.add_argument("--dataset-name", default=None,
                        help="store name of the dataset (default: the videos folder's parent name; with "
                        "--features-from, the name of the folder holding the features)")
    parser.add_argument("--ablate", action="store_true", help="also train each 'w/o' variant and add the ablation table")
    parser.add_argument("--no-controls", action="store_true",
                        help="skip the controls in the report (video-swapped, order-shuffled: two extra "
                             "evaluation passes; the priors stay)")
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
    parser.add_argument(
        "--video-timeout", type=float, default=None, metavar="SECONDS",
        help="seconds one video may take to extract before it fails as timed out and the run goes "
        "on without it (default 3600; not retried)",
    )
    parser.add_argument(
        "--rehash", action="store_true",
        help="hash every source file again instead of reusing digests of files whose size, mtime, "
        "inode and ctime are unchanged (<work>/fingerprints.json)",
    )
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON")
    from pipeline.cli import add_storage_option_argument

    add_storage_option_argument(parser)  # for $MKTN_FEATURE_STORE / $MKTN_QUERY_STORE URLs
    parser.set_defaults(func=run)


def _imported_dataset(args: argparse.Namespace) -> dict | None:
    """The ``DatasetSpec`` dict of ``--features-from``; None (after one line on stderr) when unusable."""
    from flows.dataset import DatasetSpec, parse_annotation_args
    from flows.import_features import parse_features_from

    try:
        if args.dataset_videos:
            raise ValueError("give --dataset-videos or --features-from, not both")
        if not args.annotations:
            raise ValueError("--features-from needs --annotations (train=... and test= or val=...)")
        if args.synth_domain != "shapes":
            raise ValueError("--synth-domain picks the synthetic benchmark; it does not apply to --features-from")
        video_only = [flag for flag, value in (("--backbone", args.backbone), ("--weights", args.weights),
                                               ("--dask", args.dask), ("--video-timeout", args.video_timeout))
                      if value is not None]
        if video_only:
            raise ValueError(f"{', '.join(video_only)} set(s) how videos are extracted; "
                             "--features-from imports features instead")
        fmt, path = parse_features_from(args.features_from)
        if not Path(path).exists():
            raise ValueError(f"--features-from {path!r}: no such file or directory")
        annotations = parse_annotation_args(args.annotations)
        missing = [p for p in annotations.values() if not Path(p).is_file()]
        if missing:
            raise ValueError(f"annotation file(s) not found: {missing}")
        # default name: the folder that holds the features file or folder
        name = args.dataset_name or Path(path).parent.name
        features = {"format": fmt, "path": path, "clip_seconds": args.clip_seconds, "fps": args.fps,
                    "feature_type": args.feature_type}
        return DatasetSpec(
            name=name, videos_dir="", annotations=annotations, format=args.format,
            durations=str(Path(args.durations).resolve()) if args.durations else None, features=features,
        ).to_dict()
    except ValueError as exc:
        print(f"mktn reproduce: {exc}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    from flows.dataset import DatasetSpec, parse_annotation_args

    dataset = None
    if args.features_from is None and (args.clip_seconds is not None or args.fps is not None
                                       or args.feature_type is not None):
        print("mktn reproduce: --clip-seconds, --fps and --feature-type apply to --features-from only",
              file=sys.stderr)
        return 2
    if args.features_from is not None:
        dataset = _imported_dataset(args)
        if dataset is None:
            return 2
    elif args.dataset_videos or args.annotations:
        if not (args.dataset_videos and args.annotations):
            print("mktn reproduce: give both --dataset-videos DIR and --annotations FILES", file=sys.stderr)
            return 2
        if args.synth_domain != "shapes":
            print("mktn reproduce: --synth-domain picks the synthetic benchmark; it does not apply to "
                  "--dataset-videos", file=sys.stderr)
            return 2
        videos = Path(args.dataset_videos).resolve()
        if not videos.is_dir():
            print(f"mktn reproduce: --dataset-videos {str(videos)!r} is not a folder", file=sys.stderr)
            return 2
        try:
            annotations = parse_annotation_args(args.annotations)  # one line for a missing file
            name = args.dataset_name or (videos.parent.name if videos.name == "videos" else videos.name)
            dataset = DatasetSpec(
                name=name, videos_dir=str(videos), annotations=annotations, format=args.format,
                durations=str(Path(args.durations).resolve()) if args.durations else None,
            ).to_dict()
        except ValueError as exc:
            print(f"mktn reproduce: {exc}", file=sys.stderr)
            return 2
    extractor = {k: v for k, v in {"backbone": args.backbone, "weights": args.weights,
                                    "video_timeout_s": args.video_timeout}.items() if v}
    encoder = {"vectors": {"path": str(Path(args.glove).resolve())}} if args.glove else None

    from flows.server import start_if_needed, using_api
    from pipeline.cli import quiet_third_party

    if args.rehash:
        from flows.workspace import Workspace

        Workspace.at(args.work).fingerprint_index.unlink(missing_ok=True)

    t0 = time.perf_counter()
    # Without PREFECT_API_URL the run needs a temporary local Prefect server: start it now, so
    # its ~4.5 s boot overlaps the imports below instead of following them (flows/server.py)
    server = start_if_needed()
    timings: dict[str, float] = {}
    try:
        from flows.reproduce import preload, reproduce

        if server is not None:
            preload()  # what the flow would import anyway, while the server boots
        timings["imports_s"] = time.perf_counter() - t0
        with using_api(server):
            timings["server_wait_s"] = time.perf_counter() - t0 - timings["imports_s"]
            quiet_third_party(getattr(args, "verbose", 0))  # Prefect's logging set-up may have reset them
            t_flow = time.perf_counter()
            try:
                summary = reproduce(
                    work_dir=args.work, dataset=dataset, quick=args.quick, ablate=args.ablate,
                    preset=args.preset, overrides=args.overrides or None, epochs=args.epochs,
                    extractor=extractor or None, encoder=encoder, dask=args.dask,
                    max_workers=args.workers, synth_domain=args.synth_domain,
                    controls=not args.no_controls,
                )
            finally:
                timings["flow_s"] = time.perf_counter() - t_flow
                t_stop = time.perf_counter()
        timings["drain_stop_s"] = time.perf_counter() - t_stop
    except Exception as exc:  # the flow's logs above say where; name it here
        print(f"mktn reproduce failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("fix the cause and rerun the same command: finished steps are reused", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()  # already stopped by using_api unless the imports failed
    wall = timings["flow_s"]
    if server is not None and server.ready_after is not None:
        timings["server_boot_s"] = server.ready_after
    timings = {k: round(v, 2) for k, v in timings.items()}
    if args.json:
        print(json.dumps({**summary, "wall_seconds": round(wall, 2), "timings": timings}, indent=2, default=str))
    else:
        m = summary["metrics"]
        print(
            f"\nMKTN on {summary['dataset']}: R1@0.5 {m['R1@0.5']:.2f}  R1@0.7 {m['R1@0.7']:.2f}  "
            f"R5@0.5 {m['R5@0.5']:.2f}  mIoU {m['mIoU']:.2f}  ({int(m['num_queries'])} queries, {wall:.0f} s)"
        )
        print(f"report:  {summary['report']}")
        if summary.get("report_html"):
            print(f"page:    {summary['report_html']}  (open in a browser: players and timelines)")
        print(f"metrics: {summary['metrics_json']}")
        failed = summary["extraction"]["failed"]
        if failed:
            verb = "could not be imported" if summary["extraction"].get("imported") else "failed to extract"
            print(f"warning: {len(failed)} video(s) {verb}: {', '.join(sorted(failed))}")
    return 0
