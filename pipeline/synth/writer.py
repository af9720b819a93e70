"""Encode RGB frames to an H.264 mp4 with PyAV, atomically.

The file is written to a temporary sibling and renamed over the target only
after the encoder is flushed and the container closed (``storage.atomic``), so
an interrupted run never leaves a truncated mp4 under the final name.
Determinism: identical frames must give identical files. Encoding them
naively did not: the same frames gave different bitstreams depending on how
the process was started (its memory layout), with rgb24 input through swscale
and with yuv420p input alike. So here the RGB -> YUV 4:2:0 conversion is done
in numpy (BT.601, limited range, what decoders assume for untagged SD video),
every byte of the encoder's input frame is set (row padding included), and
x264 runs single-threaded on its C code paths (``asm=0``), which were
bit-exact in every launch mode tried, for ~40% more encoding time.
Generation runs several videos in parallel instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction

import av
import numpy as np

from storage.atomic import atomic_open


def rgb_to_yuv420p(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 RGB ``(H, W, 3)`` -> planes Y ``(H, W)``, U and V ``(H/2, W/2)`` (BT.601 limited range).

    >>> [p.ravel().tolist() for p in rgb_to_yuv420p(np.zeros((2, 2, 3), np.uint8))]  # black
    [[16, 16, 16, 16], [128], [128]]
    >>> [p.ravel().tolist() for p in rgb_to_yuv420p(np.full((2, 2, 3), 255, np.uint8))]  # white
    [[235, 235, 235, 235], [128], [128]]
    """
    f = frame.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    cb = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    cr = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
    # 2x2 means summed in a fixed order (a reduction could reorder them and round differently)
    cb = ((cb[0::2, 0::2] + cb[0::2, 1::2]) + (cb[1::2, 0::2] + cb[1::2, 1::2])) * 0.25  # (H/2, W/2)
    cr = ((cr[0::2, 0::2] + cr[0::2, 1::2]) + (cr[1::2, 0::2] + cr[1::2, 1::2])) * 0.25
    return tuple(np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in (y, cb, cr))  # type: ignore[return-value]


def _yuv_frame(planes: tuple[np.ndarray, np.ndarray, np.ndarray], width: int, height: int) -> av.VideoFrame:
    """A yuv420p ``VideoFrame`` whose every byte is set, row padding included.

    FFmpeg pads each row to an aligned line size and leaves the padding
    uninitialised; an encoder reading it would see garbage. The padding gets
    the row's edge pixel instead.
    """
    vf = av.VideoFrame(width, height, "yuv420p")
    for plane, arr in zip(vf.planes, planes, strict=True):
        rows, cols = arr.shape
        buf = np.empty((rows, plane.line_size), np.uint8)
        buf[:, :cols] = arr
        buf[:, cols:] = arr[:, -1:]
        plane.update(buf.tobytes())
    return vf


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
            # asm=0: x264's SIMD input paths made identical frames encode differently depending on
            # the process's memory layout (same script run two ways gave two files); the C paths
            # are bit-exact run to run, for ~40% more encoding time
            stream.options = {"crf": str(int(crf)), "preset": preset, "x264-params": "asm=0"}
            stream.codec_context.thread_count = 1
            time_base = Fraction(rate.denominator, rate.numerator)
            stream.codec_context.time_base = time_base
            for frame in frames:
                if count == 0:
                    h, w = frame.shape[:2]
                    if h % 2 or w % 2 or frame.ndim != 3 or frame.shape[2] != 3:
                        raise ValueError(
                            f"frames must be H x W x 3 with even H and W for yuv420p, got {frame.shape} for {path}"
                        )
                    stream.width, stream.height = w, h
                packet_frame = _yuv_frame(rgb_to_yuv420p(frame), w, h)
                packet_frame.pts = count  # explicit timestamps: x264's rate control reads them
                packet_frame.time_base = time_base
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
