"""Decoding with decord: probe, sampling by timestamps, clip windows, streaming, bad files.

Test videos are written here with PyAV; their red channel encodes the source
frame index (``8 * i``), so a decoded frame tells which source frame it is.
"""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.video import (
    ClipSampling,
    ClipStream,
    VideoDecodeError,
    VideoInfo,
    center_crop,
    plan_clips,
    probe,
    resized_size,
    thumbnails,
)


def make_video(
    path: Path,
    n: int = 30,
    fps: int = 15,
    w: int = 64,
    h: int = 48,
    *,
    audio: bool = False,
    pts: list[float] | None = None,
    pix_fmt: str = "yuv420p",
) -> Path:
    """Write an H.264 mp4 whose frame i has red = 8*i (mod 256); optional AAC track and VFR pts."""
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
    stream.options = {"crf": "10"}
    if pts is not None:
        stream.time_base = fractions.Fraction(1, 1000)
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
    astream = container.add_stream("aac", rate=16000) if audio else None
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = (8 * i) % 256
        img[..., 2] = 128
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        if pts is not None:
            frame.pts = int(round(pts[i] * 1000))
            frame.time_base = fractions.Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    if astream is not None:
        samples = (0.3 * np.sin(np.arange(int(16000 * n / fps)) / 7.0)).astype(np.float32)
        for off in range(0, len(samples), 1024):
            af = av.AudioFrame.from_ndarray(
                samples[None, off : off + 1024], format="fltp", layout="mono"
            )
            af.sample_rate = 16000
            for packet in astream.encode(af):
                container.mux(packet)
        for packet in astream.encode():
            container.mux(packet)
    container.close()
    return path


def _index_of(frames: np.ndarray) -> np.ndarray:
    """Source frame index from the red channel of decoded frames [..., H, W, 3]."""
    return np.rint(frames[..., 0].mean(axis=(-1, -2)) / 8.0).astype(int)


def test_real_video_duration_and_clip_coverage(shared_data: Path) -> None:
    path = shared_data / "videos" / "v_ZNVhz7ctTq0.mp4"
    info = probe(path)
    assert info.num_frames == 420 and info.fps == pytest.approx(30.0)
    assert (info.width, info.height) == (480, 360)
    assert abs(info.duration - 14.05) <= 1.0 / info.fps  # within one frame
    sampling = ClipSampling(fps=8, clip_len=8, stride=8)
    stream = ClipStream(path, sampling)
    times = stream.plan.clip_times
    assert times[0, 0] == 0.0 and times[-1, 1] == pytest.approx(info.duration)
    np.testing.assert_allclose(times[1:, 0], times[:-1, 1])  # contiguous, no gaps
    clips = list(stream.clips())
    assert len(clips) == stream.plan.num_clips == 15
    assert all(c.shape == (8, 112, 112, 3) and c.dtype == np.uint8 for _, c in clips)


def test_thumbnails_are_evenly_spaced_small_frames(tmp_path: Path) -> None:
    path = make_video(tmp_path / "cfr.mp4", n=30, fps=15, w=64, h=48)  # 2.0 s
    thumbs = thumbnails(path, n=5, height=24)
    np.testing.assert_allclose(thumbs.times, [0.2, 0.6, 1.0, 1.4, 1.8], atol=1e-6)
    assert thumbs.frames.shape == (5, 24, 32, 3) and thumbs.frames.dtype == np.uint8
    # the frame on screen at each time: frame i shows from i / 15 s
    np.testing.assert_array_equal(_index_of(thumbs.frames), [3, 9, 15, 21, 27])
    assert thumbs.duration == pytest.approx(2.0, abs=1 / 15)
    # more thumbnails than frames: the same frames repeat, none is invented (16x12 is a size
    # decord's scaler rejects: the full-size decode and the shrink here make them)
    many = thumbnails(path, n=45, height=12)
    assert many.frames.shape == (45, 12, 16, 3)
    assert np.all(np.diff(_index_of(many.frames)) >= 0) and _index_of(many.frames)[-1] == 29
    with pytest.raises(ValueError, match="n must be >= 1"):
        thumbnails(path, n=0)
    with pytest.raises(VideoDecodeError, match="no such file"):
        thumbnails(tmp_path / "missing.mp4")


