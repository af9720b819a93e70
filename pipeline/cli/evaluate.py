"""``mktn evaluate``: predictions of a checkpoint on a split; R@1/R@5 at IoU 0.3/0.5/0.7 and mIoU."""

from __future__ import annotations

import argparse
import json
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    from pipeline.cli.train import add_data_arguments

    parser.add_argument("--checkpoint", required=True, help="a checkpoint from `mktn train` (best.pt)")
    add_data_arguments(parser)
    parser.add_argument("--split", default="test", help="split to evaluate (default test)")
    parser.add_argument("--out", default=None, help="write predictions_<split>.jsonl and metrics_<split>.json here")
    parser.add_argument("--json", action="store_true", help="print only the metrics as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.evaluate import evaluate_checkpoint
    from model.metrics import format_metrics
    from pipeline.cli.train import data_from_args

    try:
        data = data_from_args(args)
        metrics = evaluate_checkpoint(args.checkpoint, data, split=args.split, out_dir=args.out,
                                      device=args.device)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"mktn evaluate: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print(f"split {args.split} ({int(metrics['num_queries'])} queries), top-5 with temporal NMS:")
    print(format_metrics(metrics))
    print(json.dumps(metrics))
    return 0
