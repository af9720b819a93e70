"""Video decoding with decord: probe, sample at a target fps, cut clips, stream in chunks.

Times come from the decoded frames' own timestamps (``get_frame_timestamp``),
so variable-frame-rate videos map to seconds exactly. Sampling at ``fps``
picks, for each target time ``k / fps`` before the end of the video, the frame
on screen at that time. Clips are ``clip_len`` sampled frames long, one every
``stride`` sampled frames; clip ``k`` starts at ``k * stride / fps`` seconds.
Clips that run past the last sampled frame (including the single clip of a video
shorter than one clip) are padded by repeating the last frame, and the padding is
reported in :class:`ClipPlan`.

The stream never holds more than ``chunk_frames + clip_len`` decoded frames,
already resized by the decoder, so an hour-long HD video costs a few MB.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class VideoDecodeError(RuntimeError):
    """A video cannot be opened or decoded. The message names the file and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` learns about a video; times in seconds."""

    path: str
    num_frames: int
    fps: float  # average frame rate reported by the container
    duration: float  # container duration when known, else the end of the last frame
    width: int
    height: int
    frame_starts: np.ndarray  # [num_frames] presentation time of each frame (s)
    variable_frame_rate: bool

    @property
    def last_frame_end(self) -> float:
        return float(self.frame_starts[-1] + 1.0 / self.fps) if self.num_frames else 0.0


@dataclass(frozen=True)
class ClipSampling:
    """How clips are cut from a video and prepared for a backbone.

    ``fps``: target sampling rate; ``clip_len``: sampled frames per clip; ``stride``:
    sampled frames between clip starts; ``resize``: short side after resizing (pixels);
    ``crop``: side of the centre crop (pixels), ``crop <= resize``; ``geometry``: ``"crop"``
    resizes the short side to ``resize`` and cuts the centre ``crop x crop`` square (the
    3D-CNN convention, which drops the left and right of a 4:3 or 16:9 frame), ``"full"``
    resizes the whole frame to ``crop x crop`` (aspect not kept, nothing cut: things entering
    or leaving at the edges stay in view).
    """

    fps: float = 15.0
    clip_len: int = 16
    stride: int = 16
    resize: int = 128
    crop: int = 112
    geometry: str = "crop"

    def __post_init__(self) -> None:
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"sampling fps must be a positive number, got {self.fps!r}")
        if self.clip_len < 1 or self.stride < 1:
            raise ValueError(
                f"clip_len and stride must be >= 1, got clip_len={self.clip_len}, stride={self.stride}"
            )
        if self.crop < 1 or self.resize < self.crop:
            raise ValueError(
                f"need 1 <= crop <= resize, got crop={self.crop}, resize={self.resize}; "
                "raise --resize or lower --crop"
            )
        if self.geometry not in ("crop", "full"):
            raise ValueError(f"geometry must be 'crop' or 'full', got {self.geometry!r}")


@dataclass(frozen=True)
class ClipPlan:
    """Which source frame every sampled frame is, and the clips over the samples.

    ``source_frames`` [N] source frame index of each sampled frame; ``clip_times`` [T, 2]
    start/end seconds of each clip; ``padded_frames`` the number of repeated frames added
    to clips that run past the last sample (summed over clips).
    """

    source_frames: np.ndarray
    sample_times: np.ndarray
    clip_starts: np.ndarray  # [T] index of each clip's first sampled frame
    clip_times: np.ndarray
    clip_len: int
    padded_frames: int
    padded_clips: int

    @property
    def num_clips(self) -> int:
        return int(self.clip_starts.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.source_frames.shape[0])


@dataclass(frozen=True)
class ClipBatch:
    """A batch of clips: ``frames`` uint8 [B, clip_len, H, W, 3] (RGB), their indices and times."""

    indices: np.ndarray  # [B] clip index within the video
    times: np.ndarray  # [B, 2] seconds
    frames: np.ndarray


def _open_reader(path: str, width: int = -1, height: int = -1, threads: int = 1):
    import decord

    p = Path(path)
    if not p.exists():
        raise VideoDecodeError(path, "no such file")
    if not p.is_file():
        raise VideoDecodeError(path, "not a regular file")
    if not os.access(p, os.R_OK):
        raise VideoDecodeError(path, "permission denied: the file is not readable")
    if p.stat().st_size == 0:
        raise VideoDecodeError(path, "zero-byte file")
    try:
        return decord.VideoReader(
            str(p), ctx=decord.cpu(0), width=width, height=height, num_threads=threads
        )
    except Exception as exc:  # decord raises DECORDError / RuntimeError with ffmpeg's text
        raise VideoDecodeError(path, _diagnose(path, exc)) from exc


def _clean(message: str) -> str:
    """decord's message without its ``[hh:mm:ss] /src/file.cc:NN:`` prefix."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    return re.sub(r"^\[[0-9:]+\]\s+\S+:\d+:\s*", "", text)


def _diagnose(path: str, exc: BaseException) -> str:
    """A readable reason why decord cannot open ``path``: ask PyAV for the container's view."""
    detail = _clean(str(exc)) or type(exc).__name__
    try:
        import av

        with av.open(path) as container:
            if not container.streams.video:
                kinds: list[str] = sorted({str(s.type) for s in container.streams}) or ["none"]
                return f"no video stream (streams: {', '.join(kinds)}); is this an audio file?"
            fmt = container.format.name
    except Exception as av_exc:  # we only want its message
        return (
            f"not a decodable video: {_clean(str(av_exc)) or type(av_exc).__name__} "
            "(corrupt, truncated, or not a video file)"
        )
    return f"the {fmt} container opens but its frames cannot be read ({detail}); the file is probably truncated or corrupt"


def _container_duration(path: str) -> float | None:
    """The container's duration in seconds (PyAV reads only the header), or None."""
    try:
        import av

        with av.open(path) as container:
            if container.duration is not None and container.duration > 0:
                return float(container.duration) / 1_000_000.0
    except Exception:  # the decord probe already vouched for the file
        return None
    return None


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Frame count, average fps, duration, size and frame timestamps of a video.

    Raises :class:`VideoDecodeError` naming the file for a missing, zero-byte,
    unreadable, corrupt or non-video file.
    """
    path = os.fspath(path)
    vr = _open_reader(path)
    n = len(vr)
    if n == 0:
        raise VideoDecodeError(path, "the video stream has no frames")
    try:
        first = vr[0].shape
        fps = float(vr.get_avg_fps())
        stamps = np.asarray(vr.get_frame_timestamp(np.arange(n)), dtype=np.float64)
    except Exception as exc:
        raise VideoDecodeError(path, f"cannot read frames or timestamps: {exc}") from exc
    if not (fps > 0 and math.isfinite(fps)):
        raise VideoDecodeError(path, f"the container reports an invalid frame rate {fps!r}")
    starts = stamps[:, 0] - stamps[0, 0]
    if np.any(np.diff(starts) < 0):  # reordered pts: keep decode order but sort times
        starts = np.maximum.accumulate(starts)
    gaps = np.diff(starts)
    vfr = bool(gaps.size > 1 and (gaps.max() - gaps.min()) > 0.25 / fps)
    last_end = float(stamps[-1, 1] - stamps[0, 0])
    if not last_end > starts[-1]:
        last_end = float(starts[-1] + 1.0 / fps)
    container = _container_duration(path)
    # The container duration may include a longer audio track; trust it only when it is
    # close to the video frames' own extent (within one second).
    duration = container if container is not None and abs(container - last_end) < 1.0 else last_end
    del vr
    return VideoInfo(
        path=path,
        num_frames=n,
        fps=fps,
        duration=float(duration),
        width=int(first[1]),
        height=int(first[0]),
        frame_starts=starts,
        variable_frame_rate=vfr,
    )


DURATION_ROUNDING_S = 1e-3  # containers store durations in ticks of up to a millisecond


def sample_count(duration: float, fps: float) -> int:
    """Samples at ``k / fps`` before ``duration``: ``ceil(duration * fps)``, except that a
    duration within a millisecond (the coarsest common container time base; at least 1e-3
    of a sample, at most half a sample) above a whole number of samples gives that number:
    the container's rounding must not add a sample, and with it a clip of padding only.

    >>> sample_count(112 / 25, 25), sample_count(112 / 25 + 4e-4, 25), sample_count(112 / 25 - 1e-9, 25)
    (112, 112, 112)
    >>> sample_count(112 / 25 + 0.02, 25), sample_count(0.0, 25)
    (113, 1)
    """
    tolerance = min(0.5, max(1e-3, DURATION_ROUNDING_S * fps))
    return max(1, math.ceil(duration * fps - tolerance))


def plan_clips(info: VideoInfo, sampling: ClipSampling) -> ClipPlan:
    """Sample times ``k / fps`` in ``[0, duration)`` and the clips over them.

    >>> import numpy as np
    >>> info = VideoInfo("x.mp4", 30, 10.0, 3.0, 64, 48, np.arange(30) / 10.0, False)
    >>> plan = plan_clips(info, ClipSampling(fps=5, clip_len=4, stride=4, resize=48, crop=48))
    >>> plan.num_samples, plan.num_clips, plan.padded_frames
    (15, 4, 1)
    >>> plan.clip_times.round(6).tolist()
    [[0.0, 0.8], [0.8, 1.6], [1.6, 2.4], [2.4, 3.0]]
    """
    step = 1.0 / sampling.fps
    n_samples = sample_count(info.duration, sampling.fps)
    times = np.arange(n_samples, dtype=np.float64) * step
    # The frame on screen at time t: the last frame whose start is <= t.
    src = np.searchsorted(info.frame_starts, times + 1e-6, side="right") - 1
    src = np.clip(src, 0, info.num_frames - 1)
    length, stride = sampling.clip_len, sampling.stride
    if n_samples <= length:
        n_clips = 1
    else:
        # enough clips to reach the last sample, but none that starts past it (with a
        # stride longer than the clip, the last window could otherwise be all padding)
        n_clips = min(math.ceil((n_samples - length) / stride) + 1, math.ceil(n_samples / stride))
    starts = np.arange(n_clips, dtype=np.int64) * stride
    ends = starts + length
    padded = np.maximum(ends - n_samples, 0)
    clip_times = np.stack([starts * step, np.minimum(ends * step, info.duration)], axis=1).astype(
        np.float64
    )
    return ClipPlan(
        source_frames=src.astype(np.int64),
        sample_times=times,
        clip_starts=starts,
        clip_times=clip_times,
        clip_len=length,
        padded_frames=int(padded.sum()),
        padded_clips=int((padded > 0).sum()),
    )


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side scaled to ``short_side``, aspect kept.

    >>> resized_size(480, 360, 128)
    (171, 128)
    >>> resized_size(97, 113, 128)
    (128, 149)
    """
    if width <= height:
        return short_side, max(short_side, round(height * short_side / width))
    return max(short_side, round(width * short_side / height)), short_side


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop ``frames`` [..., H, W, C] to ``size`` x ``size``."""
    h, w = frames.shape[-3], frames.shape[-2]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from frames of {w}x{h}")
    top, left = (h - size) // 2, (w - size) // 2
    return frames[..., top : top + size, left : left + size, :]


class ClipStream:
    """Streams a video's clips in batches, decoding ``chunk_frames`` sampled frames at a time.

    >>> stream = ClipStream("video.mp4", ClipSampling())          # doctest: +SKIP
    >>> for batch in stream.batches(8): batch.frames.shape         # doctest: +SKIP
    (8, 16, 112, 112, 3)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sampling: ClipSampling,
        *,
        info: VideoInfo | None = None,
        chunk_frames: int = 128,
        decode_threads: int = 1,
    ) -> None:
        self.path = os.fspath(path)
        self.sampling = sampling
        self.info = info if info is not None else probe(self.path)
        self.plan = plan_clips(self.info, sampling)
        self.chunk_frames = max(chunk_frames, sampling.clip_len)
        self.decode_threads = decode_threads

    def _read(self, vr, lo: int, hi: int) -> np.ndarray:
        """Sampled frames ``[lo, hi)`` as uint8 [n, crop, crop, 3]."""
        idx = self.plan.source_frames[lo:hi]
        unique, inverse = np.unique(idx, return_inverse=True)
        try:
            decoded = vr.get_batch(unique.tolist()).asnumpy()
        except Exception as exc:
            raise VideoDecodeError(
                self.path,
                f"decoding failed between source frames {int(unique[0])} and {int(unique[-1])} "
                f"of {self.info.num_frames} (truncated or corrupt file?): {exc}",
            ) from exc
        if decoded.shape[0] != unique.shape[0]:
            raise VideoDecodeError(
                self.path, f"decoder returned {decoded.shape[0]} frames, expected {unique.shape[0]}"
            )
        if self.sampling.geometry == "full":
            return np.ascontiguousarray(decoded[inverse])
        return np.ascontiguousarray(center_crop(decoded, self.sampling.crop)[inverse])

    def clips(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(clip_index, frames uint8 [clip_len, crop, crop, 3])`` in order."""
        if self.sampling.geometry == "full":
            width = height = self.sampling.crop
        else:
            width, height = resized_size(self.info.width, self.info.height, self.sampling.resize)
        vr = _open_reader(self.path, width=width, height=height, threads=self.decode_threads)
        n = self.plan.num_samples
        length = self.sampling.clip_len
        buf = np.empty((0, self.sampling.crop, self.sampling.crop, 3), np.uint8)
        buf_lo = 0  # sampled index of buf[0]
        try:
            for k, start in enumerate(self.plan.clip_starts.tolist()):
                need_hi = min(start + length, n)
                buf_hi = buf_lo + buf.shape[0]
                if need_hi > buf_hi:
                    read_hi = min(n, max(need_hi, buf_hi + self.chunk_frames))
                    fresh = self._read(vr, buf_hi, read_hi)
                    keep = buf[max(0, start - buf_lo) :]
                    buf_lo = max(buf_lo, start) if keep.shape[0] else buf_hi
                    buf = np.concatenate([keep, fresh]) if keep.shape[0] else fresh
                clip = buf[start - buf_lo : need_hi - buf_lo]
                if clip.shape[0] < length:  # past the end: repeat the last frame
                    pad = np.repeat(clip[-1:], length - clip.shape[0], axis=0)
                    clip = np.concatenate([clip, pad])
                yield k, clip
        finally:
            del vr

    def batches(self, batch_size: int) -> Iterator[ClipBatch]:
        """Clips grouped into batches of at most ``batch_size``."""
        idx: list[int] = []
        frames: list[np.ndarray] = []
        for k, clip in self.clips():
            idx.append(k)
            frames.append(clip)
            if len(idx) == batch_size:
                yield self._batch(idx, frames)
                idx, frames = [], []
        if idx:
            yield self._batch(idx, frames)

    def _batch(self, idx: list[int], frames: list[np.ndarray]) -> ClipBatch:
        indices = np.asarray(idx, np.int64)
        return ClipBatch(
            indices=indices, times=self.plan.clip_times[indices], frames=np.stack(frames)
        )


@dataclass(frozen=True)
class Thumbnails:
    """Small frames evenly spread over a video: ``frames`` uint8 [N, height, W, 3] (RGB), ``times``
    [N] the second each one shows (the middle of its N-th of the video), ``duration`` seconds."""

    times: np.ndarray
    frames: np.ndarray
    duration: float


def thumbnails(path: str | os.PathLike[str], n: int = 10, height: int = 48, *,
               info: VideoInfo | None = None) -> Thumbnails:
    """``n`` frames evenly spaced over the video, decoded at ``height`` pixels high (aspect kept).

    Thumbnail ``k`` is the frame on screen at ``(k + 0.5) * duration / n``: the middle of the
    ``k``-th of ``n`` equal parts, so a strip of them drawn side by side over ``[0, duration]``
    puts each picture over the time it shows. The decoder scales the frames (a few kB each).

    Raises :class:`VideoDecodeError` naming the file when it cannot be decoded.
    """
    if n < 1:
        raise ValueError(f"thumbnails: n must be >= 1, got {n}")
    if height < 2:
        raise ValueError(f"thumbnails: height must be >= 2 pixels, got {height}")
    path = os.fspath(path)
    info = info if info is not None else probe(path)
    width = max(2, round(info.width * height / info.height))
    times = (np.arange(n, dtype=np.float64) + 0.5) * (info.duration / n)
    src = np.searchsorted(info.frame_starts, times + 1e-6, side="right") - 1
    src = np.clip(src, 0, info.num_frames - 1)
    unique, inverse = np.unique(src, return_inverse=True)
    try:
        decoded = _decode_scaled(path, unique.tolist(), width, height)
    except VideoDecodeError:
        raise
    except Exception:
        # decord's scaler rejects some small sizes ("The size must exactly match", e.g. 16x12,
        # 24x18): decode those frames at full size, one at a time, and sample them down here
        decoded = _decode_full_then_shrink(path, unique.tolist(), width, height)
    return Thumbnails(times=times, frames=np.ascontiguousarray(decoded[inverse]), duration=info.duration)


def _decode_scaled(path: str, frames: list[int], width: int, height: int) -> np.ndarray:
    vr = _open_reader(path, width=width, height=height)
    try:
        out = vr.get_batch(frames).asnumpy()
    finally:
        del vr
    if out.shape[1:3] != (height, width):
        raise RuntimeError(f"decoder gave {out.shape[2]}x{out.shape[1]}, asked {width}x{height}")
    return out


def _decode_full_then_shrink(path: str, frames: list[int], width: int, height: int) -> np.ndarray:
    vr = _open_reader(path)
    out = np.empty((len(frames), height, width, 3), np.uint8)
    try:
        for i, f in enumerate(frames):
            img = vr[f].asnumpy()
            # the pixel at the centre of each output pixel's footprint
            ys = ((np.arange(height) + 0.5) * img.shape[0] / height).astype(np.int64)
            xs = ((np.arange(width) + 0.5) * img.shape[1] / width).astype(np.int64)
            out[i] = img[ys[:, None], xs[None, :]]
    except Exception as exc:
        raise VideoDecodeError(path, f"cannot decode thumbnail frames (truncated or corrupt?): {exc}") from exc
    finally:
        del vr
    return out
