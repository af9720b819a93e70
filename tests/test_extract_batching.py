"""CPU batch size by measurement (issue 17): the probe's choice, and features that do not
depend on the batch size."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from test_video import make_video

import pipeline.extract as ex
from pipeline.extract import (
    BatchSizeProbe,
    ExtractionConfig,
    extract_videos,
    pick_batch_size,
    tune_cpu_allocator,
)
from storage.features import FeatureStore


def test_the_batch_size_comes_from_the_injected_measurement() -> None:
    calls: list[int] = []

    def fast_at(best: int):
        def seconds(b: int) -> float:
            calls.append(b)
            return b * (1.0 if b == best else 1.5)

        return seconds

    for best in (1, 2, 4, 8):
        assert pick_batch_size(fast_at(best), (1, 2, 4, 8), warmup=0) == best
    # per clip: 1.0, 0.9, 0.8, 0.95 -> 4; warm-up calls run but are not measured
    calls.clear()
    table = {1: 1.0, 2: 1.8, 4: 3.2, 8: 7.6}
    assert (
        pick_batch_size(lambda b: (calls.append(b), table[b])[1], (1, 2, 4, 8), warmup=1, trials=1)
        == 4
    )
    assert calls == [1, 1, 2, 2, 4, 4, 8, 8]


def test_the_probe_stops_once_a_larger_batch_is_slower_per_clip() -> None:
    seen: list[int] = []
    table = {1: 1.0, 2: 2.4, 4: 1.0, 8: 1.0}  # 2 is slower per clip than 1: stop, keep 1
    assert (
        pick_batch_size(lambda b: (seen.append(b), table[b])[1], (1, 2, 4, 8), warmup=0, trials=2)
        == 1
    )
    assert seen == [1, 1, 2, 2]


def test_the_probe_keeps_the_best_trial_and_ignores_other_sizes() -> None:
    probe = BatchSizeProbe((1, 4), warmup=0, trials=2)
    probe.record(3, 0.01)  # a short last batch: not what was asked, ignored
    assert probe.next_size() == 1
    probe.record(1, 5.0)  # a burst of load elsewhere
    probe.record(1, 1.0)
    probe.record(4, 3.0)
    probe.record(4, 3.6)
    assert probe.chosen == 4 and probe.per_clip == {1: 1.0, 4: 0.75}
    probe.record(1, 0.0)  # decided: nothing changes it
    assert probe.next_size() == 4
    with pytest.raises(ValueError):
        BatchSizeProbe(())
    assert BatchSizeProbe((3,)).chosen == 3


def test_allocator_tuning_is_applied_once_and_can_be_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ex, "_ALLOCATOR", [None])
    monkeypatch.setenv("MKTN_MALLOC_TUNING", "0")
    assert tune_cpu_allocator() is False
    assert tune_cpu_allocator() is False  # remembered


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("videos")
    return [
        make_video(d / "a.mp4", n=45, fps=15, w=96, h=72),
        make_video(d / "b.mp4", n=23, fps=10, w=64, h=64),
        make_video(d / "c.mp4", n=5, fps=10),
    ]


@pytest.mark.parametrize("backbone", ["tiny3d", "r3d_18"])
def test_features_do_not_depend_on_the_batch_size(
    videos: list[Path], tmp_path: Path, backbone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ExtractionConfig(
        backbone=backbone,
        grid=2,
        dataset="t",
        fps=8.0,
        dtype="float32",
        device="cpu",
        crop=32 if backbone == "r3d_18" else None,
        resize=32 if backbone == "r3d_18" else None,
        clip_len=4 if backbone == "r3d_18" else None,
    )
    # the probe (batch_size None) runs the first clips at 1, 2, 4 in turn
    monkeypatch.setattr(ex, "_PROBES", {})
    results = {}
    for bs in (1, 3, 8, None):
        config = dataclasses.replace(base, batch_size=bs)
        store = FeatureStore(tmp_path / f"s{bs}.zarr")
        summary = extract_videos(videos, store, config, progress=False)
        assert not summary.failed and len(summary.done) == 3
        group = store.extractor("t", config.resolved_extractor_id(), create=False)
        results[bs] = {v: group.read_video(v) for v in group.list_videos()}
    assert (
        len({dataclasses.replace(base, batch_size=b).resolved_extractor_id() for b in results}) == 1
    )
    (probe,) = ex._PROBES.values()
    assert probe.per_clip  # it measured
    for bs, feats in results.items():
        for vid, f in feats.items():
            ref = results[1][vid]
            np.testing.assert_allclose(
                f.frames, ref.frames, rtol=1e-4, atol=1e-5, err_msg=f"{bs} {vid}"
            )
            np.testing.assert_allclose(
                f.patches, ref.patches, rtol=1e-4, atol=1e-5, err_msg=f"{bs} {vid}"
            )
            np.testing.assert_array_equal(f.clip_times, ref.clip_times)
