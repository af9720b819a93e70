"""Prior-only baselines on a synthetic (or any JSONL) benchmark: how far the span prior alone gets.

Each baseline predicts the same normalised span for every test query, whatever
the sentence and the video, fitted on the training split only:

- ``median``: the median normalised start and the median normalised end of train;
- ``mean``: the mean normalised start and end;
- ``best-fixed``: the single fixed normalised span with the highest R@1 at IoU 0.5 on
  train (grid of 0.01, ties broken by train mIoU) -- the strongest prior-only predictor.

Scored with ``model.metrics.evaluate_predictions``. Usage::

    python bench/prior_baseline.py --data DIR [--split test] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from model.metrics import evaluate_predictions
from model.spans import normalized_to_seconds, pairwise_temporal_iou
from pipeline.datasets import QueryMoment, load_annotations


def _load(data: Path, split: str) -> list[QueryMoment]:
    path = data / "annotations" / f"{split}.jsonl"
    return load_annotations("jsonl", path).records


def _normalised(records: list[QueryMoment]) -> np.ndarray:
    return np.array([[r.start / r.duration, r.end / r.duration] for r in records])


def best_fixed_span(train: np.ndarray, step: float = 0.01) -> tuple[float, float]:
    """The normalised span maximising train R@1 at IoU 0.5 (ties: higher train mean IoU)."""
    grid = np.round(np.arange(0.0, 1.0 + step / 2, step), 6)
    s, e = np.meshgrid(grid, grid, indexing="ij")
    cand = np.stack([s.ravel(), e.ravel()], axis=1)
    cand = cand[cand[:, 1] - cand[:, 0] >= step]
    iou = pairwise_temporal_iou(cand, train)  # (candidates, queries)
    r05 = (iou >= 0.5 - 1e-9).mean(axis=1)
    miou = iou.mean(axis=1)
    best = np.lexsort((-miou, -r05))[0]
    return float(cand[best, 0]), float(cand[best, 1])


def predictions_for(span: tuple[float, float], records: list[QueryMoment]) -> list[dict]:
    out = []
    for r in records:
        (s, e), = normalized_to_seconds([span], r.duration)
        out.append({"query_id": r.query_id, "video_id": r.video_id, "spans": [[float(s), float(e)]], "scores": [1.0]})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset directory with annotations/{train,<split>}.jsonl")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    data = Path(args.data)
    train, test = _load(data, "train"), _load(data, args.split)
    tr = _normalised(train)
    spans = {
        "median": (float(np.median(tr[:, 0])), float(np.median(tr[:, 1]))),
        "mean": (float(tr[:, 0].mean()), float(tr[:, 1].mean())),
        "best-fixed": best_fixed_span(tr),
    }
    results = {}
    for name, span in spans.items():
        m = evaluate_predictions(predictions_for(span, test), test)
        results[name] = {"span": [round(span[0], 3), round(span[1], 3)], **{k: round(v, 2) for k, v in m.items()}}
    meta = {
        "data": str(data),
        "split": args.split,
        "train_queries": len(train),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if args.json:
        print(json.dumps({"meta": meta, "baselines": results}, indent=2))
        return 0
    print(f"prior-only baselines on {data} ({args.split}: {results['median']['num_queries']} queries; "
          f"fitted on {len(train)} train queries)")
    print("| baseline | normalised span | R1@0.3 | R1@0.5 | R1@0.7 | mIoU |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | [{r['span'][0]:.2f}, {r['span'][1]:.2f}] | {r['R1@0.3']:.2f} | {r['R1@0.5']:.2f} | "
              f"{r['R1@0.7']:.2f} | {r['mIoU']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
