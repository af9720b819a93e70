"""``mktn extract``: decode videos and write 3D-CNN clip and patch features to a Zarr store."""

from __future__ import annotations

import argparse
import sys

from pipeline.backbones import backbone_names


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--videos",
        required=True,
        help="a directory (searched recursively), a .txt list of paths, or one video file",
    )
    parser.add_argument("--store", required=True, help="feature store root: a path or fsspec URL")
    from pipeline.cli import add_storage_option_argument

    add_storage_option_argument(parser)
    parser.add_argument(
        "--backbone",
        default="classic",
        choices=backbone_names(),
        help="3D-CNN architecture, or 'classic' (no network: colour/motion/shape descriptors, "
        "the measured CPU default; docs/features.md)",
    )
    parser.add_argument(
        "--weights", default=None, help="local state dict; omit for seeded random init"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random-init seed when no --weights (default 0)"
    )
    parser.add_argument(
        "--layer",
        default=None,
        help="layer to read; 'a+b' joins layers, and colour, motion, shape, objects, change "
        "(classical descriptors) join any backbone (default: the backbone's; tiny3d: "
        "layer2+layer3+colour+motion+shape+objects, classic: colour+motion+shape+objects)",
    )
    parser.add_argument(
        "--grid", type=int, default=4, help="patch grid side; P = grid^2 (default 4)"
    )
    parser.add_argument(
        "--dataset", default="default", help="dataset name: the store group (default 'default')"
    )
    parser.add_argument("--extractor-id", default=None, help="override the derived extractor id")
    parser.add_argument(
        "--fps", type=float, default=8.0, help="sampling rate in frames/s (default 8)"
    )
    parser.add_argument(
        "--clip-len", type=int, default=None, help="frames per clip (default: the backbone's)"
    )
    parser.add_argument(
        "--stride", type=int, default=None, help="frames between clip starts (default: clip len)"
    )
    parser.add_argument(
        "--resize", type=int, default=None, help="short side before cropping (default: backbone's)"
    )
    parser.add_argument(
        "--crop", type=int, default=None, help="centre crop side (default: backbone's)"
    )
    parser.add_argument(
        "--geometry",
        choices=("crop", "full"),
        default="full",
        help="full: the whole frame resized to --crop x --crop (default); crop: short side to "
        "--resize, then the centre --crop square (cuts the sides of wide frames)",
    )
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument(
        "--background-clips",
        type=int,
        default=3,
        help="clips before each clip whose frames join the `objects` family's background "
        "(default 3; 0: the clip's own frames alone, the features before 2026-12-08)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="clips per batch (default: measured on CPU by a short probe on the first batches, by free memory on CUDA)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: all cores)"
    )
    parser.add_argument("--decode-threads", type=int, default=1, help="decoder threads (default 1)")
    parser.add_argument("--force", action="store_true", help="re-extract even up-to-date videos")
    parser.add_argument(
        "--video-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up on a video that takes longer than this (a hung file) and go on with the "
        "next; it is reported as failed (default: no limit)",
    )
    parser.add_argument(
        "--verify-content", action="store_true", help="hash sources even if size+mtime match"
    )
    parser.add_argument(
        "--no-normalization",
        action="store_true",
        help="do not (re)compute the per-dimension normalisation statistics at the end",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--dask",
        default=None,
        metavar="ADDRESS",
        help="extract on Dask workers: a scheduler address (tcp://host:8786) or 'local' "
        "(a LocalCluster of --dask-workers processes); --store and --videos must be reachable "
        "from every worker (docs/deploy.md)",
    )
    parser.add_argument(
        "--dask-workers", type=int, default=2, help="worker processes for --dask local (default 2)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.cli import store_write_exit
    from pipeline.extract import ExtractionConfig, extract_videos, find_videos
    from storage.features import FeatureStore

    try:
        config = ExtractionConfig(
            backbone=args.backbone,
            layer=args.layer,
            grid=args.grid,
            weights=args.weights,
            seed=args.seed,
            fps=args.fps,
            clip_len=args.clip_len,
            stride=args.stride,
            resize=args.resize,
            crop=args.crop,
            geometry=args.geometry,
            dtype=args.dtype,
            background_clips=args.background_clips,
            dataset=args.dataset,
            extractor_id=args.extractor_id,
            batch_size=args.batch_size,
            device=args.device,
            threads=args.threads,
            decode_threads=args.decode_threads,
            verify_content=args.verify_content,
            video_timeout_s=args.video_timeout,
        )
        config.sampling()  # validates fps/clip/crop now, not after the first video
        paths = find_videos(args.videos)
        if not paths:
            print(f"mktn extract: no videos found in {args.videos!r}", file=sys.stderr)
            return 2
        store = FeatureStore(args.store)
        if args.dask:
            from pipeline.distributed_extract import dask_client, extract_on_dask

            with dask_client(args.dask, workers=args.dask_workers) as client:
                summary = extract_on_dask(
                    paths,
                    args.store,
                    config,
                    client=client,
                    force=args.force,
                    normalize=False,
                    progress=not args.no_progress,
                    consolidate=False,  # below, after the normalisation statistics
                )
        else:
            summary = extract_videos(
                paths, store, config, force=args.force, progress=not args.no_progress,
                consolidate=False,  # below, after the normalisation statistics
            )
    except (ValueError, FileNotFoundError) as exc:
        print(f"mktn extract: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only or full store location: one line, not a traceback
        return store_write_exit("extract", exc, args.store, what="feature store")
    print(summary.format())
    try:
        group = store.group(config.dataset, summary.extractor_id, create=False)
    except KeyError:  # nothing was ever stored
        return summary.exit_code
    if not args.no_normalization:
        # also when every video was skipped but the statistics are missing (a run that
        # stopped after its videos, e.g. on a full disk): the rerun then writes them
        if summary.done or (group.normalization() is None and group.list_videos()):
            try:
                norm = group.compute_normalization()
            except OSError as exc:
                return store_write_exit(
                    "extract", exc, args.store, what="feature store",
                    doing="writing the normalisation statistics to",
                    note=" (the extracted videos are stored; the rerun skips them and only writes the statistics)",
                )
            print(
                f"normalisation statistics over {norm.num_videos} videos / {norm.num_clips} clips "
                f"stored in {store.root}/features/{config.dataset}/{summary.extractor_id}"
            )
    try:  # the last step: the metadata snapshot a rerun reads instead of every video's
        group.ensure_snapshot()
    except OSError as exc:
        return store_write_exit(
            "extract", exc, args.store, what="feature store",
            doing="writing the metadata snapshot to",
            note=" (the extracted videos are stored; the rerun skips them and writes the snapshot)",
        )
    return summary.exit_code
