"""``mktn ablate``: train the full model and each "w/o" variant on the same data and seeds."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    from model.config import MAIN_VARIANTS, VARIANTS
    from pipeline.cli.train import add_config_arguments, add_data_arguments

    add_data_arguments(parser)
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, help="directory for the runs, ablation.md and ablation.json")
    parser.add_argument("--variants", nargs="+", default=list(MAIN_VARIANTS), metavar="NAME",
                        help=f"variants (default the main table: {', '.join(MAIN_VARIANTS)}); "
                             f"all: {', '.join(repr(v) for v in VARIANTS)}")
    parser.add_argument("--all", action="store_true", help="every variant of Tables 3-7")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default 0)")
    parser.add_argument("--no-controls", action="store_true",
                        help="skip the controls (order-aware prior; the full model with videos swapped / "
                             "queries shuffled: two extra evaluation passes per run)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.ablation import run_ablation
    from model.config import VARIANTS
    from pipeline.cli.train import config_from_args, data_from_args

    try:
        cfg = config_from_args(args)
        names = list(VARIANTS) if args.all else args.variants
        unknown = [n for n in names if n not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
        data = data_from_args(args)
        run_ablation(cfg, data, args.out, variants=names, seeds=args.seeds, device=args.device,
                     show_progress=not args.no_progress, controls=not args.no_controls)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"mktn ablate: error: {exc}", file=sys.stderr)
        return 2
    print(open(f"{args.out}/ablation.md").read())
    return 0
