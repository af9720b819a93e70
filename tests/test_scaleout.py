"""Issue 15, item 7: both scale-out paths read ``--dask`` and retry by one policy (``pipeline/scaleout.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.scaleout import LOCAL, RETRIES, parse_dask_address


def test_one_address_reading_for_both_paths() -> None:
    from flows.runners import build_task_runner

    assert parse_dask_address("local") == LOCAL
    assert parse_dask_address("sched:8786") == "tcp://sched:8786"
    for bad in ("sched", "tcp://sched"):
        with pytest.raises(ValueError, match="neither 'local' nor a scheduler address"):
            parse_dask_address(bad)
        with pytest.raises(ValueError, match="neither 'local' nor a scheduler address"):
            build_task_runner(bad)  # the flows' runner refuses it with the same words
    pytest.importorskip("prefect_dask")
    assert build_task_runner("sched:8786").address == "tcp://sched:8786"


def test_flows_retry_is_the_shared_policy() -> None:
    import flows.retry
    import pipeline.scaleout

    for name in ("RETRIES", "RETRY_DELAYS", "RETRY_JITTER", "is_transient", "reason_is_transient"):
        assert getattr(flows.retry, name) is getattr(pipeline.scaleout, name), name


def test_dask_path_retries_transient_failures_by_the_shared_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transient failure reason is resubmitted (at most RETRIES times); a deterministic one is not."""
    distributed = pytest.importorskip("distributed")
    import pipeline.distributed_extract as de
    from pipeline.extract import ExtractionConfig, VideoResult

    calls: dict[str, int] = {}

    def fake_extract_one(path, store_root, config, *, video_id, force):  # runs in a worker thread
        calls[video_id] = calls.get(video_id, 0) + 1
        if video_id == "flaky" and calls[video_id] == 1:
            return VideoResult(video_id, path, "failed", "write failed: [Errno 5] Input/output error")
        if video_id == "stale":  # transient every time: given up after RETRIES retries
            return VideoResult(video_id, path, "failed", "OSError: [Errno 116] Stale file handle")
        if video_id == "corrupt":
            return VideoResult(video_id, path, "failed", "not a decodable video")
        return VideoResult(video_id, path, "done", num_clips=3)

    monkeypatch.setattr(de, "extract_one", fake_extract_one)
    monkeypatch.setattr(de, "retry_delay", lambda attempt: 0.0)
    paths = []
    for name in ("flaky", "stale", "corrupt", "fine"):
        (tmp_path / f"{name}.mp4").write_bytes(b"x")
        paths.append(tmp_path / f"{name}.mp4")
    config = ExtractionConfig(backbone="tiny3d", fps=4.0, clip_len=4, resize=32, crop=32, dataset="tiny", threads=1)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        summary = de.extract_on_dask(paths, tmp_path / "features.zarr", config, client=client,
                                     normalize=False, progress=False)
    status = {r.video_id: r.status for r in summary.results}
    assert status == {"flaky": "done", "stale": "failed", "corrupt": "failed", "fine": "done"}
    assert calls == {"flaky": 2, "stale": 1 + RETRIES, "corrupt": 1, "fine": 1}
