"""Sizing plan for the real benchmarks: videos, hours, C3D clips, store size, extraction time.

Everything is computed, not guessed:

- videos and durations from the annotation files (``pipeline.datasets.load_annotations``;
  Charades-STA durations from the Charades CSV ``length`` column, TACoS frame counts and
  fps from its JSON); a video in several splits (ActivityNet val_1/val_2) counts once,
  because its features are extracted once;
- clips per video with the same rule as the extractor (``pipeline.video.plan_clips``):
  ``clip_len``-frame clips every ``stride`` frames at the sampling rate, the last one padded;
- store bytes from the store's layout (``storage.features``: frames [T, D], patches
  [T, P, D] and clip_times [T, 2] float64), uncompressed, float16 features;
- C3D FLOPs per clip by ``torch.utils.flop_counter.FlopCounterMode`` on the real C3D of
  ``pipeline.backbones`` (on the meta device: shapes only, no compute);
- GPU hours = clips x FLOPs per clip / (peak dense fp16 FLOP/s x utilisation), both stated
  on the command line (defaults: H100 SXM 989 TFLOPS dense fp16/bf16, 35 %);
- CPU decode core-hours = source frames / frames decoded per second on one core, measured
  here with ``pipeline.video.ClipStream`` on a real video (``--decode-video``), or given.

    python bench/sizing.py --data ../shared/data --decode-video ../shared/data/videos/v_ZNVhz7ctTq0.mp4
    python bench/sizing.py --data ../shared/data --stride 8 --json sizing.json

Frame rates: TACoS gives its own (JSON ``fps``). Charades-STA and ActivityNet files carry
none; ``--fps-charades`` (default 24: the Charades RGB frame release is at 24 fps) and
``--fps-activitynet`` (default 30: YouTube sources, mostly 29.97/30) say what is assumed,
and the output records it. ``--sample-fps`` instead samples every dataset at one rate, as
``mktn extract --fps`` does.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

GIB = 1024**3

# name -> (format, {split: relative path}) under --data. Order: the order of the papers' tables.
DATASETS: dict[str, tuple[str, dict[str, str]]] = {
    "charades-sta": (
        "charades-sta",
        {
            "train": "charades-sta/charades_sta_train.txt",
            "test": "charades-sta/charades_sta_test.txt",
        },
    ),
    "activitynet-captions": (
        "activitynet",
        {
            "train": "activitynet-captions/train.json",
            "val_1": "activitynet-captions/val_1.json",
            "val_2": "activitynet-captions/val_2.json",
        },
    ),
    "tacos": (
        "tacos",
        {"train": "tacos/train.json", "val": "tacos/val.json", "test": "tacos/test.json"},
    ),
}


@dataclass(frozen=True)
class Video:
    video_id: str
    duration: float  # seconds
    fps: float  # source frame rate (from the file, or the stated assumption)
    fps_source: str  # "annotation" or "assumed"


@dataclass(frozen=True)
class Sampling:
    """How clips are cut: ``sample_fps`` None = every source frame (the C3D setting)."""

    clip_len: int = 16
    stride: int = 16
    sample_fps: float | None = None


@dataclass(frozen=True)
class StoreLayout:
    """Per-clip feature shapes: frames [D_frame], patches [P, D_patch]."""

    name: str
    frame_dim: int
    patch_dim: int
    grid: int
    bytes_per_value: int = 2  # float16

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def bytes_per_clip(self) -> int:
        feats = (self.frame_dim + self.num_patches * self.patch_dim) * self.bytes_per_value
        return feats + 2 * 8  # clip_times [2] float64


@dataclass
class DatasetSize:
    name: str
    pairs: int
    videos: int
    hours: float
    source_frames: int
    clips: int
    fps_note: str
    splits: dict[str, dict[str, int]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- counting


def num_clips(duration: float, fps: float, clip_len: int, stride: int) -> int:
    """Clips of one video, the rule of ``pipeline.video.plan_clips``.

    >>> num_clips(3.0, 5.0, 4, 4)       # 15 samples: clips at 0, 4, 8, 12 (last one padded)
    4
    >>> num_clips(0.5, 30.0, 16, 16)    # shorter than one clip: one padded clip
    1
    """
    n_samples = max(1, math.ceil(duration * fps - 1e-6))
    if n_samples <= clip_len:
        return 1
    return math.ceil((n_samples - clip_len) / stride) + 1


def load_videos(
    data: Path, name: str, fps_assumed: Mapping[str, float]
) -> tuple[dict[str, Video], dict[str, dict[str, int]], int]:
    """Unique videos of a dataset over all its splits, per-split counts, and the pair count."""
    from pipeline.datasets import load_annotations

    fmt, files = DATASETS[name]
    videos: dict[str, Video] = {}
    splits: dict[str, dict[str, int]] = {}
    pairs = 0
    for split, rel in files.items():
        path = data / rel
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found; --data must be the folder holding charades-sta/, "
                "activitynet-captions/ and tacos/ (the repository's ../shared/data)"
            )
        result = load_annotations(fmt, path, split=split)
        split_videos: set[str] = set()
        for rec in result.records:
            split_videos.add(rec.video_id)
            if rec.video_id in videos:
                continue
            if "fps" in rec.extra:
                fps, source = float(rec.extra["fps"]), "annotation"
                if "num_frames" in rec.extra:
                    duration = float(rec.extra["num_frames"]) / fps
                else:
                    duration = rec.duration
            else:
                fps, source, duration = fps_assumed[name], "assumed", rec.duration
            videos[rec.video_id] = Video(rec.video_id, duration, fps, source)
        pairs += len(result.records)
        splits[split] = {"pairs": len(result.records), "videos": len(split_videos)}
    return videos, splits, pairs


def size_dataset(
    data: Path, name: str, sampling: Sampling, fps_assumed: Mapping[str, float]
) -> DatasetSize:
    videos, splits, pairs = load_videos(data, name, fps_assumed)
    seconds = sum(v.duration for v in videos.values())
    frames = sum(round(v.duration * v.fps) for v in videos.values())
    clips = 0
    for v in videos.values():
        fps = sampling.sample_fps or v.fps
        clips += num_clips(v.duration, fps, sampling.clip_len, sampling.stride)
    sources = {v.fps_source for v in videos.values()}
    if sources == {"annotation"}:
        rates = sorted({v.fps for v in videos.values()})
        note = f"source fps from the annotation file ({rates[0]:g}-{rates[-1]:g})"
    else:
        note = f"source fps assumed {fps_assumed[name]:g} (not in the files)"
    if sampling.sample_fps:
        note += f"; clips sampled at {sampling.sample_fps:g} fps"
    return DatasetSize(name, pairs, len(videos), seconds / 3600, frames, clips, note, splits)


# ----------------------------------------------------------------------------- cost


def c3d_flops_per_clip(grid: int, clip_len: int = 16, crop: int = 112) -> dict[str, float]:
    """FLOPs of one C3D clip, counted by FlopCounterMode on the meta device.

    ``conv5``: the extractor's path (conv1a..conv5b plus the pooling to clip and patch
    features, as ``ClipFeatureExtractor`` runs it); ``fc7``: the extra pool5/fc6/fc7 cost
    of the 4096-d fc7 feature most TSG papers use.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.backbones import C3D, build_extractor

    with torch.device("meta"):
        extractor = build_extractor("c3d", grid=grid)
        x = torch.zeros(1, 3, clip_len, crop, crop)
        with FlopCounterMode(display=False) as conv_counter:
            out = extractor(x)
        net = C3D()
        conv5 = torch.zeros(1, 512, clip_len // 8, crop // 16, crop // 16)
        with FlopCounterMode(display=False) as fc_counter:
            net.fc7_features(conv5)
    assert out["patches"].shape[1] == grid * grid
    return {"conv5": float(conv_counter.get_total_flops()), "fc7_extra": float(fc_counter.get_total_flops())}


def measure_decode_fps(video: Path, repeats: int = 5) -> dict[str, float]:
    """Source frames decoded per second on one decoder thread, with ClipStream at native fps."""
    from pipeline.video import ClipSampling, ClipStream, probe

    info = probe(video)
    sampling = ClipSampling(fps=info.fps, clip_len=16, stride=16, resize=128, crop=112)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = sum(1 for _ in ClipStream(video, sampling, info=info, decode_threads=1).clips())
        best = min(best, time.perf_counter() - t0)
    return {
        "frames_per_s": info.num_frames / best,
        "width": info.width,
        "height": info.height,
        "num_frames": info.num_frames,
        "clips": n,
        "seconds": best,
    }


# ----------------------------------------------------------------------------- report


def build_plan(args: argparse.Namespace) -> dict:
    sampling = Sampling(args.clip_len, args.stride, args.sample_fps)
    fps_assumed = {"charades-sta": args.fps_charades, "activitynet-captions": args.fps_activitynet}
    layouts = [
        StoreLayout(f"c3d conv5, grid {args.grid} (this project's store)", 512, 512, args.grid),
        StoreLayout(f"c3d fc7 4096 + conv5 grid {args.grid}", 4096, 512, args.grid),
        StoreLayout("c3d fc7 4096 + conv5 grid 7 (full map)", 4096, 512, 7),
    ]
    flops = c3d_flops_per_clip(args.grid, args.clip_len)
    rate = args.peak_tflops * 1e12 * args.utilisation
    decode = measure_decode_fps(Path(args.decode_video)) if args.decode_video else None
    decode_fps = decode["frames_per_s"] if decode else args.decode_fps
    datasets = []
    for name in args.datasets:
        size = size_dataset(Path(args.data), name, sampling, fps_assumed)
        row = asdict(size)
        row["store_gib"] = {lay.name: size.clips * lay.bytes_per_clip() / GIB for lay in layouts}
        row["gpu_hours"] = {
            "conv5": size.clips * flops["conv5"] / rate / 3600,
            "fc7": size.clips * (flops["conv5"] + flops["fc7_extra"]) / rate / 3600,
        }
        row["decode_core_hours"] = size.source_frames / decode_fps / 3600 if decode_fps else None
        # One GPU with `cores_per_gpu` decoding cores finishes when the slower side does.
        decode_wall = row["decode_core_hours"] / args.cores_per_gpu if decode_fps else 0.0
        row["hours_per_gpu"] = {k: max(v, decode_wall) for k, v in row["gpu_hours"].items()}
        datasets.append(row)
    return {
        "sampling": asdict(sampling),
        "fps_assumed": fps_assumed,
        "layouts": [{**asdict(lay), "bytes_per_clip": lay.bytes_per_clip()} for lay in layouts],
        "flops_per_clip": flops,
        "gpu": {
            "peak_tflops": args.peak_tflops,
            "utilisation": args.utilisation,
            "cores_per_gpu": args.cores_per_gpu,
        },
        "decode": decode or ({"frames_per_s": args.decode_fps} if args.decode_fps else None),
        "datasets": datasets,
    }


def to_markdown(plan: dict) -> str:
    s = plan["sampling"]
    rate = f"{s['sample_fps']:g} fps" if s["sample_fps"] else "source fps"
    lines = [
        f"Clips: {s['clip_len']} frames every {s['stride']} frames at {rate}, 112x112 crop. "
        f"C3D per clip: {plan['flops_per_clip']['conv5'] / 1e9:.1f} GFLOP to conv5 "
        f"(+{plan['flops_per_clip']['fc7_extra'] / 1e9:.2f} GFLOP for fc6/fc7). "
        f"GPU: {plan['gpu']['peak_tflops']:g} TFLOPS x {plan['gpu']['utilisation']:.0%} utilisation; "
        f"{plan['gpu']['cores_per_gpu']} decoding cores per GPU"
        + (f" at {plan['decode']['frames_per_s']:.0f} frames/s/core." if plan["decode"] else "."),
        "",
        "| dataset | pairs | videos | hours | source frames | clips | GPU compute h (conv5) "
        "| GPU compute h (fc7) | decode core-h | wall h on 1 GPU (conv5) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d in plan["datasets"]:
        dec = f"{d['decode_core_hours']:.1f}" if d["decode_core_hours"] is not None else "-"
        lines.append(
            f"| {d['name']} | {d['pairs']:,} | {d['videos']:,} | {d['hours']:.1f} | "
            f"{d['source_frames']:,} | {d['clips']:,} | {d['gpu_hours']['conv5']:.2f} | "
            f"{d['gpu_hours']['fc7']:.2f} | {dec} | {d['hours_per_gpu']['conv5']:.2f} |"
        )
    lines += ["", "| store layout (float16, uncompressed) | bytes/clip | " + " | ".join(
        d["name"] for d in plan["datasets"]) + " |", "|---|---:|" + "---:|" * len(plan["datasets"])]
    for lay in plan["layouts"]:
        cells = " | ".join(f"{d['store_gib'][lay['name']]:.2f} GiB" for d in plan["datasets"])
        lines.append(f"| {lay['name']} | {lay['bytes_per_clip']:,} | {cells} |")
    lines.append("")
    for d in plan["datasets"]:
        lines.append(f"- {d['name']}: {d['fps_note']}; splits " + ", ".join(
            f"{k} {v['videos']:,} videos / {v['pairs']:,} pairs" for k, v in d["splits"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Sizing plan for Charades-STA, ActivityNet Captions and TACoS")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                   help="folder with charades-sta/, activitynet-captions/, tacos/ (default ../shared/data)")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--clip-len", type=int, default=16, help="frames per clip (C3D: 16)")
    p.add_argument("--stride", type=int, default=16, help="frames between clip starts (16: no overlap)")
    p.add_argument("--sample-fps", type=float, default=None, help="sample every video at this rate")
    p.add_argument("--fps-charades", type=float, default=24.0, help="assumed Charades source fps")
    p.add_argument("--fps-activitynet", type=float, default=30.0, help="assumed ActivityNet source fps")
    p.add_argument("--grid", type=int, default=2, help="patch grid side (P = grid^2)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense fp16 peak (H100 SXM: 989)")
    p.add_argument("--utilisation", type=float, default=0.35, help="fraction of peak reached by C3D")
    p.add_argument("--cores-per-gpu", type=int, default=16, help="CPU cores decoding for each GPU")
    p.add_argument("--decode-video", help="measure decode speed on this video (one decoder thread)")
    p.add_argument("--decode-fps", type=float, default=None, help="or give frames/s per core")
    p.add_argument("--json", help="also write the plan as JSON here")
    args = p.parse_args(argv)
    if not 0 < args.utilisation <= 1:
        p.error(f"--utilisation must be in (0, 1], got {args.utilisation}")
    logging.basicConfig(level=logging.WARNING)
    plan = build_plan(args)
    print(to_markdown(plan))
    if args.json:
        from storage.atomic import atomic_write_json

        atomic_write_json(args.json, plan)
    return 0


if __name__ == "__main__":
    sys.exit(main())
