"""CPU batch size by measurement (issue 17): the probe's choice, and features that do not
depend on the batch size."""

from __future__ import annotations

import dataclasses
import json
import time
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


def test_noise_does_not_end_the_probe_early() -> None:
    seen: list[int] = []
    # measured: 2 is 0.2 % slower per clip than 1 (noise), 4 is the fastest
    table = {1: 0.8282, 2: 2 * 0.8297, 4: 4 * 0.78}
    assert pick_batch_size(lambda b: (seen.append(b), table[b])[1], warmup=0, trials=1) == 4
    assert seen == [1, 2, 4]
    seen.clear()
    table = {1: 1.0, 2: 2 * 1.06, 4: 4 * 0.5}  # 6 % slower: a real difference, stop
    assert pick_batch_size(lambda b: (seen.append(b), table[b])[1], warmup=0, trials=1) == 1
    assert seen == [1, 2]


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


@pytest.mark.parametrize("backbone", ["tiny3d", "r3d_18", "classic"])
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


# --- the probe's choice remembered between runs ---------------------------------------------

KEY = ("r2plus1d_18", "layer4", 4, 16, 112, 2)


@pytest.fixture
def probe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MKTN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MKTN_BATCH_PROBE_CACHE", "1")
    monkeypatch.setattr(ex, "_PROBES", {})
    return tmp_path / "cache" / "cpu-batch-size.json"


def _measure(probe: BatchSizeProbe, table: dict[int, float]) -> list[int]:
    """Drive ``probe`` with the injected seconds per batch until it decides; the sizes run."""
    run = []
    while probe.chosen is None:
        size = probe.next_size()
        run.append(size)
        probe.record(size, table[size])
    return run


def test_a_second_run_reuses_the_measured_choice(probe_cache: Path) -> None:
    first = ex.cpu_batch_probe(KEY)
    assert first.chosen is None and not probe_cache.exists()
    assert _measure(first, {1: 1.0, 2: 1.6, 4: 3.0}) == [1, 1, 1, 2, 2, 2, 4, 4, 4]
    assert first.chosen == 4 and not first.remembered
    data = json.loads(probe_cache.read_text())  # plain JSON, one entry
    assert data["version"] == 1
    ((key, entry),) = data["entries"].items()
    assert json.loads(key)["backbone"] == "r2plus1d_18" and json.loads(key)["threads"] == 2
    assert entry["chosen"] == 4 and entry["per_clip"] == {"1": 1.0, "2": 0.8, "4": 0.75}

    ex._PROBES.clear()  # a new process
    again = ex.cpu_batch_probe(KEY)
    assert again.remembered and again.chosen == 4 and again.next_size() == 4
    assert again.per_clip == {1: 1.0, 2: 0.8, 4: 0.75}
    again.record(4, 9.0)  # nothing is measured or written again
    assert json.loads(probe_cache.read_text()) == data
    assert ex.cpu_batch_probe(KEY) is again  # one probe per key in a process


