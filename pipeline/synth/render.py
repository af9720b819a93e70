"""Render a ``VideoScript`` to RGB frames with vectorised numpy.

The background is a per-video texture (a few sinusoidal gratings plus smooth
blotches on a low-saturation base colour) with fresh-looking per-frame noise
(a bank of noise fields, cycled with random shifts). Objects are drawn from
signed-distance functions of their shape, anti-aliased over one pixel, only
inside their bounding box. Per-object state (position, radius, angle, colour,
opacity) is computed for all frames at once from the event script, so a frame
costs a copy plus a few small array operations per object.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from pipeline.synth.script import COLOURS, DIRECTIONS, VideoScript

_NOISE_BANK = 8


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field in [-1, 1] of shape (size, size): bilinear upsampling of a coarse grid."""
    coarse = rng.uniform(-1, 1, size=(cells + 1, cells + 1))
    pos = np.linspace(0, cells, size)
    i0 = np.minimum(pos.astype(int), cells - 1)
    f = pos - i0
    rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]  # (size, cells+1)
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]  # (size, size)


def background_texture(seed: int, size: int) -> np.ndarray:
    """The static textured background of a video, float32 (size, size, 3) in [0, 255]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(85, 165) + rng.uniform(-18, 18, size=3)  # grey-ish, slightly tinted
    tex = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(2, 5))):
        theta = rng.uniform(0, math.pi)
        freq = rng.uniform(2.0, 9.0)
        phase = rng.uniform(0, 2 * math.pi)
        tex += rng.uniform(5, 14) * np.sin(2 * math.pi * freq * (xx * math.cos(theta) + yy * math.sin(theta)) + phase)
    tex += rng.uniform(10, 22) * _smooth_noise(rng, size, int(rng.integers(3, 8))).astype(np.float32)
    tint = rng.uniform(0.7, 1.1, size=3)
    img = base[None, None, :] + tex[:, :, None] * tint[None, None, :]
    return np.clip(img, 0, 255).astype(np.float32)


def _polygon_sd(u: np.ndarray, v: np.ndarray, n: int, circumradius: float) -> np.ndarray:
    rho = np.hypot(u, v)
    phi = np.arctan2(v, u)
    sector = 2 * math.pi / n
    psi = np.mod(phi + math.pi / n, sector) - math.pi / n
    return rho * np.cos(psi) - circumradius * math.cos(math.pi / n)


def shape_sd(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Approximate signed distance (px, < 0 inside) of a shape of nominal radius ``r`` at local coords."""
    if shape == "circle":
        return np.hypot(u, v) - r
    if shape == "ring":
        return np.abs(np.hypot(u, v) - 0.72 * r) - 0.28 * r
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.86 * r
    if shape == "triangle":
        return _polygon_sd(u, v, 3, 1.25 * r)
    if shape == "hexagon":
        return _polygon_sd(u, v, 6, 1.02 * r)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au - 1.05 * r, av - 0.36 * r), np.maximum(au - 0.36 * r, av - 1.05 * r))
    if shape == "star":
        rho = np.hypot(u, v)
        sector = 2 * math.pi / 5
        psi = np.abs(np.mod(np.arctan2(v, u), sector) - sector / 2)  # pi/5 at a point, 0 between points
        outer, inner = 1.4 * r, 0.62 * r
        boundary = inner + (outer - inner) * (psi / (sector / 2))
        return (rho - boundary) * 0.6
    raise ValueError(f"unknown shape {shape!r}")


