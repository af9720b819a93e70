"""Issue 13, items 5 and 7: the extraction loop holds a video's writer lock around its decode +
extract + write (a second extraction of the same video waits, then skips, computing nothing),
and a hung video times out as one named failure while the others are extracted."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from test_video import make_video

import pipeline.extract as extract_mod
from pipeline.extract import (
    ExtractionConfig,
    ExtractionSummary,
    extract_videos,
    get_model,
    list_videos,
)
from storage.features import FeatureStore

CONFIG = ExtractionConfig(backbone="tiny3d", grid=2, dataset="t", fps=8.0, batch_size=1)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    for name in ("a", "b", "c"):
        make_video(d / f"{name}.mp4", n=24, fps=12)
    return d


def _count_forward(monkeypatch: pytest.MonkeyPatch, delay: float = 0.0) -> list[int]:
    """Count (and optionally slow down) the extractor network's forward passes."""
    model = get_model(CONFIG, torch.device("cpu"))
    calls: list[int] = []
    real = model.forward

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(threading.get_ident())
        if delay:
            time.sleep(delay)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    return calls


def test_two_extractions_of_one_video_compute_it_once(
    videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_forward(monkeypatch, delay=0.2)
    one = [videos / "a.mp4"]
    extract_videos(one, FeatureStore(tmp_path / "alone.zarr"), CONFIG, progress=False)
    per_video = len(calls)
    assert per_video >= 2  # batch_size 1: several passes, so the two runs overlap
    calls.clear()

    root = tmp_path / "s.zarr"
    FeatureStore(root).extractor("t", CONFIG.resolved_extractor_id(), attrs=CONFIG.feature_config())
    start = threading.Barrier(2)
    summaries: list[ExtractionSummary] = []

    def run() -> None:
        start.wait()
        summaries.append(extract_videos(one, FeatureStore(root), CONFIG, progress=False))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    statuses = sorted(s.results[0].status for s in summaries)
    assert statuses == ["done", "skipped"], [s.format() for s in summaries]
    assert len(calls) == per_video, "the second extraction recomputed the features"
    assert len(set(calls)) == 1  # every pass in one thread
    group = FeatureStore(root).extractor("t", CONFIG.resolved_extractor_id(), create=False)
    assert group.list_videos() == ["a"]
    assert not list((root / "features" / "t").rglob(".*.writing"))


def test_a_hung_video_times_out_by_name_and_the_rest_go_on(
    videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_probe = extract_mod.probe

    def hanging_probe(path: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(path).stem == "b":
            while not release.is_set():  # a decoder stuck on a bad file (or a stalled mount)
                time.sleep(0.05)
        return real_probe(path, *args, **kwargs)

    monkeypatch.setattr(extract_mod, "probe", hanging_probe)
    config = dataclasses.replace(CONFIG, batch_size=4, video_timeout_s=1.5)
    root = tmp_path / "s.zarr"
    try:
        t0 = time.monotonic()
        summary = extract_videos(list_videos(videos), FeatureStore(root), config, progress=False)
        took = time.monotonic() - t0
    finally:
        release.set()
    assert sorted(r.video_id for r in summary.done) == ["a", "c"], summary.format()
    [failed] = summary.failed
    assert failed.video_id == "b" and "timed out after 1.5 s" in failed.reason
    assert "TimeoutError" not in failed.reason  # not classified as transient: not retried
    assert "FAILED b (" in summary.format() and summary.exit_code == 1
    assert took < 30
    group = FeatureStore(root).extractor("t", config.resolved_extractor_id(), create=False)
    assert group.list_videos() == ["a", "c"]
    assert group.lock_path("b") is not None and not group.lock_path("b").exists()  # type: ignore[union-attr]

    # the file is fine again: a rerun extracts b alone
    monkeypatch.setattr(extract_mod, "probe", real_probe)
    again = extract_videos(list_videos(videos), FeatureStore(root), config, progress=False)
    assert [r.video_id for r in again.done] == ["b"] and len(again.skipped) == 2


def test_video_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="video timeout must be > 0"):
        dataclasses.replace(CONFIG, video_timeout_s=0).sampling()
