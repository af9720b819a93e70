"""Remote stores on a real S3-compatible server (moto's, started on loopback by the fixture).

What is checked: ``mktn extract`` writes a feature store to ``s3://`` with the options given by
``--storage-option``, the features read back equal a local extraction of the same videos, the
run ends with a consolidated metadata snapshot, and a rerun's up-to-date checks read that
snapshot (no request for any video's own metadata) instead of every video's metadata. The
snapshot rule (storage/features.py) on both a local and an S3 store: a write drops it, a
reader holding an old one still sees new videos and never reads a rewritten video's arrays
under stale metadata. Query stores go through the same options.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_video import make_video

from pipeline.cli import build_parser, main
from pipeline.extract import ExtractionConfig, extract_videos, find_videos
from storage.features import FeatureStore
from storage.queries import QueryStore
from storage.remote import STORAGE_OPTIONS_ENV, parse_storage_options

MISSING = "s3 tests need moto[server], boto3 and s3fs (pip install -e '.[test]')"
CONFIG = ExtractionConfig(backbone="tiny3d", grid=2, dataset="t", fps=8.0, batch_size=4)
_REQUEST = re.compile(r'"([A-Z]+) (/[^ ]*) HTTP/[0-9.]+" (\d+)')


class RequestLog(logging.Handler):
    """Every request the moto server answers, as ``(method, path, status)``: read from the
    access log of its werkzeug server (one line per HTTP request)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.requests: list[tuple[str, str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = _REQUEST.search(record.getMessage())
        if m:
            self.requests.append((m.group(1), m.group(2), int(m.group(3))))

    def mark(self) -> int:
        return len(self.requests)

    def since(self, mark: int) -> list[tuple[str, str, int]]:
        return self.requests[mark:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    """A moto S3 server on 127.0.0.1, a bucket, the storage options and the request log."""
    server_mod = pytest.importorskip("moto.server", reason=MISSING)
    boto3 = pytest.importorskip("boto3", reason=MISSING)
    pytest.importorskip("s3fs", reason=MISSING)
    log = RequestLog()
    wlog = logging.getLogger("werkzeug")
    wlog.addHandler(log)  # also keeps werkzeug from adding its own stderr handler
    old_level = wlog.level
    wlog.setLevel(logging.INFO)
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id="testing",
            aws_secret_access_key="testing", region_name="us-east-1",
        ).create_bucket(Bucket="mktn")
        options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing", "anon": False}
        yield {"options": options, "log": log, "bucket": "mktn"}
    finally:
        server.stop()
        wlog.removeHandler(log)
        wlog.setLevel(old_level)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    make_video(d / "a.mp4", n=24, fps=12, w=96, h=72)
    make_video(d / "b.mp4", n=40, fps=10, w=64, h=64)
    make_video(d / "c.mp4", n=16, fps=8)
    return d


def _url(s3: dict[str, Any], name: str) -> str:
    return f"s3://{s3['bucket']}/{name}-{time.time_ns()}.zarr"


def _option_flags(options: dict[str, Any]) -> list[str]:
    flags: list[str] = []
    for key, value in options.items():
        flags += ["--storage-option", f"{key}={json.dumps(value) if isinstance(value, bool) else value}"]
    return flags


def _video_metadata_requests(requests: list[tuple[str, str, int]], videos: list[str]) -> list[str]:
    """The requests for a video's own metadata (``.../<video>/zarr.json``) or arrays."""
    pat = re.compile(r"/(" + "|".join(map(re.escape, videos)) + r")/")
    return [f"{m} {p}" for m, p, _ in requests if pat.search(p)]


def test_extract_to_s3_then_a_rerun_reads_one_snapshot(
    s3: dict[str, Any], videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(STORAGE_OPTIONS_ENV, raising=False)  # restored after the test
    url = _url(s3, "features")
    args = ["extract", "--videos", str(videos), "--store", url, "--backbone", "tiny3d",
            "--grid", "2", "--dataset", "t", "--fps", "8", "--batch-size", "4", "--no-progress",
            *_option_flags(s3["options"])]
    assert main(args) == 0
    eid = CONFIG.resolved_extractor_id()

    # read back with explicit options (the environment's are not needed)
    monkeypatch.delenv(STORAGE_OPTIONS_ENV)
    group = FeatureStore(url, storage_options=s3["options"]).group("t", eid, create=False)
    assert group.has_snapshot, "mktn extract must end with the metadata snapshot"
    assert group.list_videos() == ["a", "b", "c"]
    assert group.normalization() is not None

    # the same videos extracted into a local store give the same features, bit for bit
    local = FeatureStore(tmp_path / "local.zarr")
    extract_videos(find_videos(videos), local, CONFIG, progress=False)
    lgroup = local.group("t", eid, create=False)
    for vid in ("a", "b", "c"):
        remote, here = group.read_video(vid), lgroup.read_video(vid)
        np.testing.assert_array_equal(remote.frames, here.frames)
        np.testing.assert_array_equal(remote.patches, here.patches)
        np.testing.assert_array_equal(remote.clip_times, here.clip_times)
        assert remote.attrs["commit"] == group.video_attrs(vid)["commit"]

    # A rerun skips every video; its checks read the snapshot, never a video's own metadata.
    log = s3["log"]
    mark = log.mark()
    assert main(args) == 0
    rerun = log.since(mark)
    assert _video_metadata_requests(rerun, ["a", "b", "c"]) == []
    assert not [r for r in rerun if r[0] in ("PUT", "POST", "DELETE")], "a rerun writes nothing"
    with_snapshot = len(rerun)

    # Without the snapshot the same rerun reads each video's metadata (and writes a snapshot).
    FeatureStore(url, storage_options=s3["options"]).group("t", eid)._drop_snapshot()
    mark = log.mark()
    assert main(args) == 0
    without = log.since(mark)
    per_video = _video_metadata_requests(without, ["a", "b", "c"])
    assert {v for v in ("a", "b", "c") if any(f"/{v}/zarr.json" in r for r in per_video)} == {
        "a", "b", "c"}
    assert len(without) > with_snapshot
    assert FeatureStore(url, storage_options=s3["options"]).group("t", eid).has_snapshot


@pytest.fixture(params=["local", "s3"])
def store_root(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any] | None]:
    if request.param == "local":
        return str(tmp_path / "store.zarr"), None
    s3 = request.getfixturevalue("s3")
    return _url(s3, "rule"), s3["options"]


def _write(group: Any, vid: str, t: int, value: float, *, overwrite: bool = False) -> None:
    frames = np.full((t, 8), value, np.float32)
    group.write_video(vid, frames, np.repeat(frames[:, None], 4, axis=1),
                      np.stack([np.arange(t), np.arange(t) + 1.0], axis=1), {"value": value},
                      overwrite=overwrite)


def _stored_snapshot(root: str, options: dict[str, Any] | None) -> bool:
    """Whether the group's stored ``zarr.json`` holds a snapshot (a fresh open reads it)."""
    return FeatureStore(root, storage_options=options).group("d", "e").has_snapshot


def test_the_snapshot_rule(store_root: tuple[str, dict[str, Any] | None],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORAGE_OPTIONS_ENV, raising=False)  # `mktn store` sets it; restored after
    root, options = store_root
    store = FeatureStore(root, storage_options=options)
    writer = store.group("d", "e", attrs={"feature_dim": 8})
    for i, vid in enumerate(("v0", "v1", "v2")):
        _write(writer, vid, 3 + i, float(i))
    assert not writer.has_snapshot
    assert store.consolidate("d", "e") and not store.consolidate("d", "e")  # once, then kept

    reader = store.group("d", "e", create=False)  # holds the snapshot from here on
    assert reader.has_snapshot and reader.list_videos() == ["v0", "v1", "v2"]

    # another writer: its first change drops the stored snapshot
    other = store.group("d", "e")
    _write(other, "v3", 2, 3.0)
    _write(other, "v1", 7, 10.0, overwrite=True)  # v1 rewritten with another length
    assert not _stored_snapshot(root, options)

    # the old reader still sees the new video (membership is listed, not taken from the
    # snapshot) and reads the rewritten one as it is now, not under the snapshot's metadata
    assert reader.has_snapshot
    assert reader.list_videos() == ["v0", "v1", "v2", "v3"]
    assert set(reader.committed_attrs()) == {"v0", "v1", "v2", "v3"}
    v1 = reader.read_video("v1")
    assert v1.frames.shape == (7, 8) and float(v1.frames[0, 0]) == 10.0
    assert reader.read_video("v3").attrs["value"] == 3.0

    # an uncommitted leftover (a killed writer) is listed as such and never read as complete
    other._group.create_group("v4")
    assert reader.list_videos(complete_only=False) == ["v0", "v1", "v2", "v3", "v4"]
    assert not reader.is_complete("v4")

    # the run's last step writes a fresh snapshot that knows everything
    assert store.consolidate("d", "e")
    fresh = store.group("d", "e", create=False)
    assert fresh.has_snapshot and fresh.list_videos() == ["v0", "v1", "v2", "v3"]
    assert fresh.read_video("v1").frames.shape == (7, 8)

    # by hand: `mktn store consolidate` rewrites the snapshot of every group of the store
    _write(store.group("d", "e"), "v5", 2, 5.0)
    assert not _stored_snapshot(root, options)
    assert main(["store", "consolidate", "--store", root, *_option_flags(options or {})]) == 0
    again = store.group("d", "e", create=False)
    assert again.has_snapshot and "v5" in again.list_videos()


def test_query_store_on_s3(s3: dict[str, Any]) -> None:
    url = _url(s3, "queries")
    qs = QueryStore(url, storage_options=s3["options"])
    words = [np.ones((2, 3), np.float32), np.full((1, 3), 2.0, np.float32)]
    qs.group("d", "enc").write(["q0", "q1"], [["a", "b"], ["c"]], words,
                               np.eye(2, 4, dtype=np.float32), {"note": "x"})
    qs.set_latest("d", "enc")
    back = QueryStore(url, storage_options=s3["options"])
    assert back.latest_encoder("d") == "enc"
    q1 = back.group("d", "enc").read_query("q1")
    assert q1.tokens == ["c"] and float(q1.words[0, 0]) == 2.0


def test_storage_options_parse_and_errors(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_storage_options(["anon=false", "client_kwargs.region_name=eu-west-1",
                                  "endpoint_url=http://h:9000"]) == {
        "anon": False, "client_kwargs": {"region_name": "eu-west-1"}, "endpoint_url": "http://h:9000"}
    with pytest.raises(ValueError, match="is not KEY=VALUE"):
        parse_storage_options(["endpoint_url"])
    monkeypatch.delenv(STORAGE_OPTIONS_ENV, raising=False)
    assert main(["extract", "--videos", ".", "--store", "s3://b/f.zarr",
                 "--storage-option", "no-equals-sign"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not KEY=VALUE" in err[0]
    monkeypatch.setenv(STORAGE_OPTIONS_ENV, "{not json")
    with pytest.raises(ValueError, match=f"{STORAGE_OPTIONS_ENV} is not JSON"):
        FeatureStore("memory://x.zarr")
    # `mktn store consolidate` on a local root that does not exist: one line, exit 2
    monkeypatch.delenv(STORAGE_OPTIONS_ENV)
    assert main(["store", "consolidate", "--store", "/nonexistent/store.zarr"]) == 2
    assert "does not exist" in capsys.readouterr().err
    # a scheme whose filesystem package is not installed: one line naming it
    with pytest.raises(ValueError, match="needs the gcsfs package, which is not installed"):
        FeatureStore("gs://bucket/features.zarr")


@pytest.mark.parametrize("command", ["extract", "embed", "train", "evaluate", "reproduce",
                                     "import-features", "export-features", "store", "serve",
                                     "ablate", "sweep-alignment"])
def test_every_store_command_takes_storage_options(command: str) -> None:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    assert any("--storage-option" in a.option_strings for a in sub._actions)
