"""``mktn export-features``: a store's clip features as files other grounding tools read."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    from pipeline.importers import EXPORT_FORMATS

    a = parser.add_argument
    a("--store", required=True, help="feature store root: a path or fsspec URL")
    from pipeline.cli import add_storage_option_argument

    add_storage_option_argument(parser)
    a("--dataset", required=True, help="dataset group in the store")
    a("--extractor", default=None, help="extractor id (default: the dataset's only one)")
    a("--format", required=True, choices=EXPORT_FORMATS,
      help="npz-dir: <vid>.npz with 'features' [T, D] and 'clip_times' [T, 2] (Moment-DETR, "
      "Lighthouse); npy-dir: <vid>.npy [T, D] with the time axis in clip_times.npz")
    a("--out", required=True, help="output folder (created)")
    a("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.importers import FeatureImportError, export_features
    from storage.features import FeatureStore

    root = str(args.store)
    if "://" not in root and not Path(root).exists():
        print(f"mktn export-features: feature store {root!r} does not exist; check the path",
              file=sys.stderr)
        return 2
    try:
        summary = export_features(FeatureStore(root), args.dataset, args.out, args.format,
                                  extractor_id=args.extractor, progress=not args.no_progress)
    except (FeatureImportError, ValueError, KeyError) as exc:
        print(f"mktn export-features: {exc}", file=sys.stderr)
        return 2
    print(f"exported {summary.videos} videos (width {summary.feature_dim}) as {summary.format} to {summary.out}")
    return 0
