"""Flows on tiny real data under prefect_test_harness: failures, content caching, one-video changes,
resumption, and the cache-key machinery itself.
"""

from __future__ import annotations

import doctest
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real 5-second synthetic H.264 videos and one corrupt .mp4 beside them."""
    from pipeline.synth import build_synth_config, generate_benchmark

    root = tmp_path_factory.mktemp("flow-data")
    cfg = build_synth_config("quick", num_videos=3, min_duration=5.0, max_duration=5.0)
    generate_benchmark(root / "synth", cfg, 1, workers=1, progress=False)
    vdir = root / "synth" / "videos"
    (vdir / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8)
    return vdir


def _run_extract(videos_dir: Path, work: Path, **kw: object) -> tuple[object, dict]:
    from flows.extract import extract_features

    kw.setdefault("max_workers", 2)
    state = extract_features(
        videos_dir=str(videos_dir), dataset="tiny", work_dir=str(work), return_state=True, **kw
    )
    return state, (state.result(raise_on_failure=False) if state.is_completed() else {})


def _count_hashes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the sha256 computations of each file (file name -> count) from now on."""
    import flows.fingerprints
    import storage.fingerprint

    counts: dict[str, int] = {}
    real = storage.fingerprint.file_digest

    def counting(path: object, algorithm: str = "sha256") -> str:
        counts[Path(str(path)).name] = counts.get(Path(str(path)).name, 0) + 1
        return real(path, algorithm)  # type: ignore[arg-type]

    monkeypatch.setattr(storage.fingerprint, "file_digest", counting)
    monkeypatch.setattr(flows.fingerprints, "file_digest", counting)
    return counts


