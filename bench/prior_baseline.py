"""Prior-only baselines on a synthetic (or any JSONL) benchmark: how far the span prior alone gets.

Each baseline predicts the same normalised span for every test query, whatever
the sentence and the video, fitted on the training split only:

- ``median``: the median normalised start and the median normalised end of train;
- ``mean``: the mean normalised start and end;
- ``best-fixed``: the single fixed normalised span with the highest R@1 at IoU 0.5 on
  train (grid of 0.01, ties broken by train mIoU) -- the strongest prior-only predictor;
- ``kind-median`` (a text prior, for reference): the median normalised span of train
  queries of the same event kind (``extra["event"]["kind"]``, what the verb says), so it
  shows how much the sentence alone, without the video, tells about where the moment is;
- ``model.prior top-5``: the project's own prior row of the ablation table
  (``model.prior.fit_prior``: the five training moments with the highest mean IoU with
  all training moments, after NMS), the only one here with five candidates (R@5).

Scored with ``model.metrics.evaluate_predictions``. Usage::

    python bench/prior_baseline.py --data DIR [--split test] [--json]
    python bench/prior_baseline.py --plan default --seeds 0,1,2,3,4   # annotations only, no pixels
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
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


def _plan_annotations(out: Path, preset: str, seed: int) -> None:
    """Write the annotations a ``mktn synth --size preset --seed seed`` run would write, without videos."""
    from pipeline.synth import build_synth_config
    from pipeline.synth.benchmark import SPLITS, annotation_records, assign_splits, plan_videos

    cfg = build_synth_config(preset)
    rows: dict[str, list[str]] = {s: [] for s in SPLITS}
    for (script, queries), split in zip(plan_videos(cfg, seed), assign_splits(cfg, seed), strict=True):
        rows[split].extend(json.dumps(r) + "\n" for r in annotation_records(script, queries, split))
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for split, lines in rows.items():
        (out / "annotations" / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset directory with annotations/{train,<split>}.jsonl")
    parser.add_argument("--plan", default=None, help="instead of --data: a synth size preset, annotations only")
    parser.add_argument("--seeds", default="0", help="with --plan: comma-separated seeds (default 0)")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    args = parser.parse_args(argv)
    if (args.data is None) == (args.plan is None):
        parser.error("give exactly one of --data DIR or --plan PRESET")
    if args.plan is not None:
        rc = 0
        for seed in [int(x) for x in args.seeds.split(",")]:
            with tempfile.TemporaryDirectory() as tmp:
                _plan_annotations(Path(tmp), args.plan, seed)
                print(f"## plan {args.plan!r}, seed {seed}")
                rc |= _report(Path(tmp), args.split, args.json)
        return rc
    return _report(Path(args.data), args.split, args.json)


def _report(data: Path, split: str, as_json: bool) -> int:
    t0 = time.perf_counter()
    train, test = _load(data, "train"), _load(data, split)
    tr = _normalised(train)
    spans = {
        "median": (float(np.median(tr[:, 0])), float(np.median(tr[:, 1]))),
        "mean": (float(tr[:, 0].mean()), float(tr[:, 1].mean())),
        "best-fixed": best_fixed_span(tr),
    }
    results: dict[str, dict] = {}
    for name, span in spans.items():
        m = evaluate_predictions(predictions_for(span, test), test)
        results[name] = {"span": [round(span[0], 3), round(span[1], 3)], **{k: round(v, 2) for k, v in m.items()}}
    from model.prior import fit_prior, prior_predictions

    m = evaluate_predictions(prior_predictions(fit_prior(train), test), test)
    results["model.prior top-5"] = {"span": None, **{k: round(v, 2) for k, v in m.items()}}
    kinds = [str(r.extra.get("event", {}).get("kind", "")) for r in train]
    if all(kinds):
        by_kind = {k: np.median(tr[[i for i, x in enumerate(kinds) if x == k]], axis=0) for k in set(kinds)}
        overall = np.median(tr, axis=0)
        preds = []
        for r in test:
            span = tuple(by_kind.get(str(r.extra.get("event", {}).get("kind", "")), overall))
            preds.extend(predictions_for((float(span[0]), float(span[1])), [r]))
        m = evaluate_predictions(preds, test)
        results["kind-median"] = {"span": None, **{k: round(v, 2) for k, v in m.items()}}
    meta = {
        "data": str(data),
        "split": split,
        "train_queries": len(train),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if as_json:
        print(json.dumps({"meta": meta, "baselines": results}, indent=2))
        return 0
    print(f"prior-only baselines on {data} ({split}: {results['median']['num_queries']} queries; "
          f"fitted on {len(train)} train queries)")
    print("| baseline | normalised span | R1@0.3 | R1@0.5 | R1@0.7 | mIoU | R5@0.5 |")
    print("|---|---|---|---|---|---|---|")
    for name, row in results.items():
        label = {"kind-median": "per kind", "model.prior top-5": "5 spans"}.get(
            name, f"[{row['span'][0]:.2f}, {row['span'][1]:.2f}]" if row["span"] else ""
        )
        print(f"| {name} | {label} | {row['R1@0.3']:.2f} | {row['R1@0.5']:.2f} | "
              f"{row['R1@0.7']:.2f} | {row['mIoU']:.2f} | {row['R5@0.5']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
