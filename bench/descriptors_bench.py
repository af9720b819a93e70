"""Seconds per clip of the classical descriptors (``--backbone classic``) against decoding.

Decodes real clips of synthetic videos exactly as the extractor's reader does
(``ClipStream`` with the ``classic`` backbone's sampling: 8 frames at 8 fps, the whole
frame resized to 112x112), normalises them as the extractor does, then times, on one torch
thread (each of ``mktn reproduce``'s two extraction workers gets one):

- decode: ``ClipStream.batches`` + ``normalize`` per clip (a second, warm pass);
- descriptors: ``ClipFeatureExtractor.forward`` (the descriptors and the pooling) per clip,
  at each batch size the CPU probe may pick, best of ``--repeats``;
- per family: each family's share of one forward (``--families``).

``python bench/descriptors_bench.py --videos DIR/videos [--profile]``; ``--profile`` prints
the torch profiler's top operators of one batch.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", required=True, help="folder of videos (e.g. mktn synth's videos/)")
    ap.add_argument("--max-clips", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-sizes", default="1,2,4")
    ap.add_argument("--families", action="store_true", help="time each family on its own")
    ap.add_argument("--profile", action="store_true", help="torch profiler top ops of one batch")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from pipeline.descriptors import ClassicalDescriptors
    from pipeline.extract import ExtractionConfig, find_videos, get_model, tune_cpu_allocator
    from pipeline.video import ClipStream

    tune_cpu_allocator()  # as a CPU extraction does: temporaries are not faulted in each batch

    config = ExtractionConfig()
    sampling = config.sampling()
    model = get_model(config, torch.device("cpu"))
    videos = find_videos(args.videos)
    clips: list[torch.Tensor] = []
    for path in videos:
        for batch in ClipStream(path, sampling).batches(4):
            clips.extend(model.normalize(torch.from_numpy(batch.frames)).unbind(0))
        if len(clips) >= args.max_clips:
            break
    clips = clips[: args.max_clips]
    # decoding again, warm (the first open of the decoder and the probes are behind)
    used = videos[: videos.index(path) + 1]
    t0, decoded = time.perf_counter(), 0
    for path in used:
        for batch in ClipStream(path, sampling).batches(4):
            model.normalize(torch.from_numpy(batch.frames))
            decoded += len(batch.indices)
    decode = (time.perf_counter() - t0) / decoded
    result: dict[str, object] = {
        "input": list(clips[0].shape), "clips": len(clips), "threads": args.threads,
        "decode_s_per_clip": round(decode, 5),
    }

    def per_clip(fn, bs: int) -> float:
        batches = [torch.stack(clips[i : i + bs]) for i in range(0, len(clips) - bs + 1, bs)]
        best = float("inf")
        with torch.inference_mode():
            fn(batches[0])  # warm-up
            for _ in range(args.repeats):
                t = time.perf_counter()
                for b in batches:
                    fn(b)
                best = min(best, (time.perf_counter() - t) / (len(batches) * bs))
        return best

    sizes = [int(s) for s in args.batch_sizes.split(",")]
    result["forward_s_per_clip"] = {bs: round(per_clip(model, bs), 5) for bs in sizes}
    if args.families:
        mean, std = model.get_buffer("mean"), model.get_buffer("std")
        fams = {}
        for fam in model.descriptors.families:
            d = ClassicalDescriptors([fam], config.grid)
            fams[fam] = round(per_clip(lambda b, d=d: d(b * std + mean), 4), 5)
        result["family_s_per_clip_bs4"] = fams
    print(json.dumps(result, indent=1))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        b = torch.stack(clips[:4])
        with torch.inference_mode():
            model(b)
            with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
                for _ in range(3):
                    model(b)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


if __name__ == "__main__":
    main()
