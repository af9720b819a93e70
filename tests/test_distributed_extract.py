"""Extraction over a real Dask LocalCluster (2 worker processes) into one store at a file:// URL.

The store must come out complete and consistent, and hold the same arrays as a
single-process extraction of the same videos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.distributed_extract import extract_on_dask, verify_store
from pipeline.extract import ExtractionConfig, extract_videos
from pipeline.synth.writer import write_mp4
from storage.features import FeatureStore

distributed = pytest.importorskip("distributed")

# tiny3d on 4-frame 32x32 clips at 4 fps: a real backbone, small enough for 2 shared cores.
CONFIG = ExtractionConfig(
    backbone="tiny3d", fps=4.0, clip_len=4, resize=32, crop=32, dataset="tiny", threads=1, batch_size=4
)


def _frames(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    out = []
    for i in range(n):  # a textured frame sliding right, brightness changing with the seed
        frame = np.roll(base, shift=2 * i, axis=1)
        out.append(np.clip(frame.astype(int) + 10 * seed, 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("videos")
    paths = []
    for i, n in enumerate((16, 24, 20, 12)):  # 2-3 s at 8 fps
        p = d / f"vid{i}.mp4"
        write_mp4(p, _frames(i, n), fps=8.0)
        paths.append(p)
    broken = d / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    return [*paths, broken]


@pytest.fixture(scope="module")
def client():  # a distributed.Client
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def test_dask_extraction_matches_single_process(videos: list[Path], client, tmp_path: Path) -> None:
    good = [p.stem for p in videos if p.stem != "broken"]
    url = (tmp_path / "dist.zarr").as_uri()
    assert url.startswith("file://")
    with distributed.get_task_stream(client) as stream:
        summary = extract_on_dask(videos, url, CONFIG, client=client, progress=False)

    assert sorted(r.video_id for r in summary.done) == good
    [failed] = summary.failed
    assert failed.video_id == "broken" and "broken.mp4" in failed.path and failed.reason
    workers = {t["worker"] for t in stream.data if str(t["key"]).startswith("extract-")}
    assert len(workers) == 2, "both worker processes extracted videos"

    eid = CONFIG.resolved_extractor_id()
    check = verify_store(url, CONFIG.dataset, eid, expected=summary.results)
    assert check.ok, check.problems
    assert check.complete == good

    single = extract_videos(videos, tmp_path / "single.zarr", CONFIG, progress=False)
    assert sorted(r.video_id for r in single.done) == good
    dist_group = FeatureStore(url).extractor(CONFIG.dataset, eid, create=False)
    single_group = FeatureStore(tmp_path / "single.zarr").extractor(CONFIG.dataset, eid, create=False)
    for vid in good:
        a, b = dist_group.read_video(vid), single_group.read_video(vid)
        assert a.frames.shape[0] >= 2
        np.testing.assert_array_equal(a.clip_times, b.clip_times)
        np.testing.assert_allclose(a.frames.astype(np.float32), b.frames.astype(np.float32), rtol=0, atol=1e-3)
        np.testing.assert_allclose(a.patches.astype(np.float32), b.patches.astype(np.float32), rtol=0, atol=1e-3)
        assert a.attrs["source_fingerprint"] == b.attrs["source_fingerprint"]
    # The videos differ, so equal arrays above are not equal-by-construction.
    assert not np.allclose(dist_group.read_video("vid0").frames[0], dist_group.read_video("vid1").frames[0])
    # Normalisation statistics were computed once, over all the workers' videos.
    norm = dist_group.attrs["normalization"]
    assert norm["num_videos"] == len(good)

    # A rerun finds every video up to date and extracts nothing.
    again = extract_on_dask(videos[:-1], url, CONFIG, client=client, progress=False)
    assert [r.status for r in again.results] == ["skipped"] * len(good)


def test_crash_leftover_is_reported_then_replaced(videos: list[Path], client, tmp_path: Path) -> None:
    url = (tmp_path / "store.zarr").as_uri()
    summary = extract_on_dask(videos[:2], url, CONFIG, client=client, progress=False)
    assert len(summary.done) == 2
    eid = summary.extractor_id
    group = FeatureStore(url).extractor(CONFIG.dataset, eid, create=False)
    # Simulate a worker killed mid-write of vid2: arrays started, no commit marker.
    v = FeatureStore(url).extractor(CONFIG.dataset, eid)._group.create_group("vid2")
    v.create_array("frames", shape=(3, 256), dtype="float16")
    check = verify_store(url, CONFIG.dataset, eid)
    assert not check.ok and any("vid2: uncommitted" in p for p in check.problems)
    assert not group.is_complete("vid2")

    rerun = extract_on_dask(videos[:3], url, CONFIG, client=client, progress=False)
    assert [r.status for r in rerun.results] == ["skipped", "skipped", "done"]
    assert verify_store(url, CONFIG.dataset, eid, expected=rerun.results).ok


def test_bad_inputs_are_named_before_any_work(videos: list[Path], client, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="in-memory and private to one process"):
        extract_on_dask(videos, "memory://features.zarr", CONFIG, client=client, progress=False)
    dup = tmp_path / "other"
    dup.mkdir()
    copy = dup / "vid0.mp4"
    copy.write_bytes(videos[0].read_bytes())
    summary = extract_on_dask([videos[0], copy], tmp_path / "s.zarr", CONFIG, client=client, progress=False)
    [bad] = summary.failed
    assert "duplicate video id 'vid0'" in bad.reason and str(videos[0]) in bad.reason


def test_mktn_extract_dask_option(videos: list[Path], client, tmp_path: Path, capsys) -> None:
    from pipeline.cli import main

    args = ["extract", "--videos", str(videos[0].parent), "--backbone", "tiny3d", "--fps", "4",
            "--clip-len", "4", "--resize", "32", "--crop", "32", "--dataset", "tiny", "--threads", "1",
            "--batch-size", "4", "--no-progress"]
    store = tmp_path / "cli.zarr"
    rc = main([*args, "--store", str(store), "--dask", client.scheduler.address])
    out = capsys.readouterr().out
    assert rc == 1, "the corrupt video fails the run's exit code, not the others"
    assert "4 done" in out and "FAILED broken" in out and "normalisation statistics over 4 videos" in out
    assert verify_store(store, "tiny", CONFIG.resolved_extractor_id()).complete == [f"vid{i}" for i in range(4)]

    rc = main([*args, "--store", str(tmp_path / "x.zarr"), "--dask", "nohost"])
    assert rc == 2 and "neither 'local' nor a scheduler address" in capsys.readouterr().err
