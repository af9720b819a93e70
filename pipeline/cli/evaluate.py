"""``mktn evaluate``: predictions of a checkpoint on a split; R@1/R@5 at IoU 0.3/0.5/0.7, mIoU and
mAP (IoU 0.5, 0.75, average over 0.5:0.05:0.95),
beside the controls (prior, order-aware prior, video-swapped, order-shuffled; ``model.controls``)."""

from __future__ import annotations

import argparse
import json
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    from pipeline.cli.train import add_data_arguments

    parser.add_argument("--checkpoint", required=True, help="a checkpoint from `mktn train` (best.pt)")
    add_data_arguments(parser)
    parser.add_argument("--split", default="test", help="split to evaluate (default test)")
    parser.add_argument("--out", default=None, help="write predictions_<split>.jsonl, predictions_<split>_moment_detr.jsonl "
                        "(Moment-DETR/Lighthouse format) and metrics_<split>.json here")
    parser.add_argument("--no-controls", action="store_true",
                        help="skip the controls (two extra evaluation passes: video-swapped, order-shuffled)")
    parser.add_argument("--json", action="store_true",
                        help="print only the metrics as JSON (with the controls under 'controls')")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.controls import CONTROL_LABELS, controls_summary
    from model.evaluate import evaluate_split
    from model.metrics import format_metrics
    from pipeline.cli.train import data_from_args

    try:
        data = data_from_args(args)
        ev = evaluate_split(args.checkpoint, data, split=args.split, out_dir=args.out, device=args.device,
                            controls=not args.no_controls)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"mktn evaluate: error: {exc}", file=sys.stderr)
        return 2
    metrics = ev.metrics
    if args.json:
        out = dict(metrics)
        if ev.controls is not None:
            out["controls"] = ev.controls
            out["controls_summary"] = controls_summary(metrics, ev.controls)
        print(json.dumps(out, indent=2))
        return 0
    print(f"split {args.split} ({int(metrics['num_queries'])} queries, {int(metrics.get('missing', 0))} "
          f"without features counted as misses), top-5 with temporal NMS, "
          f"{'multi' if ev.multi_pair else 'single'}-pair groups:")
    print(format_metrics(metrics))
    if ev.controls:
        for key, m in ev.controls.items():
            print(f"\ncontrol: {CONTROL_LABELS[key]}")
            print(format_metrics(m))
        print("\n" + controls_summary(metrics, ev.controls))
    print(json.dumps(metrics))
    return 0
