"""bench/sizing.py: the sizing plan's counts agree with the extractor, the store and the files."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_sizing():  # a module
    spec = importlib.util.spec_from_file_location("mktn_bench_sizing", ROOT / "bench" / "sizing.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


sizing = _load_sizing()


@pytest.mark.parametrize(
    ("duration", "fps", "clip_len", "stride"),
    [(14.05, 30.0, 16, 16), (0.4, 30.0, 16, 16), (30.0, 24.0, 16, 8), (3.0, 5.0, 4, 4), (123.4, 29.4, 16, 16)],
)
def test_clip_count_is_the_extractors(duration: float, fps: float, clip_len: int, stride: int) -> None:
    from pipeline.video import ClipSampling, VideoInfo, plan_clips

    n = round(duration * fps)
    info = VideoInfo("v.mp4", n, fps, duration, 320, 240, np.arange(n) / fps, False)
    plan = plan_clips(info, ClipSampling(fps=fps, clip_len=clip_len, stride=stride))
    assert sizing.num_clips(duration, fps, clip_len, stride) == plan.num_clips


def test_c3d_flops_match_the_architecture() -> None:
    """2 x MACs of the eight 3x3x3 convolutions at their feature-map sizes (16x112x112 input)."""
    convs = [(3, 64, 16, 112), (64, 128, 16, 56), (128, 256, 8, 28), (256, 256, 8, 28),
             (256, 512, 4, 14), (512, 512, 4, 14), (512, 512, 2, 7), (512, 512, 2, 7)]
    expected = sum(2 * cin * cout * 27 * t * h * h for cin, cout, t, h in convs)
    flops = sizing.c3d_flops_per_clip(grid=2)
    assert flops["conv5"] == expected
    assert flops["fc7_extra"] == 2 * (8192 * 4096 + 4096 * 4096)
    assert sizing.c3d_flops_per_clip(grid=7)["conv5"] == expected  # pooling is not a FLOP here


def test_bytes_per_clip_is_what_the_feature_store_holds(tmp_path: Path) -> None:
    from storage.features import FeatureStore

    layout = sizing.StoreLayout("conv5 grid 3", frame_dim=512, patch_dim=512, grid=3)
    t = 5
    group = FeatureStore(tmp_path / "f.zarr").extractor("d", "c3d@random0")
    rng = np.random.default_rng(0)
    times = np.stack([np.arange(t), np.arange(t) + 1], axis=1).astype(float)
    group.write_video("v", rng.normal(size=(t, 512)), rng.normal(size=(t, 9, 512)), times)
    got = group.read_video("v")
    assert got.frames.dtype == np.float16
    stored = got.frames.nbytes + got.patches.nbytes + got.clip_times.nbytes
    assert stored == t * layout.bytes_per_clip()


def test_tacos_and_activitynet_counts_come_from_the_files(shared_data: Path) -> None:
    fps = {"charades-sta": 24.0, "activitynet-captions": 30.0}
    tacos = sizing.size_dataset(shared_data, "tacos", sizing.Sampling(), fps)
    raw: dict = {}
    for split in ("train", "val", "test"):
        raw.update(json.loads((shared_data / "tacos" / f"{split}.json").read_text()))
    assert (tacos.videos, tacos.pairs) == (127, 9790 + 4436 + 4001)
    assert tacos.source_frames == sum(int(v["num_frames"]) for v in raw.values())
    assert tacos.clips == sum(
        max(1, math.ceil((int(v["num_frames"]) - 16) / 16) + 1) for v in raw.values()
    )
    assert tacos.hours == pytest.approx(sum(v["num_frames"] / v["fps"] for v in raw.values()) / 3600)

    anet = sizing.size_dataset(shared_data, "activitynet-captions", sizing.Sampling(stride=8), fps)
    ids: set[str] = set()
    for split in ("train", "val_1", "val_2"):
        ids |= set(json.loads((shared_data / "activitynet-captions" / f"{split}.json").read_text()))
    assert anet.videos == len(ids)  # val_2's videos are extracted once, not twice
    assert anet.splits["val_1"] == {"pairs": 17505, "videos": 4917}
    assert "assumed 30" in anet.fps_note


def test_cli_writes_a_plan(tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan.json"
    rc = sizing.main(["--data", str(shared_data), "--datasets", "tacos", "--decode-fps", "1000",
                      "--cores-per-gpu", "4", "--json", str(out)])
    assert rc == 0
    plan = json.loads(out.read_text())
    [row] = plan["datasets"]
    assert row["decode_core_hours"] == pytest.approx(row["source_frames"] / 1000 / 3600)
    assert row["hours_per_gpu"]["conv5"] == pytest.approx(
        max(row["gpu_hours"]["conv5"], row["decode_core_hours"] / 4)
    )
    assert "| tacos | 18,227 | 127 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sizing.main(["--data", str(shared_data), "--utilisation", "1.5"])
