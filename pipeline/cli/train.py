"""``mktn train``: train MKTN on a feature store and a query store.

Also home of the data and config arguments the other model commands share
(``evaluate``, ``ablate``, ``sweep-alignment``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_data_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--features", required=required, help="feature store root (path or fsspec URL), from `mktn extract`")
    g.add_argument("--queries", required=required, help="query store root, from `mktn embed`")
    g.add_argument("--annotations", required=required, nargs="+", metavar="DIR|FILE|SPLIT=FILE",
                   help="annotation directory or files; the split comes from the file name or SPLIT=")
    g.add_argument("--format", default=None, help="annotation format (default: sniffed per file)")
    g.add_argument("--durations", default=None, help="durations CSV/JSON (Charades-STA metadata)")
    g.add_argument("--dataset", default=None, help="dataset group in both stores (default: the only one)")
    g.add_argument("--extractor", default=None, help="extractor id in the feature store (default: the only one)")
    g.add_argument("--encoder", default=None, help="encoder id in the query store (default: the latest)")
    g.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default torch's; 1 is fastest on a busy shared CPU). "
                   "Training is bit-for-bit repeatable for a seed only at a fixed thread count on "
                   "the same machine and torch build (e.g. --threads 1); with the default, two "
                   "identical runs can differ in the 8th digit")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    from pipeline.cli import add_storage_option_argument

    add_storage_option_argument(g)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    from model.config import PRESETS

    g = parser.add_argument_group("configuration")
    g.add_argument("--preset", default="synthetic", choices=sorted(PRESETS), help="named preset (default synthetic)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set model.d_model=256 (repeatable)")
    g.add_argument("--epochs", type=int, default=None, help="shorthand for --set train.epochs=N")
    g.add_argument("--batch-videos", type=int, default=None, help="shorthand for --set train.batch_videos=B")
    g.add_argument("--seed", type=int, default=None, help="shorthand for --set train.seed=N")
    g.add_argument("--single-pair", action="store_true", help="baseline: one query per item (train.multi_pair=false)")


def config_from_args(args: argparse.Namespace) -> Any:
    from model.config import override, preset

    sets = list(args.overrides)
    if args.epochs is not None:
        sets.append(f"train.epochs={args.epochs}")
    if args.batch_videos is not None:
        sets.append(f"train.batch_videos={args.batch_videos}")
    if args.seed is not None:
        sets.append(f"train.seed={args.seed}")
    if getattr(args, "single_pair", False):
        sets.append("train.multi_pair=false")
    return override(preset(args.preset), sets)


def require_stores(args: argparse.Namespace) -> None:
    """Refuse a local --features/--queries path that does not exist, before anything opens it.

    Opening would create an empty store there (a stray ``zarr.json`` from a typo) and then
    fail with a misleading "holds 0 matching groups".
    """
    for root, what, command in ((args.features, "feature", "extract"),
                                (args.queries, "query", "embed")):
        text = str(root)
        local = text[len("file://"):] if text.startswith("file://") else text
        if "://" not in local and not Path(local).exists():
            raise FileNotFoundError(
                f"{what} store {text!r} does not exist; check the path, or create it with "
                f"`mktn {command} --store {text}`"
            )


def data_from_args(args: argparse.Namespace) -> Any:
    import torch

    require_stores(args)

    from model.loader import load_grounding_data, load_records_from_specs

    if args.threads:
        torch.set_num_threads(args.threads)
    records = load_records_from_specs(args.annotations, args.format, args.durations)
    return load_grounding_data(args.features, args.queries, records, dataset=args.dataset,
                               extractor_id=args.extractor, encoder_id=args.encoder,
                               show_progress=not args.no_progress)


def configure(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, help="run directory (checkpoints, log.jsonl, metrics)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    parser.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                        help="also write last.pt every STEPS steps (default: each epoch)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-controls", action="store_true",
                        help="skip the test controls (video-swapped, order-shuffled: two extra evaluation passes)")
    parser.add_argument("--distributed", action="store_true",
                        help="one process of a torchrun job: DistributedDataParallel, video groups "
                        "sharded across ranks, rank 0 writes (NCCL on CUDA, gloo with --device cpu; "
                        "docs/deploy.md)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.metrics import format_metrics
    from model.train import TrainingAborted, train

    ctx = None
    try:
        cfg = config_from_args(args)
        if args.distributed:
            from model.distributed import init_from_env

            ctx = init_from_env("gloo" if args.device == "cpu" else None)
        data = data_from_args(args)
        result = train(cfg, data, args.out, device=args.device, resume=args.resume,
                       checkpoint_every=args.checkpoint_every, show_progress=not args.no_progress,
                       distributed=ctx, controls=not args.no_controls)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, TrainingAborted) as exc:
        print(f"mktn train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if ctx is not None:
            from model.distributed import shutdown

            shutdown(ctx)
    if ctx is not None and not ctx.is_main:
        return 0  # rank 0 reports
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"trained {result.epochs_run} epochs ({result.steps} steps, {result.wall_s:.0f} s) on "
          f"{result.train_queries} queries / {result.train_videos} videos; best epoch {result.best_epoch}"
          + (" (early stop)" if result.stopped_early else ""))
    if result.bad_steps:
        print(f"skipped {result.bad_steps} steps with a non-finite loss")
    print("validation (best epoch):")
    print(format_metrics(result.best_val))
    if result.test is not None:
        print("test (best checkpoint):")
        print(format_metrics(result.test))
    if result.controls and result.test is not None:
        from model.controls import controls_summary

        print(controls_summary(result.test, result.controls))
    if result.selection_split != "val":
        print(f"model selection used the {result.selection_split!r} split: the data has no 'val' split")
    print(f"checkpoint: {result.best_checkpoint}")
    return 0
