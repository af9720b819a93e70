"""Time ``mktn import-features`` on a 1,000-video ``c3d-hdf5`` file with realistic lengths.

    python bench/import_bench.py [--videos 1000] [--dtype float32] [--keep DIR] [--json out.json]

Writes, in a temporary directory (or ``--keep DIR``), an HDF5 file in the ActivityNet
challenge layout (one group per ``v_<id>`` holding ``c3d_features`` [T, 500]) and an
ActivityNet Captions annotation file naming every video with its duration. Lengths follow
ActivityNet: durations log-normal around two minutes (median ~ 90 s, 5 s to 12.5 min), and
C3D's 16-frame clips every 8 frames at ~30 fps give T = 3.75 rows per second. Then runs
``import_features`` (time axis from the annotations, float16 store, normalisation at the
end: what ``mktn import-features`` does) and prints wall time, videos/s, rows/s and the
source and store sizes. The machine's cores are shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np


def write_source(root: Path, videos: int, dtype: str, seed: int = 0) -> tuple[Path, Path, int]:
    rng = np.random.default_rng(seed)
    durations = np.clip(rng.lognormal(mean=np.log(90.0), sigma=0.75, size=videos), 5.0, 750.0)
    rows = 0
    src = root / "sub_activitynet_v1-3.c3d.hdf5"
    ann: dict[str, dict] = {}
    with h5py.File(src, "w") as f:
        for i, d in enumerate(durations):
            vid = f"v_{i:011d}"
            t = max(1, int(d * 3.75))
            rows += t
            x = rng.normal(scale=2.0, size=(t, 500)).astype(dtype)
            f.create_group(vid).create_dataset("c3d_features", data=x)
            ann[vid] = {"duration": round(float(d), 2), "timestamps": [[0.0, round(float(d) / 2, 2)]],
                        "sentences": [f"someone does thing {i}."]}
    annotations = root / "val_1.json"
    annotations.write_text(json.dumps(ann))
    return src, annotations, rows


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                    help="dtype of the written source file (default float32)")
    ap.add_argument("--keep", default=None, help="work in this folder and keep it")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()

    from pipeline.importers import annotation_durations, import_features
    from storage.features import FeatureStore

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mktn-import-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        src, ann, rows = write_source(root, args.videos, args.dtype)
        write_s = time.perf_counter() - t0
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        durations = annotation_durations([f"val={ann}"], "activitynet")
        summary = import_features("c3d-hdf5", src, FeatureStore(root / "store.zarr"), "activitynet",
                                  durations=durations, progress=False)
        wall = time.perf_counter() - t0
        out = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": f"{os.cpu_count()}-core CPU, shared ({platform.machine()})",
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "videos": len(summary.done),
            "rows": rows,
            "source_dtype": args.dtype,
            "source_mb": round(src.stat().st_size / 2**20, 1),
            "store_mb": round(dir_size(root / "store.zarr") / 2**20, 1),
            "write_source_s": round(write_s, 1),
            "import_s": round(wall, 1),
            "videos_per_s": round(len(summary.done) / wall, 1),
            "rows_per_s": round(rows / wall),
            "failed": len(summary.failed),
        }
        print(json.dumps(out, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