def test_thumbnails_of_the_real_video(shared_data: Path) -> None:
    path = shared_data / "videos" / "v_ZNVhz7ctTq0.mp4"
    thumbs = thumbnails(path, n=8, height=48)
    assert thumbs.frames.shape == (8, 48, 64, 3)  # 480x360 scaled to 48 high keeps 4:3
    assert thumbs.times[0] == pytest.approx(thumbs.duration / 16) and thumbs.times[-1] < thumbs.duration
    # real pictures, not blank frames: each has detail, and they are not all the same
    assert all(f.std() > 10 for f in thumbs.frames)
    assert np.abs(thumbs.frames[0].astype(int) - thumbs.frames[-1].astype(int)).mean() > 5


def test_sampling_picks_the_frame_on_screen(tmp_path: Path) -> None:
    path = make_video(tmp_path / "cfr.mp4", n=30, fps=15)
    info = probe(path)
    assert info.duration == pytest.approx(2.0, abs=1 / 15) and not info.variable_frame_rate
    sampling = ClipSampling(fps=5, clip_len=4, stride=4, resize=48, crop=48)
    stream = ClipStream(path, sampling)
    np.testing.assert_array_equal(stream.plan.source_frames, np.arange(10) * 3)
    decoded = np.concatenate([c for _, c in stream.clips()])[:10]
    np.testing.assert_array_equal(_index_of(decoded), np.arange(10) * 3)


def test_variable_frame_rate_uses_timestamps(tmp_path: Path) -> None:
    pts = [0.0, 0.05, 0.1, 0.3, 0.35, 0.4, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4]
    path = make_video(tmp_path / "vfr.mp4", n=len(pts), fps=10, pts=pts)
    info = probe(path)
    assert info.variable_frame_rate
    np.testing.assert_allclose(info.frame_starts, pts, atol=1e-3)
    plan = plan_clips(info, ClipSampling(fps=10, clip_len=4, stride=4, resize=48, crop=48))
    expected = [int(np.searchsorted(pts, t + 1e-6, side="right") - 1) for t in plan.sample_times]
    np.testing.assert_array_equal(plan.source_frames, expected)
    stream = ClipStream(path, ClipSampling(fps=10, clip_len=4, stride=4, resize=48, crop=48))
    decoded = np.concatenate([c for _, c in stream.clips()])[: plan.num_samples]
    np.testing.assert_array_equal(_index_of(decoded), expected)


@pytest.mark.parametrize(
    ("clip_len", "stride", "chunk"), [(8, 4, 8), (8, 12, 8), (6, 6, 5), (4, 1, 16)]
)
def test_streamed_clips_match_direct_decoding(
    tmp_path: Path, clip_len: int, stride: int, chunk: int
) -> None:
    path = make_video(tmp_path / "s.mp4", n=31, fps=15)
    sampling = ClipSampling(fps=15, clip_len=clip_len, stride=stride, resize=48, crop=48)
    stream = ClipStream(path, sampling, chunk_frames=chunk)
    n = stream.plan.num_samples
    seen = 0
    for k, clip in stream.clips():
        start = int(stream.plan.clip_starts[k])
        want = [min(start + j, n - 1) for j in range(clip_len)]  # padding repeats the last frame
        np.testing.assert_array_equal(_index_of(clip), stream.plan.source_frames[want])
        seen += 1
    assert seen == stream.plan.num_clips
    batches = list(stream.batches(3))
    assert [len(b.indices) for b in batches][:-1] == [3] * (len(batches) - 1)
    np.testing.assert_array_equal(np.concatenate([b.indices for b in batches]), np.arange(seen))


def test_short_video_is_padded_and_recorded(tmp_path: Path) -> None:
    path = make_video(tmp_path / "short.mp4", n=5, fps=15)
    stream = ClipStream(path, ClipSampling(fps=15, clip_len=16, stride=16, resize=48, crop=48))
    assert stream.plan.num_clips == 1
    assert stream.plan.padded_frames == 11 and stream.plan.padded_clips == 1
    ((_, clip),) = list(stream.clips())
    assert clip.shape[0] == 16
    np.testing.assert_array_equal(_index_of(clip), [0, 1, 2, 3, 4] + [4] * 11)
    assert stream.plan.clip_times[0, 1] == pytest.approx(stream.info.duration)


def test_odd_size_with_audio(tmp_path: Path) -> None:
    path = make_video(
        tmp_path / "odd.mp4", n=20, fps=10, w=113, h=97, audio=True, pix_fmt="yuv444p"
    )
    info = probe(path)
    assert (info.width, info.height) == (113, 97)
    assert info.duration == pytest.approx(2.0, abs=0.1)
    assert resized_size(113, 97, 128) == (149, 128)
    clips = list(ClipStream(path, ClipSampling(fps=10, clip_len=8, stride=8)).clips())
    assert [c.shape for _, c in clips] == [(8, 112, 112, 3)] * 3