def object_tracks(script: VideoScript) -> list[dict[str, np.ndarray]]:
    """Per object, its state for every frame: x, y, radius, angle, rgb (F, 3), alpha."""
    t = np.arange(script.num_frames, dtype=np.float64) / script.fps
    tracks = []
    for obj in script.objects:
        x = np.full_like(t, obj.x)
        y = np.full_like(t, obj.y)
        radius = np.full_like(t, obj.radius)
        angle = np.full_like(t, obj.angle)
        rgb = np.tile(np.asarray(COLOURS[obj.colour], np.float64), (t.size, 1))
        alpha = np.full_like(t, 1.0 if obj.visible else 0.0)
        for ev in script.events_of(obj.index):
            p = np.clip((t - ev.start) / max(ev.end - ev.start, 1e-9), 0.0, 1.0)
            during = (t >= ev.start) & (t < ev.end)
            if ev.kind == "move":
                dx, dy = DIRECTIONS[ev.direction]
                x += dx * ev.distance * p
                y += dy * ev.distance * p
            elif ev.kind in ("grow", "shrink"):
                radius *= 1.0 + p * (ev.factor - 1.0)
            elif ev.kind == "spin":
                angle += ev.rotation * p
            elif ev.kind == "recolor":
                rgb += (np.asarray(COLOURS[ev.new_colour], np.float64) - rgb) * p[:, None]
            elif ev.kind == "appear":
                alpha = alpha + (1.0 - alpha) * p
                radius *= np.where(during, 0.4 + 0.6 * p, 1.0)
            elif ev.kind == "disappear":
                alpha = alpha * (1.0 - p)
                radius *= np.where(during, 1.0 - 0.6 * p, 1.0)
            elif ev.kind == "blink":
                on = np.mod((t - ev.start) * ev.blink_hz, 1.0) < 0.5
                alpha = alpha * np.where(during & ~on, 0.1, 1.0)
        tracks.append({"x": x, "y": y, "radius": radius, "angle": angle, "rgb": rgb, "alpha": alpha})
    return tracks


def _draw(frame: np.ndarray, shape: str, x: float, y: float, r: float, angle: float, rgb: np.ndarray, alpha: float) -> None:
    size = frame.shape[0]
    half = 1.45 * r + 2
    x0, x1 = max(int(x - half), 0), min(int(math.ceil(x + half)) + 1, size)
    y0, y1 = max(int(y - half), 0), min(int(math.ceil(y + half)) + 1, size)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - np.float32(x), yy - np.float32(y)
    c, s = math.cos(angle), math.sin(angle)
    u = c * dx + s * dy  # rotate into the object's frame (by -angle)
    v = -s * dx + c * dy
    cover = np.clip(0.5 - shape_sd(shape, u, v, r), 0.0, 1.0) * np.float32(alpha)  # (h, w)
    region = frame[y0:y1, x0:x1]
    region += (rgb.astype(np.float32)[None, None, :] - region) * cover[:, :, None]


def render_frames(script: VideoScript) -> Iterator[np.ndarray]:
    """Yield the video's frames, uint8 (size, size, 3) RGB, deterministically."""
    size = script.size
    texture = background_texture(script.background_seed, size)
    rng = np.random.default_rng(script.background_seed + 1)
    # per-frame sensor-like noise: a bank of fields, each frame a random one at a random shift
    noise_bank = [rng.normal(0, 5.0, size=texture.shape).astype(np.float32) for _ in range(_NOISE_BANK)]
    picks = rng.integers(_NOISE_BANK, size=script.num_frames)
    shifts = rng.integers(size, size=(script.num_frames, 2))
    tracks = object_tracks(script)
    shapes = [o.shape for o in script.objects]
    for f in range(script.num_frames):
        noise = np.roll(noise_bank[picks[f]], shift=(int(shifts[f, 0]), int(shifts[f, 1])), axis=(0, 1))
        frame = texture + noise
        for shape, tr in zip(shapes, tracks, strict=True):
            a = float(tr["alpha"][f])
            if a <= 0.01:
                continue
            _draw(frame, shape, float(tr["x"][f]), float(tr["y"][f]), float(tr["radius"][f]), float(tr["angle"][f]), tr["rgb"][f], a)
        yield np.clip(frame, 0, 255).astype(np.uint8)
