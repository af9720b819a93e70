"""The extract-features flow under Prefect's own ``prefect_test_harness`` (a throw-away server
and database), beside the other flow tests, which share the temporary server `mktn reproduce`
itself uses: one real video extracted, then a rerun that is a cache hit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_extract_flow_under_prefect_test_harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    from prefect.testing.utilities import prefect_test_harness

    from flows.extract import extract_features
    from pipeline.synth import build_synth_config, generate_benchmark
    from storage.features import FeatureStore

    cfg = build_synth_config("quick", num_videos=1, min_duration=5.0, max_duration=5.0)
    generate_benchmark(tmp_path / "synth", cfg, 3, workers=1, progress=False)
    videos = tmp_path / "synth" / "videos"
    work = tmp_path / "work"
    with prefect_test_harness(server_startup_timeout=180):
        first = extract_features(videos_dir=str(videos), dataset="one", work_dir=str(work),
                                 max_workers=1, return_state=True)
        second = extract_features(videos_dir=str(videos), dataset="one", work_dir=str(work),
                                  max_workers=1, return_state=True)
    assert first.is_completed() and second.is_completed(), (first, second)
    assert first.result()["counts"] == {"done": 1, "skipped": 0, "cached": 0, "failed": 0}
    assert second.result()["counts"] == {"done": 0, "skipped": 0, "cached": 1, "failed": 0}
    store = FeatureStore(work / "stores" / "features.zarr")
    ((dataset, extractor_id),) = store.list_extractors()
    group = store.extractor(dataset, extractor_id, create=False)
    assert dataset == "one" and group.list_videos() == ["synth_0000"]
    assert group.read_video("synth_0000").frames.shape[0] >= 5  # one clip a second, 5 s
