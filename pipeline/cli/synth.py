"""``mktn synth``: generate the synthetic raw-video benchmark (mp4 videos + JSONL annotations)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    from pipeline.synth.config import DOMAIN_PRESETS, DOMAINS

    sizes = sorted({name for presets in DOMAIN_PRESETS.values() for name in presets})
    parser.add_argument("--out", required=True, help="output directory (videos/, annotations/, synth.json)")
    parser.add_argument(
        "--domain", default="shapes", choices=list(DOMAINS),
        help="generator: shapes (coloured shapes, 112x112) or street (top-down street scene with small "
        "vehicles, pedestrians and dogs, 160x120); default shapes",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same dataset")
    parser.add_argument(
        "--size", default="default", choices=sizes,
        help="size preset (quick: tests; default: the demo; large: shapes only)"
    )
    parser.add_argument("--quick", action="store_const", const="quick", dest="size", help="same as --size quick")
    parser.add_argument("--videos", type=int, default=None, help="number of videos (overrides the preset)")
    parser.add_argument("--min-duration", type=float, default=None, help="shortest video, seconds")
    parser.add_argument("--max-duration", type=float, default=None, help="longest video, seconds")
    parser.add_argument("--fps", type=float, default=None, help="frames per second")
    parser.add_argument(
        "--resolution", type=int, default=None,
        help="frame width in pixels (even; shapes: the square side; street: the height follows at 4:3)",
    )
    parser.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="parallel encoder processes (default: 2)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset made with another config/seed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.synth import build_synth_config, generate_benchmark

    try:
        cfg = build_synth_config(
            args.size,
            args.domain,
            num_videos=args.videos,
            min_duration=args.min_duration,
            max_duration=args.max_duration,
            fps=args.fps,
            size=args.resolution,
        )
        result = generate_benchmark(
            args.out, cfg, args.seed, workers=args.workers, overwrite=args.overwrite, progress=not args.no_progress
        )
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"mktn synth: {exc}", file=sys.stderr)
        return 1
    summary = {
        "out": str(result.out),
        "domain": args.domain,
        "videos": result.num_videos,
        "queries": result.num_queries,
        "total_seconds": result.total_seconds,
        "encoded": result.encoded,
        "skipped": result.skipped,
        "elapsed_seconds": round(result.elapsed, 2),
        "splits": result.stats.get("splits", {}),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"wrote {result.num_videos} {args.domain} videos ({result.total_seconds:.0f} s of video, {result.num_queries} queries) "
            f"to {result.out} in {result.elapsed:.1f} s ({result.encoded} encoded, {result.skipped} already there)"
        )
        for split, c in summary["splits"].items():
            print(f"  {split:5s}: {c['videos']} videos, {c['queries']} queries -> {result.out}/annotations/{split}.jsonl")
    return 0
