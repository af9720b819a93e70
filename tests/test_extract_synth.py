"""Features of `mktn synth` videos line up with their annotations (time axis, durations)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.datasets import load_annotations
from pipeline.extract import ExtractionConfig, extract_videos
from pipeline.synth.benchmark import generate_benchmark
from pipeline.synth.config import build_synth_config
from storage.features import FeatureStore


def test_synth_videos_features_cover_annotated_moments(tmp_path: Path) -> None:
    cfg = build_synth_config("quick", num_videos=3)
    generate_benchmark(tmp_path / "synth", cfg, seed=1, progress=False)
    videos = sorted((tmp_path / "synth" / "videos").glob("*.mp4"))
    config = ExtractionConfig(dataset="synth", batch_size=8)
    summary = extract_videos(videos, tmp_path / "f.zarr", config, progress=False)
    assert len(summary.done) == 3 and not summary.failed

    group = FeatureStore(tmp_path / "f.zarr").extractor("synth", config.resolved_extractor_id())
    norm = group.compute_normalization()
    records = []
    for split in ("train", "val", "test"):
        path = tmp_path / "synth" / "annotations" / f"{split}.jsonl"
        if path.exists() and path.stat().st_size:
            records += load_annotations("jsonl", path).records
    assert records
    for rec in records:
        feats = group.read_video(rec.video_id)
        t = feats.clip_times
        # one clip per second from 0 to the video's duration, which matches the annotation
        assert abs(feats.attrs["duration"] - rec.duration) <= 1.0 / cfg.fps
        assert t[0, 0] == 0.0 and abs(t[-1, 1] - rec.duration) <= 1.0 / cfg.fps
        np.testing.assert_allclose(np.diff(t[:, 0]), 1.0)
        assert 0.0 <= rec.start < rec.end <= t[-1, 1] + 1e-6
        z = norm.standardize_frames(feats.frames)
        assert z.shape == (len(t), 85) and np.isfinite(z).all()
