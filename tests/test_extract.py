"""Extraction end to end: bad files skipped and reported, resume after kill -9, changed sources."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_video import make_video

from pipeline.cli import main
from pipeline.extract import ExtractionConfig, extract_one, extract_videos, list_videos
from pipeline.video import ClipSampling, plan_clips, probe
from storage.features import FeatureStore

CONFIG = ExtractionConfig(backbone="tiny3d", grid=2, dataset="t", fps=8.0, batch_size=4)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    make_video(d / "a.mp4", n=24, fps=12, w=96, h=72, audio=True)
    make_video(d / "b.mp4", n=40, fps=10, w=64, h=64)
    make_video(d / "c.mp4", n=3, fps=10)  # shorter than one clip
    (d / "zero.mp4").write_bytes(b"")
    (d / "notes.avi").write_text("not a video at all\n")
    good = (d / "b.mp4").read_bytes()
    (d / "trunc.mp4").write_bytes(good[: len(good) // 3])
    return d


def _read_all(store: FeatureStore, config: ExtractionConfig) -> dict[str, tuple]:
    group = store.extractor(config.dataset, config.resolved_extractor_id(), create=False)
    return {
        v: (f.frames, f.patches, f.clip_times)
        for v in group.list_videos()
        for f in [group.read_video(v)]
    }


def test_bad_files_are_reported_and_the_rest_extracted(videos: Path, tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "s.zarr")
    summary = extract_videos(list_videos(videos), store, CONFIG, progress=False)
    assert sorted(r.video_id for r in summary.done) == ["a", "b", "c"]
    failed = {r.video_id: r.reason for r in summary.failed}
    assert set(failed) == {"zero", "notes", "trunc"}
    assert "zero-byte" in failed["zero"] and "not a decodable video" in failed["notes"]
    assert summary.exit_code == 1 and "3 failed" in summary.format()

    group = store.extractor("t", CONFIG.resolved_extractor_id(), create=False)
    assert group.list_videos() == ["a", "b", "c"]
    for vid in ("a", "b", "c"):
        feats = group.read_video(vid)
        plan = plan_clips(probe(videos / f"{vid}.mp4"), CONFIG.sampling())
        np.testing.assert_allclose(feats.clip_times, plan.clip_times)
        dim = CONFIG.feature_config()["feature_dim"]
        assert feats.frames.shape == (plan.num_clips, dim)
        assert feats.patches.shape == (plan.num_clips, 4, dim)
        assert feats.attrs["weights"] == "random-init seed=0"
        assert feats.attrs["source_fingerprint"]["size"] == (videos / f"{vid}.mp4").stat().st_size
        assert feats.attrs["padded_frames"] == plan.padded_frames
    assert group.read_video("c").attrs["padded_clips"] == 1
    assert group.attrs["backbone"] == "tiny3d" and group.attrs["sampling"]["fps"] == 8.0

    again = extract_videos(list_videos(videos), store, CONFIG, progress=False)
    assert sorted(r.video_id for r in again.skipped) == ["a", "b", "c"] and not again.done


def test_changed_source_is_reextracted(tmp_path: Path) -> None:
    src = make_video(tmp_path / "v.mp4", n=16, fps=8)
    store = FeatureStore(f"memory://extract-{time.time_ns()}")
    assert extract_one(src, store, CONFIG).status == "done"
    assert extract_one(src, store, CONFIG).status == "skipped"
    touched = time.time_ns() + 10**9
    os.utime(src, ns=(touched, touched))  # touched, same content
    assert extract_one(src, store, CONFIG).status == "skipped"
    group = store.extractor("t", CONFIG.resolved_extractor_id())
    assert group.video_attrs("v")["source_fingerprint"]["mtime_ns"] == touched
    make_video(src, n=24, fps=8)  # new content and size
    result = extract_one(src, store, CONFIG)
    assert result.status == "done" and result.num_clips == 3
    group = store.extractor("t", CONFIG.resolved_extractor_id())
    assert group.read_video("v").num_clips == 3
    threads = torch.get_num_threads()
    one_thread = dataclasses.replace(CONFIG, threads=1)
    assert extract_one(src, store, one_thread, force=True).status == "done"
    assert torch.get_num_threads() == threads  # the library restores torch's setting


def test_kill_9_then_rerun_equals_uninterrupted_run(tmp_path: Path) -> None:
    vids = tmp_path / "vids"
    vids.mkdir()
    for i in range(6):
        make_video(vids / f"v{i}.mp4", n=120, fps=15, w=112, h=112)
    args = [
        "extract",
        "--videos",
        str(vids),
        "--dataset",
        "t",
        "--fps",
        "8",
        "--batch-size",
        "4",
        "--no-progress",
        "--threads",
        "1",
        "--backbone",
        "tiny3d",
        "--grid",
        "2",
    ]
    # the uninterrupted reference
    assert main([*args, "--store", str(tmp_path / "ref.zarr")]) == 0

    killed = tmp_path / "killed.zarr"
    launcher = "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", launcher, *args, "--store", str(killed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = FeatureStore(killed)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                n = len(store.extractor("t", CONFIG.resolved_extractor_id(), create=False))
            except Exception:  # not created yet
                n = 0
            if n >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "extraction finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    group = store.extractor("t", CONFIG.resolved_extractor_id(), create=False)
    done_before = group.list_videos()
    assert 2 <= len(done_before) < 6

    assert main([*args, "--store", str(killed)]) == 0
    summary_again = extract_videos(list_videos(vids), store, CONFIG, progress=False)
    assert len(summary_again.skipped) == 6
    ref = _read_all(FeatureStore(tmp_path / "ref.zarr"), CONFIG)
    got = _read_all(store, CONFIG)
    assert sorted(got) == sorted(ref) == [f"v{i}" for i in range(6)]
    for vid in ref:
        for a, b in zip(ref[vid], got[vid], strict=True):
            np.testing.assert_array_equal(a, b)


def test_cli_reports_and_exit_codes(
    videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two videos\n{videos / 'a.mp4'}\n{videos / 'zero.mp4'}\n")
    rc = main(
        [
            "extract",
            "--videos",
            str(listing),
            "--store",
            str(tmp_path / "s.zarr"),
            "--dataset",
            "t",
            "--fps",
            "8",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert (
        rc == 1 and "1 done" in out and "FAILED zero" in out and "normalisation statistics" in out
    )
    defaults = ExtractionConfig(dataset="t", fps=8.0)  # what the CLI runs without flags
    group = FeatureStore(tmp_path / "s.zarr").extractor(
        "t", defaults.resolved_extractor_id(), create=False
    )
    norm = group.normalization()
    assert norm is not None and norm.frames_mean.shape == (85,) and norm.num_videos == 1
    rc = main(
        ["extract", "--videos", str(tmp_path / "nowhere"), "--store", str(tmp_path / "s.zarr")]
    )
    assert rc == 2 and "no such directory" in capsys.readouterr().err
    rc = main(
        ["extract", "--videos", str(listing), "--store", str(tmp_path / "s.zarr"), "--crop", "200"]
    )
    assert rc == 2 and "crop <= resize" in capsys.readouterr().err
    # a negative --background-clips: one line, exit 2, nothing written, the earlier group intact
    rc = main(["extract", "--videos", str(listing), "--store", str(tmp_path / "neg.zarr"),
               "--background-clips", "-1"])
    err = capsys.readouterr().err
    assert rc == 2 and "--background-clips must be >= 0" in err and "Traceback" not in err
    assert not (tmp_path / "neg.zarr").exists()
    assert group.normalization() is not None and group.list_videos() == ["a"]


def test_sampling_defaults_follow_the_backbone() -> None:
    assert CONFIG.sampling() == ClipSampling(fps=8.0, clip_len=8, stride=8, resize=128, crop=112,
                                             geometry="full")
    c3d = ExtractionConfig(backbone="c3d", fps=16.0, stride=8)
    assert c3d.sampling().clip_len == 16 and c3d.sampling().stride == 8
    assert c3d.resolved_extractor_id().startswith("c3d-conv5-g4@random0-")
    assert (
        c3d.resolved_extractor_id()
        != ExtractionConfig(backbone="c3d", fps=16.0).resolved_extractor_id()
    )
