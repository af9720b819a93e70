"""Encode RGB frames to an H.264 mp4 with PyAV, atomically.

The file is written to a temporary sibling and renamed over the target only
after the encoder is flushed and the container closed (``storage.atomic``), so
an interrupted run never leaves a truncated mp4 under the final name.
Encoding is single-threaded so that the bitstream depends only on the frames
(generation runs several videos in parallel instead).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction

import av
import numpy as np

from storage.atomic import atomic_open


def write_mp4(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    crf: int = 23,
    preset: str = "veryfast",
) -> int:
    """Encode ``frames`` (uint8 RGB, all the same even ``H x W``) to ``path``; returns the frame count."""
    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    with atomic_open(path, "wb") as fh:
        container = av.open(fh, mode="w", format="mp4")
        finished = False
        try:
            stream = container.add_stream("libx264", rate=rate)
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(int(crf)), "preset": preset}
            stream.codec_context.thread_count = 1
            for frame in frames:
                if count == 0:
                    h, w = frame.shape[:2]
                    if h % 2 or w % 2 or frame.ndim != 3 or frame.shape[2] != 3:
                        raise ValueError(
                            f"frames must be H x W x 3 with even H and W for yuv420p, got {frame.shape} for {path}"
                        )
                    stream.width, stream.height = w, h
                packet_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                for packet in stream.encode(packet_frame):
                    container.mux(packet)
                count += 1
            if count == 0:
                raise ValueError(f"no frames to write to {path}")
            for packet in stream.encode():
                container.mux(packet)
            finished = True
        finally:
            try:
                container.close()
            except Exception:
                if finished:  # otherwise the original error is the one to see
                    raise
    return count
