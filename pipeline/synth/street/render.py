"""Render a ``StreetScript`` to RGB frames with vectorised numpy.

The scene is a top-down street: asphalt road(s) with dashed centre lines, edge
lines and sometimes a zebra crossing, tiled sidewalks, grass or paving beyond.
It is lit by a per-video gradient (a low sun from one side, a vignette and a
colour temperature) applied to the whole frame, objects included; every frame
gets sensor noise (a bank of noise fields cycled at random shifts) and a slight
camera shake (an integer offset of up to 1 px that wanders smoothly).
Actors are drawn from signed-distance functions (rounded boxes, ellipses,
discs), anti-aliased over one pixel, only inside their bounding box.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from pipeline.synth.street.script import (
    CATEGORIES,
    HEADINGS,
    PALETTES,
    REF_WIDTH,
    UMBRELLA_COLOURS,
    StreetScript,
)

_NOISE_BANK = 8
_MARGIN = 2  # px of canvas around the frame, for the camera shake
_WINDOW = np.array([40.0, 52.0, 68.0], np.float32)  # windscreens
_HAIR = np.array([45.0, 35.0, 30.0], np.float32)
_BEAM = np.array([255.0, 245.0, 170.0], np.float32)
_ROAD_LINE = {"white": (235.0, 235.0, 230.0), "yellow": (240.0, 200.0, 40.0)}


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random field in [-1, 1] of shape (h, w): bilinear upsampling of a coarse grid."""
    coarse = rng.uniform(-1, 1, size=(cells + 1, cells + 1))
    py, px = np.linspace(0, cells, h), np.linspace(0, cells, w)
    iy, ix = np.minimum(py.astype(int), cells - 1), np.minimum(px.astype(int), cells - 1)
    fy, fx = py - iy, px - ix
    rows = coarse[iy] * (1 - fy)[:, None] + coarse[iy + 1] * fy[:, None]
    return rows[:, ix] * (1 - fx)[None, :] + rows[:, ix + 1] * fx[None, :]