def test_extract_failures_cache_and_one_video_change(
    prefect_harness: str, videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.extract import ExtractionConfig
    from storage.features import FeatureStore

    vdir = tmp_path / "videos"
    shutil.copytree(videos, vdir)
    work = tmp_path / "work"

    # cold: the three good videos extracted, the corrupt one failed and named, the flow Completed;
    # each file hashed once (the flow's fingerprint index; the digest is passed down to extract_one)
    hashed = _count_hashes(monkeypatch)
    state, s = _run_extract(vdir, work)
    assert hashed == {f"synth_000{i}.mp4": 1 for i in range(3)} | {"corrupt.mp4": 1}, hashed
    monkeypatch.undo()
    assert state.is_completed(), state
    assert s["counts"] == {"done": 3, "skipped": 0, "cached": 0, "failed": 1}
    assert set(s["failed"]) == {"corrupt"} and "corrupt" in state.message and "1 failed" in state.message
    assert "not a decodable video" in s["failed"]["corrupt"]
    group = FeatureStore(work / "stores" / "features.zarr").extractor(
        "tiny", ExtractionConfig(dataset="tiny").resolved_extractor_id(), create=False
    )
    assert sorted(group.list_videos()) == ["synth_0000", "synth_0001", "synth_0002"]
    assert group.normalization() is not None
    before = {v: group.read_video(v).frames.copy() for v in group.list_videos()}
    assert (work / "prefect-results").is_dir() and any((work / "prefect-results").iterdir())

    # rerun, nothing changed: every good video is a cache hit, nothing is extracted
    state, s = _run_extract(vdir, work)
    assert s["counts"] == {"done": 0, "skipped": 0, "cached": 3, "failed": 1}

    # one video's content changes (another video's bytes): that video alone is re-extracted
    shutil.copyfile(vdir / "synth_0002.mp4", vdir / "synth_0000.mp4")
    hashed = _count_hashes(monkeypatch)
    state, s = _run_extract(vdir, work)
    assert hashed == {"synth_0000.mp4": 1}, hashed  # only the changed file, once
    monkeypatch.undo()
    assert s["counts"] == {"done": 1, "skipped": 0, "cached": 2, "failed": 0 + 1}
    by_id = {r["video_id"]: r["status"] for r in s["videos"]}
    assert by_id == {"synth_0000": "done", "synth_0001": "cached", "synth_0002": "cached", "corrupt": "failed"}
    after = group.read_video("synth_0000").frames
    np.testing.assert_allclose(after, group.read_video("synth_0002").frames)
    np.testing.assert_array_equal(group.read_video("synth_0001").frames, before["synth_0001"])

    # a cache entry whose output is gone is not trusted: delete the store, everything is redone
    shutil.rmtree(work / "stores")
    state, s = _run_extract(vdir, work)
    assert s["counts"]["done"] == 3 and s["counts"]["cached"] == 0


def test_extract_interrupted_run_resumes(prefect_harness: str, videos: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    # a run that stopped after one video (only it reached the store) ...
    state, s = _run_extract(videos, work, video_ids=["synth_0001"])
    assert s["counts"]["done"] == 1
    # ... run again over everything: only the missing videos are extracted
    state, s = _run_extract(videos, work)
    by_id = {r["video_id"]: r["status"] for r in s["videos"]}
    assert by_id == {"synth_0000": "done", "synth_0001": "cached", "synth_0002": "done", "corrupt": "failed"}


def test_extract_all_failed_is_a_failed_flow(prefect_harness: str, videos: Path, tmp_path: Path) -> None:
    vdir = tmp_path / "bad"
    vdir.mkdir()
    shutil.copyfile(videos / "corrupt.mp4", vdir / "corrupt.mp4")
    (vdir / "empty.mp4").write_bytes(b"")
    state, _ = _run_extract(vdir, tmp_path / "work")
    assert state.is_failed()
    assert "every video failed" in state.message
    assert "corrupt" in state.message and "empty" in state.message


def test_a_hung_video_times_out_by_name_and_the_run_goes_on(
    prefect_harness: str, videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13 item 7: one hung video fails alone, named, not retried; the others complete."""
    import threading
    import time

    import pipeline.extract as extract_mod
    from flows import tasks

    release = threading.Event()

    def hang_on(name: str, real: object) -> object:
        def hanging(path: object, *args: object, **kwargs: object) -> object:
            if Path(str(path)).stem == name:
                while not release.is_set():
                    time.sleep(0.05)
            return real(path, *args, **kwargs)  # type: ignore[operator]

        return hanging

    try:
        # the decoder hangs: the per-video limit inside the task gives up on it
        monkeypatch.setattr(extract_mod, "probe", hang_on("synth_0001", extract_mod.probe))
        t0 = time.monotonic()
        state, s = _run_extract(videos, tmp_path / "w1", extractor={"video_timeout_s": 2})
        assert time.monotonic() - t0 < 120
        assert state.is_completed(), state
        assert s["counts"] == {"done": 2, "skipped": 0, "cached": 0, "failed": 2}
        assert "timed out after 2 s" in s["failed"]["synth_0001"] and "synth_0001" in state.message
        monkeypatch.undo()

        # a hang the per-video limit does not see: the task's own timeout_seconds, not retried
        monkeypatch.setattr(tasks, "TASK_TIMEOUT_SLACK_S", 1.0)
        monkeypatch.setattr(extract_mod, "extract_one", hang_on("synth_0002", extract_mod.extract_one))
        t0 = time.monotonic()
        state, s = _run_extract(videos, tmp_path / "w2", extractor={"video_timeout_s": 2})
        assert time.monotonic() - t0 < 60  # no retries of the timed-out task (2, 10, 30 s delays)
        assert state.is_completed(), state
        assert s["counts"]["done"] == 2 and set(s["failed"]) == {"corrupt", "synth_0002"}
        assert "extract-videos task over synth_0002 timed out after 3 s" in s["failed"]["synth_0002"]
    finally:
        release.set()
    assert tasks.extract_task_timeout({"video_timeout_s": None}, 4) is None
    from pipeline.extract import build_extraction_config

    cfg = build_extraction_config(None, dataset="tiny", defaults={"video_timeout_s": tasks.DEFAULT_VIDEO_TIMEOUT_S})
    assert cfg.video_timeout_s == tasks.DEFAULT_VIDEO_TIMEOUT_S


def test_flow_runs_are_recorded_on_the_temporary_server(prefect_harness: str) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    assert settings.api.url == prefect_harness and prefect_harness.startswith("http://127.0.0.1:")
    assert settings.flows.heartbeat_frequency is None  # nothing on this server reads them

    @flow(name="tiny-on-temporary-server")
    def tiny(x: int) -> int:
        return x + 1

    state = tiny(1, return_state=True)
    assert state.is_completed() and state.result() == 2
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.state is not None and run.state.is_completed()


# --- the cache-key machinery (no server needed) ------------------------------------------


def test_cache_keys_refuse_arrays_and_follow_content() -> None:
    from flows.caching import config_hash, content_key

    base = content_key("t", {"sha": "ab", "path": "/x"}, ["sha"], ["storage"])
    assert base == content_key("t", {"sha": "ab", "path": "/elsewhere"}, ["sha"], ["storage"])
    assert base != content_key("t", {"sha": "ac", "path": "/x"}, ["sha"], ["storage"])
    assert base != content_key("t", {"sha": "ab"}, ["sha"], ["storage", "model"])
    with pytest.raises(TypeError, match=r"t\.sha.*never arrays or tensors"):
        content_key("t", {"sha": np.zeros(3)}, ["sha"], ["storage"])
    with pytest.raises(KeyError, match="'missing' is not a parameter of task 't'"):
        content_key("t", {"sha": "ab"}, ["missing"], ["storage"])
    from pipeline.extract import ExtractionConfig

    a = config_hash(ExtractionConfig(dataset="x"))
    assert a == config_hash(ExtractionConfig(dataset="x")) != config_hash(ExtractionConfig(dataset="x", fps=4.0))


def test_fingerprint_index_rehashes_only_changed_files(tmp_path: Path) -> None:
    import hashlib
    import os

    from flows.fingerprints import FingerprintIndex
    from storage.fingerprint import file_digest

    f = tmp_path / "a.bin"
    f.write_bytes(b"one")
    idx = FingerprintIndex(tmp_path / "fp.json")
    first = idx.digest(f)
    idx.save()
    again = FingerprintIndex(tmp_path / "fp.json")
    assert again.digest(f) == first == file_digest(f)
    st = f.stat()
    f.write_bytes(b"two")  # same size, new content
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert again.digest(f) == file_digest(f) != first
    again.save()
    # same size, content replaced and the old mtime put back (cp -p, rsync -t): ctime and
    # inode still moved, so the file is hashed again
    st = f.stat()
    g = tmp_path / "b.bin"
    g.write_bytes(b"six")
    os.utime(g, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(g, f)
    third = FingerprintIndex(tmp_path / "fp.json")
    assert third.digest(f) == hashlib.sha256(b"six").hexdigest()
    assert third.hashed == [str(f.resolve())]
    # nothing changed: the digest comes from the index, nothing is read
    third.save()
    fourth = FingerprintIndex(tmp_path / "fp.json")
    assert fourth.digest(f) == file_digest(f) and fourth.hashed == []


def test_retry_policy_and_dataset_discovery(tmp_path: Path) -> None:
    import flows.caching
    import flows.retry
    from flows.dataset import discover, parse_annotation_args

    for mod in (flows.retry, flows.caching):
        res = doctest.testmod(mod)
        assert res.attempted > 0 and res.failed == 0, mod.__name__
    root = tmp_path / "ds"
    (root / "videos").mkdir(parents=True)
    (root / "annotations").mkdir()
    for split in ("train", "val", "test"):
        (root / "annotations" / f"{split}.jsonl").write_text("{}\n")
    spec = discover(root)
    assert spec.name == "ds" and spec.format == "jsonl" and set(spec.annotations) == {"train", "val", "test"}
    assert spec.eval_split() == "test"
    got = parse_annotation_args([f"train={root}/annotations/val.jsonl", str(root / "annotations" / "test.jsonl")])
    assert set(got) == {"train", "test"}
    with pytest.raises(ValueError, match="cannot be used as a store key"):
        discover(root, name="../evil")


def test_extract_on_a_dask_local_cluster(prefect_harness: str, videos: Path, tmp_path: Path) -> None:
    """The Dask task runner: a real distributed.LocalCluster (worker processes) runs the tasks."""
    state, s = _run_extract(videos, tmp_path / "work", dask="local", max_workers=1, video_ids=["synth_0000", "synth_0001"])
    assert state.is_completed(), state
    assert s["counts"]["done"] == 2 and s["counts"]["failed"] == 0
    from pipeline.extract import ExtractionConfig
    from storage.features import FeatureStore

    group = FeatureStore(tmp_path / "work" / "stores" / "features.zarr").extractor(
        "tiny", ExtractionConfig(dataset="tiny").resolved_extractor_id(), create=False
    )
    assert group.list_videos() == ["synth_0000", "synth_0001"]
