"""Requests a rerun's metadata pass costs on an S3 feature store, with and without the snapshot.

    python bench/remote_store_bench.py [--videos 50 200] [--json out.json]

Starts moto's S3 server on 127.0.0.1 (``pip install -e '.[test]'``), writes N small videos
into ``s3://bench/features.zarr`` through ``FeatureGroup.write_video`` with the attributes an
extraction records (a source fingerprint of a real small file each), and counts the HTTP
requests the server answers (its access log) for:

* ``rerun checks``: what ``mktn extract``'s rerun does before deciding to skip: open the group,
  then ``pipeline.extract.up_to_date`` for every video;
* ``committed_attrs``: the flows' one-pass read of every committed video's attributes;
* ``read_all``: what training or evaluation loads: list the videos, ``read_video`` each;
* ``consolidate``: writing the snapshot, once, at the end of a run that wrote.

Each with no snapshot (the group as a run's writes leave it) and with one. The feature sizes
do not matter here: only metadata is read. Wall seconds are on loopback (no network latency):
on a real object store each request costs a round trip (~10-50 ms), so the request count is
the figure that carries over.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.extract import up_to_date  # noqa: E402
from storage.features import FeatureStore  # noqa: E402
from storage.fingerprint import fingerprint_file  # noqa: E402

_REQUEST = re.compile(r'"([A-Z]+) (/[^ ]*) HTTP/[0-9.]+" (\d+)')


class RequestLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.requests: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = _REQUEST.search(record.getMessage())
        if m:
            self.requests.append((m.group(1), m.group(2)))


def _count(log: RequestLog, fn: Any) -> dict[str, Any]:
    start, t0 = len(log.requests), time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    reqs = log.requests[start:]
    by_method: dict[str, int] = {}
    for method, _ in reqs:
        by_method[method] = by_method.get(method, 0) + 1
    return {"requests": len(reqs), "by_method": by_method, "wall_s": round(wall, 3)}


def run(n: int, endpoint: str, log: RequestLog, tmp: Path) -> dict[str, Any]:
    options = {"endpoint_url": endpoint, "key": "bench", "secret": "bench", "anon": False}
    url = f"s3://bench/features-{n}-{time.time_ns()}.zarr"
    store = FeatureStore(url, storage_options=options)
    group = store.group("d", "e", attrs={"feature_dim": 16})
    sources: dict[str, Path] = {}
    rng = np.random.default_rng(0)
    for i in range(n):
        vid = f"v{i:04d}"
        src = tmp / f"{n}-{vid}.mp4"
        src.write_bytes(rng.bytes(256))
        sources[vid] = src
        frames = rng.standard_normal((4, 16)).astype(np.float32)
        group.write_video(vid, frames, frames[:, None, :].repeat(4, axis=1),
                          np.stack([np.arange(4.0), np.arange(4.0) + 1], axis=1),
                          {"source_fingerprint": fingerprint_file(src).to_dict()})

    def rerun_checks() -> None:
        g = FeatureStore(url, storage_options=options).group("d", "e", create=False)
        assert all(up_to_date(g, vid, path) for vid, path in sources.items())

    def committed() -> None:
        g = FeatureStore(url, storage_options=options).group("d", "e", create=False)
        assert len(g.committed_attrs()) == n

    def read_all() -> None:
        g = FeatureStore(url, storage_options=options).group("d", "e", create=False)
        for vid in g.list_videos():
            assert g.read_video(vid).num_clips == 4

    out: dict[str, Any] = {"videos": n}
    out["rerun_checks_without"] = _count(log, rerun_checks)
    out["committed_attrs_without"] = _count(log, committed)
    out["read_all_without"] = _count(log, read_all)
    out["consolidate"] = _count(log, lambda: store.consolidate("d", "e"))
    out["rerun_checks_with"] = _count(log, rerun_checks)
    out["committed_attrs_with"] = _count(log, committed)
    out["read_all_with"] = _count(log, read_all)
    return out


def main() -> int:
    from moto.server import ThreadedMotoServer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    log = RequestLog()
    wlog = logging.getLogger("werkzeug")
    wlog.addHandler(log)
    wlog.setLevel(logging.INFO)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench",
                     aws_secret_access_key="bench", region_name="us-east-1").create_bucket(Bucket="bench")
        with tempfile.TemporaryDirectory() as tmp:
            results = [run(n, endpoint, log, Path(tmp)) for n in args.videos]
    finally:
        server.stop()
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "results": results,
    }
    for r in results:
        print(f"{r['videos']} videos:")
        for key in ("rerun_checks_without", "rerun_checks_with", "committed_attrs_without",
                    "committed_attrs_with", "read_all_without", "read_all_with", "consolidate"):
            c = r[key]
            print(f"  {key:24s} {c['requests']:6d} requests {c['by_method']}  {c['wall_s']:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
