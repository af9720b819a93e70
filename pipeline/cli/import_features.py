"""``mktn import-features``: published clip features (HDF5, .npy/.npz folders, video_features
output) into the Zarr feature store ``mktn extract`` writes (docs/datasets.md)."""

from __future__ import annotations

import argparse
import json
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    from pipeline.importers import FORMATS

    a = parser.add_argument
    a("--format", required=True, choices=sorted(FORMATS),
      help="source layout: " + "; ".join(f"{k}: {v}" for k, v in FORMATS.items()))
    a("--source", required=True, help="the HDF5 file or the folder of the published features")
    a("--store", required=True, help="feature store root: a path or fsspec URL")
    from pipeline.cli import add_storage_option_argument

    add_storage_option_argument(parser)
    a("--dataset", required=True, help="dataset name: the store group (the same name `mktn embed` uses)")
    a("--annotations", nargs="+", default=None, metavar="[SPLIT=]FILE",
      help="annotation files: only the videos they name are imported, and their durations give "
      "the time axis where the source has none")
    a("--format-annotations", default="auto",
      help="annotation format: activitynet, charades-sta, tacos, jsonl (default: sniffed)")
    a("--durations", nargs="+", default=None, metavar="CSV",
      help="video durations (Charades_v1_*.csv) for annotations that carry none")
    t = parser.add_mutually_exclusive_group()
    t.add_argument("--clip-seconds", type=float, default=None, metavar="S",
                   help="clip i covers [i*S, (i+1)*S] seconds (overrides the source's and the annotations')")
    t.add_argument("--fps", type=float, default=None, metavar="F",
                   help="F feature rows per second: the same as --clip-seconds 1/F")
    a("--feature-type", default=None,
      help="video-features only: the <type> of <name>_<type>.npy (rgb+flow joins i3d's two streams; "
      "default: the only type in the folder)")
    a("--extractor-id", default=None, help="store group id (default: <format>@<first 8 of the source sha256>)")
    a("--dtype", choices=("float16", "float32"), default="float16", help="stored dtype (default float16)")
    a("--force", action="store_true", help="re-import videos that are already complete")
    a("--no-normalization", action="store_true", help="do not compute the normalisation statistics")
    a("--json", action="store_true", help="print the summary as JSON")
    a("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.datasets import DatasetError
    from pipeline.importers import FeatureImportError, annotation_durations, import_features
    from storage.features import FeatureStore

    try:
        durations = None
        if args.annotations:
            durations = annotation_durations(args.annotations, args.format_annotations, args.durations)
        summary = import_features(
            args.format, args.source, FeatureStore(args.store), args.dataset, durations=durations,
            clip_seconds=args.clip_seconds, fps=args.fps, extractor_id=args.extractor_id,
            feature_type=args.feature_type, dtype=args.dtype, force=args.force,
            normalize=not args.no_normalization, progress=not args.no_progress,
        )
    except (FeatureImportError, DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"mktn import-features: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.format())
    if not summary.done and not summary.skipped:
        print(f"mktn import-features: no video of {args.source} could be imported; see the lines above",
              file=sys.stderr)
    return summary.exit_code