def test_the_choice_is_per_input_size_threads_and_torch(
    probe_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _measure(ex.cpu_batch_probe(KEY), {1: 1.0, 2: 1.6, 4: 3.0})
    for other in (KEY[:4] + (128, 2), KEY[:5] + (1,), ("r3d_18",) + KEY[1:]):
        ex._PROBES.clear()
        assert ex.cpu_batch_probe(other).chosen is None, other
    ex._PROBES.clear()
    monkeypatch.setattr(ex.torch, "__version__", "0.0.1")
    assert ex.cpu_batch_probe(KEY).chosen is None
    assert ex.probe_cache_key(*KEY) != ex.probe_cache_key(*KEY, candidates=(1, 2))


def test_the_cache_can_be_turned_off(probe_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _measure(ex.cpu_batch_probe(KEY), {1: 1.0, 2: 1.6, 4: 3.0})
    assert probe_cache.exists()
    monkeypatch.setenv("MKTN_BATCH_PROBE_CACHE", "0")
    ex._PROBES.clear()
    probe = ex.cpu_batch_probe(KEY)
    assert probe.chosen is None  # measured again
    before = probe_cache.read_text()
    _measure(probe, {1: 1.0, 2: 3.0, 4: 3.0})
    assert probe.chosen == 1 and probe_cache.read_text() == before  # and not written


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2]",
        '{"version": 99, "entries": {}}',
        '{"version": 1, "entries": []}',
        "\x00\x01",
    ],
)
def test_a_corrupt_cache_is_ignored_with_a_log_line_and_rewritten(
    probe_cache: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    probe_cache.parent.mkdir(parents=True)
    probe_cache.write_text(text)
    with caplog.at_level("WARNING", logger="pipeline.extract"):
        probe = ex.cpu_batch_probe(KEY)
    assert probe.chosen is None
    assert "ignoring the batch size cache" in caplog.text
    _measure(probe, {1: 1.0, 2: 1.6, 4: 3.0})
    assert json.loads(probe_cache.read_text())["entries"]  # replaced by a good file


def test_bad_or_stale_entries_are_measured_again(
    probe_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = ex.probe_cache_key(*KEY)
    now = time.time()
    for entry, logged in [
        ({"chosen": 8, "per_clip": {}, "measured_at": now}, True),  # not a candidate
        ({"chosen": "4", "per_clip": {}, "measured_at": now}, True),
        ({"chosen": 4, "per_clip": {"x": 1}, "measured_at": now}, True),
        ({"per_clip": {}, "measured_at": now}, True),
        ({"chosen": 4, "per_clip": {}, "measured_at": now - 40 * 86400}, False),  # too old
        ({"chosen": 4, "per_clip": {}, "measured_at": now + 86400}, False),  # clock moved back
    ]:
        probe_cache.parent.mkdir(parents=True, exist_ok=True)
        probe_cache.write_text(json.dumps({"version": 1, "entries": {key: entry}}))
        caplog.clear()
        with caplog.at_level("WARNING", logger="pipeline.extract"):
            assert ex.lookup_probe_choice(key) is None, entry
        assert ("malformed entry" in caplog.text) == logged, entry
    probe_cache.write_text(
        json.dumps({"version": 1, "entries": {key: {"chosen": 2, "measured_at": now}}})
    )
    assert ex.lookup_probe_choice(key).chosen == 2  # type: ignore[union-attr]


def test_an_unwritable_cache_does_not_stop_extraction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MKTN_CACHE_DIR", str(blocker / "sub"))  # a folder under a file
    monkeypatch.setenv("MKTN_BATCH_PROBE_CACHE", "1")
    monkeypatch.setattr(ex, "_PROBES", {})
    with caplog.at_level("WARNING", logger="pipeline.extract"):
        probe = ex.cpu_batch_probe(KEY)
        _measure(probe, {1: 1.0, 2: 1.6, 4: 3.0})
    assert probe.chosen == 4 and "could not remember" in caplog.text


def test_extraction_remembers_and_reuses_the_probe(tmp_path: Path, probe_cache: Path) -> None:
    # 30 one-second clips: enough for the probe to decide (it needs 21 at most)
    videos = [make_video(tmp_path / "long.mp4", n=240, fps=8, w=32, h=32)]
    config = ExtractionConfig(backbone="tiny3d", grid=2, dataset="t", device="cpu")
    extract_videos(videos, FeatureStore(tmp_path / "a.zarr"), config, progress=False)
    (measured,) = ex._PROBES.values()
    assert measured.chosen is not None and not measured.remembered
    assert probe_cache.is_file()
    ex._PROBES.clear()
    extract_videos(videos, FeatureStore(tmp_path / "b.zarr"), config, progress=False)
    (reused,) = ex._PROBES.values()
    assert reused.remembered and reused.chosen == measured.chosen
