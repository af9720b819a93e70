"""Parse + validate time of every reference annotation file (``pipeline.datasets.load_annotations``).

    python bench/datasets_parse.py --data ../shared/data [--repeat 5] [--json out.json]

Prints, per file, pairs read/kept, the best and median wall time and the best CPU time
(``time.process_time``, less sensitive to the other jobs on the machine) of ``--repeat`` loads
(each a fresh read of the file: JSON/CSV parsing, validation and record creation), plus
the load average, since the machine's 2 cores are shared. Figures go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from pipeline.datasets import load_annotations

FILES = [
    ("charades-sta", "charades-sta/charades_sta_train.txt"),
    ("charades-sta", "charades-sta/charades_sta_test.txt"),
    ("activitynet", "activitynet-captions/train.json"),
    ("activitynet", "activitynet-captions/val_1.json"),
    ("activitynet", "activitynet-captions/val_2.json"),
    ("tacos", "tacos/train.json"),
    ("tacos", "tacos/val.json"),
    ("tacos", "tacos/test.json"),
    ("jsonl", "jsonl/charades_test_release.jsonl"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data", help="the reference data folder")
    ap.add_argument("--repeat", type=int, default=5, help="loads per file (default 5)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    root = Path(args.data)
    logging.getLogger("pipeline.datasets").setLevel(logging.ERROR)  # no per-load warnings
    load_before = os.getloadavg()
    rows = []
    for fmt, rel in FILES:
        times, cpu = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            res = load_annotations(fmt, root / rel)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        size_mb = (root / rel).stat().st_size / 1e6
        rows.append(
            {
                "file": rel,
                "format": fmt,
                "mb": round(size_mb, 2),
                "pairs_read": res.report.pairs_read,
                "pairs_kept": res.report.pairs_kept,
                "best_s": round(min(times), 4),
                "median_s": round(statistics.median(times), 4),
                "cpu_best_s": round(min(cpu), 4),
                "pairs_per_s": round(res.report.pairs_read / min(times)),
            }
        )
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "repeat": args.repeat,
    }
    print(
        f"{meta['date']}  {meta['machine']}  load {meta['loadavg_before']} -> {meta['loadavg_after']}"
    )
    print("| file | MB | pairs read / kept | wall best s | wall median s | CPU best s | pairs/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['file']} | {r['mb']} | {r['pairs_read']:,} / {r['pairs_kept']:,} | "
            f"{r['best_s']:.3f} | {r['median_s']:.3f} | {r['cpu_best_s']:.3f} | {r['pairs_per_s']:,} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
