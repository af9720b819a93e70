"""``mktn sweep-alignment``: accuracy and measured alignment across alignment strengths."""

from __future__ import annotations

import argparse
import json
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    from pipeline.cli.train import add_config_arguments, add_data_arguments

    add_data_arguments(parser)
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, help="directory for the runs, sweep.json and sweep.png")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.25, 1.0, 4.0],
                        help="alignment-strength factors (default 0 0.25 1 4)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.sweep import run_sweep
    from pipeline.cli.train import config_from_args, data_from_args

    try:
        cfg = config_from_args(args)
        data = data_from_args(args)
        summary = run_sweep(cfg, data, args.out, strengths=args.strengths, seed=cfg.train.seed,
                            device=args.device, show_progress=not args.no_progress)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"mktn sweep-alignment: error: {exc}", file=sys.stderr)
        return 2
    print(f"{'strength':>9} {'R1@0.5':>7} {'mIoU':>7} {'mutualkNN':>9} {'q->v R@1':>9}")
    for p in summary["points"]:
        print(f"{p['strength']:>9g} {p['metrics']['R1@0.5']:>7.2f} {p['metrics']['mIoU']:>7.2f} "
              f"{p['alignment']['mutual_knn']:>9.3f} {p['alignment']['retrieval_r1']:>9.3f}")
    print(json.dumps({"plot": f"{args.out}/sweep.png", "json": f"{args.out}/sweep.json"}))
    return 0