def background(script: StreetScript) -> tuple[np.ndarray, np.ndarray]:
    """The static scene (float32 canvas ``(H + 2m, W + 2m, 3)``) and its lighting gain ``(H + 2m, W + 2m, 3)``."""
    rng = np.random.default_rng(script.background_seed)
    m = _MARGIN
    h, w = script.height + 2 * m, script.width + 2 * m
    scale = script.width / REF_WIDTH
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy -= m
    xx -= m
    lay = script.layout
    # ground beyond the sidewalks: grass or paving
    if rng.random() < 0.55:
        ground = np.array([rng.uniform(60, 90), rng.uniform(110, 145), rng.uniform(45, 70)], np.float32)
        grain = 14.0
    else:
        g = rng.uniform(120, 150)
        ground = np.array([g + 8, g + 4, g - 6], np.float32)
        grain = 8.0
    img = np.broadcast_to(ground, (h, w, 3)).copy()
    img += (grain * _smooth_noise(rng, h, w, int(rng.integers(6, 12))))[:, :, None]
    img += rng.normal(0, 4.0, size=(h, w, 1)).astype(np.float32)
    on_road = np.zeros((h, w), bool)
    near_road = np.zeros((h, w), bool)
    walk = float(rng.uniform(8.0, 12.0)) * scale
    if "h" in lay.roads:
        on_road |= (yy >= lay.road_h[0]) & (yy < lay.road_h[1])
        near_road |= (yy >= lay.road_h[0] - walk) & (yy < lay.road_h[1] + walk)
    if "v" in lay.roads:
        on_road |= (xx >= lay.road_v[0]) & (xx < lay.road_v[1])
        near_road |= (xx >= lay.road_v[0] - walk) & (xx < lay.road_v[1] + walk)
    # sidewalks: light paving with a tile grid
    tile = float(rng.uniform(6.0, 10.0)) * scale
    pave = rng.uniform(155, 185)
    side = np.array([pave, pave - 3, pave - 10], np.float32)
    grid = ((np.mod(xx, tile) < 0.8) | (np.mod(yy, tile) < 0.8)).astype(np.float32) * -22.0
    sidewalk = near_road & ~on_road
    img[sidewalk] = side + grid[sidewalk][:, None] + rng.normal(0, 3.0, size=(int(sidewalk.sum()), 1))
    # asphalt with a fine grain and a few darker patches
    asphalt = float(rng.uniform(62, 92))
    tex = 6.0 * _smooth_noise(rng, h, w, int(rng.integers(8, 16))) + rng.normal(0, 3.5, size=(h, w))
    img[on_road] = asphalt + tex[on_road][:, None] + np.array([0.0, 0.0, 3.0], np.float32)
    # markings: dashed centre lines, solid edge lines, maybe a zebra crossing
    paint = np.array(_ROAD_LINE["yellow" if rng.random() < 0.4 else "white"], np.float32)
    dash, gap = float(rng.uniform(6, 10)) * scale, float(rng.uniform(4, 7)) * scale
    thick = max(0.8, 1.2 * scale)
    marks = np.zeros((h, w), bool)
    inter = np.zeros((h, w), bool)
    if lay.roads == ("h", "v"):
        inter = (yy >= lay.road_h[0]) & (yy < lay.road_h[1]) & (xx >= lay.road_v[0]) & (xx < lay.road_v[1])
    if "h" in lay.roads:
        cy = 0.5 * (lay.road_h[0] + lay.road_h[1])
        marks |= (np.abs(yy - cy) < thick / 2 + 0.3) & (np.mod(xx, dash + gap) < dash)
        for edge in lay.road_h:
            marks |= (np.abs(yy - edge - (1.5 if edge == lay.road_h[0] else -1.5)) < 0.5) & on_road
    if "v" in lay.roads:
        cx = 0.5 * (lay.road_v[0] + lay.road_v[1])
        marks |= (np.abs(xx - cx) < thick / 2 + 0.3) & (np.mod(yy, dash + gap) < dash)
        for edge in lay.road_v:
            marks |= (np.abs(xx - edge - (1.5 if edge == lay.road_v[0] else -1.5)) < 0.5) & on_road
    zebra = np.zeros((h, w), bool)
    if lay.crosswalk:
        stripe = max(2.0, 2.5 * scale)
        if "h" in lay.roads:
            at = float(rng.uniform(0.15, 0.85)) * script.width
            zebra |= (np.abs(xx - at) < 5 * scale) & (np.mod(yy, 2 * stripe) < stripe) & on_road
        else:
            at = float(rng.uniform(0.15, 0.85)) * script.height
            zebra |= (np.abs(yy - at) < 5 * scale) & (np.mod(xx, 2 * stripe) < stripe) & on_road
    marks &= ~inter
    img[marks] = 0.25 * img[marks] + 0.75 * paint
    img[zebra & ~inter] = 0.2 * img[zebra & ~inter] + 0.8 * np.array(_ROAD_LINE["white"], np.float32)
    # lighting: a sun gradient from one side, a vignette and a colour temperature (applied per frame)
    phi = rng.uniform(0, 2 * math.pi)
    strength = rng.uniform(0.18, 0.4)
    u = (xx / script.width - 0.5) * math.cos(phi) + (yy / script.height - 0.5) * math.sin(phi)
    r2 = (xx / script.width - 0.5) ** 2 + (yy / script.height - 0.5) ** 2
    gain = (1.0 + strength * u - rng.uniform(0.15, 0.4) * r2) * rng.uniform(0.85, 1.1)
    warm = rng.uniform(-0.08, 0.08)
    tint = np.array([1.0 + warm, 1.0, 1.0 - warm], np.float32)
    light = (gain[:, :, None] * tint[None, None, :]).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.float32), light


def _box_sd(u: np.ndarray, v: np.ndarray, half_l: float, half_w: float, rounding: float = 0.0) -> np.ndarray:
    qu, qv = np.abs(u) - (half_l - rounding), np.abs(v) - (half_w - rounding)
    outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
    return outside + np.minimum(np.maximum(qu, qv), 0) - rounding