def test_center_crop_rejects_too_small() -> None:
    with pytest.raises(ValueError, match="cannot crop 64x64"):
        center_crop(np.zeros((2, 32, 40, 3), np.uint8), 64)
    with pytest.raises(ValueError, match="crop <= resize"):
        ClipSampling(resize=100, crop=112)


def test_bad_files_name_the_file_and_reason(tmp_path: Path) -> None:
    good = make_video(tmp_path / "good.mp4", n=60, fps=15)
    cases = {
        "zero.mp4": (b"", "zero-byte"),
        "text.mp4": (b"this is not a video\n" * 50, "not a decodable video"),
        "trunc.mp4": (good.read_bytes()[: good.stat().st_size // 2], "truncated"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(VideoDecodeError, match=reason) as err:
            probe(tmp_path / name)
        assert name in str(err.value)
    with pytest.raises(VideoDecodeError, match="no such file"):
        probe(tmp_path / "missing.mp4")
    with pytest.raises(VideoDecodeError, match="not a regular file"):
        probe(tmp_path)


def test_hour_long_plan_is_cheap_and_exact() -> None:
    n = 30 * 3600  # one hour at 30 fps, timestamps only (no decoding)
    info = VideoInfo("hour.mp4", n, 30.0, 3600.0, 640, 360, np.arange(n) / 30.0, False)
    plan = plan_clips(info, ClipSampling(fps=8, clip_len=8, stride=8))
    assert plan.num_clips == 3600 and plan.padded_frames == 0
    assert plan.clip_times[-1].tolist() == [3599.0, 3600.0]
    np.testing.assert_array_equal(plan.source_frames[:5], [0, 3, 7, 11, 15])  # floor(k * 30 / 8)


# --- issue 17 item 3: no clip made only of padding -------------------------------------------


def _info(n: int, fps: float, duration: float) -> VideoInfo:
    return VideoInfo("x.mp4", n, fps, duration, 64, 48, np.arange(n) / fps, False)


@pytest.mark.parametrize("error", [0.0, 1e-9, 1e-6, 4e-4, 9e-4, -1e-9, -1e-6, -4e-4])
def test_duration_a_rounding_error_off_a_whole_number_of_frames(error: float) -> None:
    # 112 frames at 25 fps fill 7 clips of 16 exactly: no eighth clip of padding
    info = _info(112, 25.0, 112 / 25 + error)
    plan = plan_clips(info, ClipSampling(fps=25, clip_len=16, stride=16, resize=64, crop=48))
    assert plan.num_samples == 112 and plan.num_clips == 7
    assert plan.padded_frames == 0 and plan.padded_clips == 0
    np.testing.assert_array_equal(plan.source_frames, np.arange(112))


def test_a_real_frame_past_the_last_full_clip_gets_a_padded_clip() -> None:
    for n in (113, 127):  # one real frame / 15 real frames past the 7th clip
        plan = plan_clips(
            _info(n, 25.0, n / 25), ClipSampling(fps=25, clip_len=16, stride=16, resize=64, crop=48)
        )
        assert plan.num_clips == 8 and plan.padded_clips == 1
        assert plan.padded_frames == 16 * 8 - n
        assert plan.clip_starts[-1] < plan.num_samples  # the tail holds a real frame


@pytest.mark.parametrize("n", list(range(1, 40)))
@pytest.mark.parametrize("length,stride", [(4, 4), (4, 2), (4, 8), (8, 3), (3, 7)])
def test_every_clip_holds_a_real_sample(n: int, length: int, stride: int) -> None:
    plan = plan_clips(
        _info(n, 10.0, n / 10),
        ClipSampling(fps=10, clip_len=length, stride=stride, resize=48, crop=48),
    )
    assert plan.num_samples == n
    assert (plan.clip_starts < n).all()  # no clip made only of padding
    # and the clips reach as far as a clip starting at a multiple of the stride can
    last = plan.clip_starts[-1]
    assert last + length >= n or last + stride >= n


def test_a_real_video_filling_its_last_clip_exactly_has_no_padded_clip(tmp_path: Path) -> None:
    path = make_video(tmp_path / "full.mp4", n=112, fps=25)
    stream = ClipStream(path, ClipSampling(fps=25, clip_len=16, stride=16, resize=48, crop=48))
    assert stream.plan.num_clips == 7 and stream.plan.padded_clips == 0
    clips = list(stream.clips())
    assert len(clips) == 7
    np.testing.assert_array_equal(_index_of(clips[-1][1]), np.arange(96, 112) % 32)  # red = 8 i mod 256
