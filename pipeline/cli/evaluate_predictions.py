"""``mktn evaluate-predictions``: score a JSONL file of prediction records against annotations."""

from __future__ import annotations

import argparse
import json
import logging
import sys

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", required=True, help="ground-truth annotation file")
    parser.add_argument(
        "--format",
        default="jsonl",
        help="annotation format: jsonl (default), charades-sta, activitynet, tacos",
    )
    parser.add_argument("--durations", default=None, help="Charades CSV with video durations (charades-sta only)")
    parser.add_argument("--split", default=None, help="split name recorded for the annotations (default: from the file)")
    parser.add_argument("--predictions", required=True, help="JSONL prediction records: this project's (query_id, video_id, spans, "
                        "scores) or Moment-DETR/Lighthouse's (qid, query, vid, pred_relevant_windows)")
    parser.add_argument(
        "--nms-iou",
        type=float,
        default=0.5,
        help="temporal NMS IoU threshold applied to each query's ranked spans before top-k (default 0.5)",
    )
    parser.add_argument("--no-nms", action="store_true", help="take the top-k spans as ranked, without NMS")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.metrics import evaluate_predictions, format_metrics, read_predictions
    from pipeline.datasets import load_annotations

    kwargs = {}
    if args.durations:
        kwargs["durations"] = args.durations
    if args.split:
        kwargs["split"] = args.split
    try:
        loaded = load_annotations(args.format, args.annotations, **kwargs)
        predictions = read_predictions(args.predictions)
        metrics = evaluate_predictions(
            predictions, loaded.records, nms_iou=None if args.no_nms else args.nms_iou
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"mktn evaluate-predictions: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=False))
    else:
        print(f"{args.predictions} vs {args.annotations} ({metrics['num_queries']} queries)")
        print(format_metrics(metrics))
    return 0