def _ellipse_sd(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    return (np.hypot(u / a, v / b) - 1.0) * min(a, b)


Layers = list[tuple[np.ndarray, np.ndarray]]  # (coverage (h, w, 1), rgb (3,)) painted in order


def _paint(layers: Layers, sd: np.ndarray, rgb: np.ndarray, alpha: float = 1.0) -> None:
    cover = np.clip(0.5 - sd, 0.0, 1.0) * np.float32(alpha)
    if cover.any():
        layers.append((cover[:, :, None], np.asarray(rgb, np.float32)))


def _composite(canvas: np.ndarray, sprite: tuple[int, int, int, int, Layers] | None) -> None:
    if sprite is None:
        return
    y0, y1, x0, x1, layers = sprite
    region = canvas[y0:y1, x0:x1]
    for cover, rgb in layers:
        region += (rgb - region) * cover


def tracks(script: StreetScript) -> list[dict[str, np.ndarray]]:
    """Per actor, its state at every frame: x, y, heading (radians), beam (0/1), umbrella (0..1 open)."""
    t = np.arange(script.num_frames, dtype=np.float64) / script.fps
    out = []
    for obj in script.objects:
        x = np.full_like(t, obj.x)
        y = np.full_like(t, obj.y)
        heading = np.full_like(t, HEADINGS[obj.heading])
        beam = np.zeros_like(t)
        umbrella = np.zeros_like(t)
        for ev in script.events_of(obj.index):
            p = np.clip((t - ev.start) / max(ev.end - ev.start, 1e-9), 0.0, 1.0)
            now = t >= ev.start
            during = now & (t < ev.end)
            pn = p[now]
            if ev.kind in ("turn", "circle"):
                sweep = (math.pi / 2 if ev.kind == "turn" else 2 * math.pi) * pn
                sign = 1.0 if ev.heading1 > ev.heading0 else -1.0
                fx, fy = math.cos(ev.heading0), math.sin(ev.heading0)
                nx, ny = math.cos(ev.heading0 + sign * math.pi / 2), math.sin(ev.heading0 + sign * math.pi / 2)
                along, across = ev.radius * np.sin(sweep), ev.radius * (1 - np.cos(sweep))
                x[now] = ev.x0 + along * fx + across * nx
                y[now] = ev.y0 + along * fy + across * ny
                heading[now] = ev.heading0 + sign * sweep
            else:
                x[now] = ev.x0 + (ev.x1 - ev.x0) * pn
                y[now] = ev.y0 + (ev.y1 - ev.y0) * pn
                heading[now] = ev.heading1
            if ev.kind == "flash":
                on = np.mod((t - ev.start) * ev.blink_hz, 1.0) < 0.5
                beam = np.where(during & on, 1.0, beam)
            elif ev.kind == "open":
                umbrella[now] = pn
            elif ev.kind == "close":
                umbrella[now] = 1.0 - pn
        out.append({"x": x, "y": y, "heading": heading, "beam": beam, "umbrella": umbrella})
    return out


def _sprite(
    shape: tuple[int, int], category: str, rgb: np.ndarray, umbrella_rgb: np.ndarray | None,
    x: float, y: float, theta: float, beam: float, umbrella: float, scale: float,
) -> tuple[int, int, int, int, Layers] | None:
    """An actor's bounding box on the canvas and the coverage layers that paint it there."""
    family, length, width = CATEGORIES[category]
    m = _MARGIN
    cx, cy = x + m, y + m
    reach = (1.6 * length if family == "vehicle" and beam > 0 else 0.8 * max(length, width)) * scale
    if family == "person":
        reach = max(reach, 8.0 * scale)
    h, w = shape
    x0, x1 = max(int(cx - reach) - 1, 0), min(int(math.ceil(cx + reach)) + 2, w)
    y0, y1 = max(int(cy - reach) - 1, 0), min(int(math.ceil(cy + reach)) + 2, h)
    if x0 >= x1 or y0 >= y1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - np.float32(cx), yy - np.float32(cy)
    c, s = math.cos(theta), math.sin(theta)
    u = c * dx + s * dy  # along the heading
    v = -s * dx + c * dy  # across it
    region: Layers = []
    hl, hw = 0.5 * length * scale, 0.5 * width * scale
    if family == "vehicle":
        if beam > 0:  # two headlight beams: a bright wedge ahead of the bonnet
            reach_u = u - hl
            wedge = np.maximum(np.maximum(-reach_u, reach_u - 1.2 * length * scale), np.abs(v) - (0.6 * hw + 0.5 * reach_u))
            _paint(region, wedge, _BEAM, 0.8 * beam)
        _paint(region, _box_sd(u, v, hl, hw, 1.2 * scale), rgb)
        if category == "motorbike":
            _paint(region, np.hypot(u + 0.1 * hl, v) - 1.6 * scale, _HAIR)  # the rider's helmet
        else:
            front = 0.32 * hl if category != "truck" else 0.62 * hl
            _paint(region, _box_sd(u - front, v, 0.16 * hl + 0.6, 0.8 * hw), _WINDOW)
            if category == "truck":  # a cargo box behind the cab
                _paint(region, _box_sd(u + 0.25 * hl, v, 0.68 * hl, 0.9 * hw), rgb * 0.8 + 45.0)
            else:
                _paint(region, _box_sd(u + 0.62 * hl, v, 0.1 * hl + 0.4, 0.75 * hw), _WINDOW)
    elif family == "person":
        _paint(region, _ellipse_sd(u, v, hl, hw), rgb)
        _paint(region, np.hypot(u, v) - 1.7 * scale, _HAIR)
        if umbrella > 0.02 and umbrella_rgb is not None:  # an umbrella seen from above: a ring with spokes
            ru = 7.5 * scale * (0.25 + 0.75 * umbrella)
            rho = np.hypot(u, v)
            _paint(region, np.abs(rho - 0.78 * ru) - 0.22 * ru, umbrella_rgb)
            spokes = np.abs(np.sin(2 * np.arctan2(v, u))) * rho - 0.5
            _paint(region, np.maximum(spokes, rho - ru), umbrella_rgb * 0.75)
    else:  # dog: body, head, tail
        _paint(region, _box_sd(u + hl + 0.8 * scale, v, 1.3 * scale, 0.45 * scale), rgb * 0.85)
        _paint(region, _ellipse_sd(u + 0.1 * hl, v, 0.75 * hl, hw), rgb)
        _paint(region, np.hypot(u - 0.78 * hl, v) - 1.8 * scale, rgb * 0.9)
    return (y0, y1, x0, x1, region) if region else None


def render_frames(script: StreetScript, clean: bool = False) -> Iterator[np.ndarray]:
    """Yield the video's frames, uint8 ``(height, width, 3)`` RGB, deterministically.

    ``clean``: without sensor noise and camera shake (tests measure what the actors change).
    """
    scene, light = background(script)
    rng = np.random.default_rng(script.background_seed + 1)
    noise_bank = [rng.normal(0, 4.0, size=scene.shape).astype(np.float32) for _ in range(_NOISE_BANK)]
    picks = rng.integers(_NOISE_BANK, size=script.num_frames)
    shifts = rng.integers(max(scene.shape[:2]), size=(script.num_frames, 2))
    # camera shake: a mean-reverting random walk (Ornstein-Uhlenbeck), rounded to whole pixels within +-1
    steps = rng.normal(0, 0.4, size=(script.num_frames, 2))
    drift = np.zeros(2)
    shake = np.zeros((script.num_frames, 2), int)
    for f in range(script.num_frames):
        drift = 0.85 * drift + steps[f]
        shake[f] = np.clip(np.rint(drift), -1, 1)
    trs = tracks(script)
    scale = script.width / REF_WIDTH
    order = sorted(range(len(script.objects)), key=lambda i: ("vehicle", "dog", "person").index(script.objects[i].family))
    looks = []
    for obj in script.objects:
        rgb = np.asarray(PALETTES[obj.family][obj.colour], np.float32)
        umb = np.asarray(UMBRELLA_COLOURS[obj.umbrella], np.float32) if obj.umbrella else None
        looks.append((rgb, umb))
    m, h, w = _MARGIN, script.height, script.width
    cache: dict[int, tuple[tuple[float, ...], tuple[int, int, int, int, Layers] | None]] = {}
    for f in range(script.num_frames):
        canvas = scene.copy()
        for i in order:
            tr = trs[i]
            x, y, th, beam, umbrella = (float(tr[k][f]) for k in ("x", "y", "heading", "beam", "umbrella"))
            key = (x, y, th, beam, umbrella)
            if i not in cache or cache[i][0] != key:  # actors stand still most of the time: reuse
                rgb, umb = looks[i]
                shape = (canvas.shape[0], canvas.shape[1])
                cache[i] = (key, _sprite(shape, script.objects[i].category, rgb, umb, x, y, th, beam, umbrella, scale))
            _composite(canvas, cache[i][1])
        noise = np.roll(noise_bank[picks[f]], shift=(int(shifts[f, 0]), int(shifts[f, 1])), axis=(0, 1))
        frame = canvas * light if clean else canvas * light + noise
        sy, sx = (m, m) if clean else (m + int(shake[f, 0]), m + int(shake[f, 1]))
        yield np.clip(frame[sy:sy + h, sx:sx + w], 0, 255).astype(np.uint8)
