"""Extraction throughput (decode-only, compute-only, end-to-end) and peak memory.

    python bench/extract_bench.py [--backbone tiny3d] [--layer ...] [--synth-size quick]
                                  [--rss-minutes 10] [--json out.json]

1. Generates the synthetic benchmark (``pipeline.synth``, preset ``--synth-size``) in a
   temporary directory, then on the same videos and backbone, in one run:
   decode-only (``ClipStream`` + normalisation to tensors, exactly the reader thread's
   work): sampled frames/s and clips/s; compute-only (the model on pre-made batches of
   the same shape): clips/s; end-to-end (``extract_videos`` into a fresh store): clips/s.
   Overlap efficiency = end-to-end / min(decode-only, compute-only).
2. Writes a ``--rss-minutes`` long 30 fps video (PyAV, 160x120) and extracts it in a
   child process, reporting the child's peak resident memory (``ru_maxrss``).

The machine's cores are shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_long_video(path: Path, minutes: float, fps: int = 30, w: int = 160, h: int = 120) -> None:
    import av

    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    stream.options = {"preset": "ultrafast"}
    rng = np.random.default_rng(0)
    base = rng.integers(60, 190, (h, w, 3), dtype=np.uint8)
    for i in range(int(minutes * 60 * fps)):
        img = base.copy()
        x = (3 * i) % (w - 20)
        img[40:60, x : x + 20] = (220, 40, 40)
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def rss_child(video: str, store: str, backbone: str, layer: str | None) -> None:
    """Run in a child process: extract one video."""
    from pipeline.extract import ExtractionConfig, extract_videos

    config = ExtractionConfig(backbone=backbone, layer=layer, dataset="rss")
    summary = extract_videos([video], store, config, progress=False)
    print(json.dumps({"clips": summary.num_clips, "failed": [r.reason for r in summary.failed]}))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--backbone", default="tiny3d")
    ap.add_argument("--layer", default=None)
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--synth-size", default="quick", help="pipeline.synth preset for the throughput videos"
    )
    ap.add_argument("--synth-videos", type=int, default=30, help="number of synthetic videos")
    ap.add_argument("--repeat", type=int, default=2, help="rounds of the three measurements")
    ap.add_argument("--rss-minutes", type=float, default=10.0, help="0 skips the memory test")
    ap.add_argument("--json", default=None)
    ap.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child[0], args.rss_child[1], args.backbone, args.layer)
        return

    from pipeline.extract import ExtractionConfig, extract_videos, get_model, resolve_device
    from pipeline.synth.benchmark import generate_benchmark
    from pipeline.synth.config import build_synth_config
    from pipeline.video import ClipStream, probe

    config = ExtractionConfig(
        backbone=args.backbone,
        layer=args.layer,
        fps=args.fps,
        batch_size=args.batch_size,
        dataset="bench",
    )
    torch.set_num_threads(os.cpu_count() or 1)
    report: dict = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "config": {k: v for k, v in config.__dict__.items()},
        "load_before": _load(),
    }
    print(f"{report['date']}  {report['machine']}  load {report['load_before']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mktn-extract-bench-") as tmp:
        tmpd = Path(tmp)
        t0 = time.perf_counter()
        generate_benchmark(
            tmpd / "synth",
            build_synth_config(args.synth_size, num_videos=args.synth_videos),
            seed=0,
            progress=False,
        )
        videos = sorted((tmpd / "synth" / "videos").glob("*.mp4"))
        seconds = sum(probe(v).duration for v in videos)
        report["videos"] = {
            "count": len(videos),
            "seconds": round(seconds, 1),
            "synth_s": round(time.perf_counter() - t0, 1),
        }
        print(f"{len(videos)} synthetic videos, {seconds:.0f} s of video", flush=True)

        device = resolve_device("cpu")
        model = get_model(config, device)
        sampling = config.sampling()

        def decode_only() -> tuple[dict, list[np.ndarray]]:
            """The reader thread's work: decode, crop, sample, normalise to tensors."""
            t0, frames, clips, kept = time.perf_counter(), 0, 0, []
            for v in videos:
                stream = ClipStream(v, sampling)
                frames += stream.plan.num_samples
                for batch in stream.batches(args.batch_size):
                    model.normalize(torch.from_numpy(batch.frames))
                    clips += batch.frames.shape[0]
                    if clips <= 1500:  # keep real clips for compute-only (<= ~450 MB)
                        kept.append(batch.frames)
            s = time.perf_counter() - t0
            return {
                "frames_per_s": frames / s,
                "clips_per_s": clips / s,
                "seconds": s,
                "clips": clips,
            }, kept

        def compute_only(kept: list[np.ndarray]) -> dict:
            """The model alone on the same (real, decoded) batches."""
            xs = [model.normalize(torch.from_numpy(b)) for b in kept]
            n = sum(x.shape[0] for x in xs)
            with torch.inference_mode():
                model(xs[0][:2])  # warm-up
                t0 = time.perf_counter()
                for x in xs:
                    model(x)
            s = time.perf_counter() - t0
            return {"clips_per_s": n / s, "seconds": s, "clips": n}

        def end_to_end(i: int) -> dict:
            t0 = time.perf_counter()
            summary = extract_videos(videos, tmpd / f"store{i}.zarr", config, progress=False)
            s = time.perf_counter() - t0
            assert not summary.failed, summary.format()
            return {"clips_per_s": summary.num_clips / s, "seconds": s, "clips": summary.num_clips}

        # Interleave the three measurements and keep each one's best of --repeat: the
        # other jobs on the shared CPU come and go.
        runs: dict[str, list[dict]] = {"decode": [], "compute": [], "e2e": []}
        for i in range(args.repeat):
            dec, kept = decode_only()
            runs["decode"].append(dec)
            runs["compute"].append(compute_only(kept))
            del kept
            runs["e2e"].append(end_to_end(i))
            print(
                f"round {i + 1}: decode {dec['frames_per_s']:.0f} frames/s = {dec['clips_per_s']:.1f} clips/s, compute {runs['compute'][-1]['clips_per_s']:.1f} clips/s, end-to-end {runs['e2e'][-1]['clips_per_s']:.1f} clips/s  (load {_load()})",
                flush=True,
            )
        decode = max(runs["decode"], key=lambda r: r["clips_per_s"])
        compute = max(runs["compute"], key=lambda r: r["clips_per_s"])
        e2e = max(runs["e2e"], key=lambda r: r["clips_per_s"])
        eff = e2e["clips_per_s"] / min(decode["clips_per_s"], compute["clips_per_s"])
        print(
            f"best of {args.repeat}: decode-only {decode['frames_per_s']:.0f} frames/s ({decode['clips_per_s']:.1f} clips/s), compute-only {compute['clips_per_s']:.1f} clips/s, end-to-end {e2e['clips_per_s']:.1f} clips/s; overlap efficiency {eff:.2f}",
            flush=True,
        )
        rate = seconds / e2e["seconds"]
        print(
            f"  -> {rate:.1f} s of video per second; 4,000 s of video would take {4000 / rate:.0f} s",
            flush=True,
        )
        report.update(
            decode=decode, compute=compute, end_to_end=e2e, overlap_efficiency=eff, runs=runs
        )

        if args.rss_minutes > 0:
            long_video = tmpd / "long.mp4"
            t0 = time.perf_counter()
            make_long_video(long_video, args.rss_minutes)
            info = probe(long_video)
            print(
                f"long video: {info.duration:.0f} s, {info.num_frames} frames at {info.fps:.0f} fps, {info.width}x{info.height} (written in {time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            t0 = time.perf_counter()
            cmd = [
                sys.executable,
                __file__,
                "--backbone",
                args.backbone,
                "--rss-child",
                str(long_video),
                str(tmpd / "rss.zarr"),
            ]
            if args.layer:
                cmd += ["--layer", args.layer]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            child = json.loads(out.strip().splitlines()[-1])
            report["rss"] = {
                "video_s": info.duration,
                "frames": info.num_frames,
                "peak_rss_mb": peak_mb,
                "clips": child["clips"],
                "seconds": time.perf_counter() - t0,
            }
            print(
                f"peak RSS extracting it: {peak_mb:.0f} MB ({child['clips']} clips in {report['rss']['seconds']:.0f} s)  (load {_load()})",
                flush=True,
            )
    report["load_after"] = _load()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
