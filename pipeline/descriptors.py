"""Classical per-patch video descriptors: colour, motion and shape, computed beside a 3D-CNN.

Random-init 3D-CNNs (the only networks this project can build without downloaded weights)
carry little of what grounding needs (measured in docs/features.md). The pre-deep video
literature described clips with hand-built histograms instead; this module computes five
families of them on the same decoded clip the backbone sees, pooled to the same
``grid x grid`` patches, so they join the CNN's channels as extra "layers" of any
backbone (``--layer layer2+layer3+colour+motion+shape+objects``; the CPU default is
``--backbone classic``, i.e. ``colour+motion+shape+objects`` alone):

- ``colour`` (30-d): a soft hue histogram (12 bins) weighted by chroma plus three lightness
  bins for achromatic pixels (dark / mid / bright, e.g. a white object), each as the
  fraction of the patch covered, averaged over the clip, and its change from the clip's first
  third to its last third (a colour change, something appearing or leaving).
- ``motion`` (14-d): the normal flow ``-I_t grad I`` of a blurred grey image (the component of
  motion along the image gradient, Horn & Schunck's constraint), as an 8-bin direction
  histogram weighted by its magnitude, its mean vector (net direction), the divergence and
  curl of the flow around its energy centroid (grow / shrink, spin), the grey motion energy
  ``|I_t|`` and the colour change energy ``|d RGB / dt|`` (blink, recolour).
- ``shape`` (8-d): an unsigned gradient-orientation histogram (HOG, 8 bins) of the chroma image,
  where saturated objects stand out from a greyish background, averaged over the clip.
- ``change`` (39-d): *what* changes, undiluted by the patch's size. The families above are
  fractions of the patch's area, so a 5-px object in a 40-px patch moves them by 1-2 %. Here
  every pixel is weighted by how much it changes between two frames (``|d RGB / dt|``) and
  the averages are taken over that weight instead of the area: the colour histogram of the
  changing pixels (both frames of each pair: what arrives and what leaves), its signed
  difference (after minus before: appear vs disappear, recolour from -> to), and the
  direction histogram of the normal flow normalised by the flow's own magnitude; plus the
  change mass itself (``log1p`` of the mean weight, x 100). A red ball moving left gives
  red + leftward in one patch vector whatever its size, which binds an object's colour to
  its motion at the pixel level.
- ``objects`` (33-d): the clip's *foreground*, the pixels that differ from the clip's own
  background (the per-pixel temporal median of the smoothed clip, compared at the best of
  the 3x3 shifts and above the background's own local gradient, so a camera shake of a pixel
  or less and sensor noise are not foreground), followed
  through the clip as a mass per frame: its colour histogram (normalised by the mass: a
  4-px walker's shirt reads at full strength), its net displacement (centroid of the second
  half minus the first, as a vector and an 8-bin direction histogram), path length (a loop
  is long with no net displacement), mass, mass change (appear / leave / open), flicker (a
  blinking light), elongation and orientation of the mass (second moments) and their turn
  between the halves. Things that act move or change against a background that does not;
  this family keeps them and drops the scene.

Every value is a per-pixel average, so it is comparable across patch sizes and resolutions;
square roots compress the histograms (Hellinger). The feature store's per-dimension
standardisation then puts them on the CNN channels' scale. No weights, no randomness:
the descriptors are the same on every machine.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.nn import functional as F

HUE_BINS = 12
GREY_BINS = 3
DIRECTION_BINS = 8
ORIENTATION_BINS = 8

DESCRIPTORS: dict[str, int] = {
    "colour": 2 * (HUE_BINS + GREY_BINS),
    "motion": DIRECTION_BINS + 6,
    "shape": ORIENTATION_BINS,
    "change": 2 * (HUE_BINS + GREY_BINS) + DIRECTION_BINS + 1,
    "objects": (HUE_BINS + GREY_BINS) + DIRECTION_BINS + 10,
}

# foreground: a pixel's smoothed colour differs from the clip's background (its temporal
# median, at the best of the 3x3 shifts so that a camera shake is not motion) by more
# than FG_LOW (no weight) .. FG_HIGH (full weight), in mean-absolute RGB on [0, 1]: ~10 and
# ~25 grey levels, above blurred sensor noise of several grey levels
FG_LOW = 0.04
FG_HIGH = 0.10
FG_EPS = 0.002  # prior mass (fraction of a region) at the region's centre: no mass, no motion

GREY_CENTRES = (0.15, 0.5, 0.85)  # lightness bins of achromatic pixels (dark / mid / bright)

# How it is computed. The values are those of the direct per-pixel formulation (per-pixel
# maps averaged over the frames, then over each patch), to float rounding; the rewrite that
# made it ~3x faster on CPU is held to that formulation's stored outputs by
# tests/test_descriptors_reference.py. Every descriptor is an average over a region of
# per-pixel terms, averaged over frames, so each frame is pooled first (into the P patches
# plus the whole frame) and the averages over frames are taken on those few numbers:
# - soft histograms never exist per pixel: each pixel's weight, split between two
#   neighbouring slots, is added straight into its patch's slot (:class:`_RegionHist`; when
#   the grid does not tile the frame, into per-pixel maps pooled as below). Angles in
#   [-pi, pi] take an unwrapped slot range, folded into the circular bins after pooling;
# - other maps are pooled by one matrix product with a fixed [pixels, P + 1] weight matrix
#   (:func:`_region_weights`: the adaptive average pool's windows, for the motion maps with
#   the bilinear upsampling folded in); their products with the pixel's coordinates
#   (moments, divergence, curl) are more columns of it, not per-pixel products;
# - sums whose differences cancel (the colour change between thirds of the clip) are
#   float64, so that pixels which do not change cancel as they did per pixel;
# - the background median is a selection network (:func:`_median_network`), and only the
#   pixels that the unshifted background leaves in the foreground meet the 8 shifted ones;
# - terms several families use (chroma, frame differences) are computed once per forward.


def _soft_bins(angle: torch.Tensor, bins: int, period: float) -> torch.Tensor:
    """Linear (triangular) soft assignment of angles to ``bins`` circular bins: [..., bins]."""
    pos = torch.remainder(angle, period) * (bins / period)
    lo = torch.floor(pos)
    frac = pos - lo
    lo_i = lo.long() % bins
    hi_i = (lo_i + 1) % bins
    out = torch.zeros(*angle.shape, bins, dtype=angle.dtype, device=angle.device)
    out.scatter_add_(-1, lo_i.unsqueeze(-1), (1 - frac).unsqueeze(-1))
    out.scatter_add_(-1, hi_i.unsqueeze(-1), frac.unsqueeze(-1))
    return out


def _unwrapped_bins(bins: int, period: float) -> tuple[int, int]:
    """(offset, width) of the unwrapped slots that angles in [-pi, pi] fall into: slot
    ``floor(angle * bins / period) + offset`` (and the next one) of ``width``."""
    half = round(math.pi / period * bins)  # bins spanned by [0, pi]
    return half + 1, 2 * half + 3


# the lightness bins as slots: floor((light - 0.15) / 0.35) in -1 .. 2, plus 1; slots 0 and 4
# (beyond the dark and the bright centre) are dropped
GREY_SLOTS = 5
HUE_OFFSET, HUE_SLOTS = _unwrapped_bins(HUE_BINS, 2 * math.pi)
COLOUR_SLOTS = HUE_SLOTS + GREY_SLOTS


@functools.lru_cache(maxsize=16)
def _fold_matrix(kind: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[bins, slots] 0/1: which output bin each slot adds to (``kind``: colour, direction,
    orientation)."""
    if kind == "colour":
        fold = torch.zeros(HUE_BINS + GREY_BINS, COLOUR_SLOTS, dtype=dtype)
        fold[:HUE_BINS, :HUE_SLOTS] = _fold_matrix("hue", dtype, torch.device("cpu"))
        for k in range(GREY_BINS):
            fold[HUE_BINS + k, HUE_SLOTS + 1 + k] = 1.0
        return fold.to(device)
    bins, period = {"hue": (HUE_BINS, 2 * math.pi), "direction": (DIRECTION_BINS, 2 * math.pi),
                    "orientation": (ORIENTATION_BINS, math.pi)}[kind]
    offset, width = _unwrapped_bins(bins, period)
    fold = torch.zeros(bins, width, dtype=dtype)
    fold[(torch.arange(width) - offset) % bins, torch.arange(width)] = 1.0
    return fold.to(device)


def _fold(pooled: torch.Tensor, kind: str) -> torch.Tensor:
    """[..., slots, R] pooled slots -> [..., bins, R] (:func:`_fold_matrix`)."""
    return torch.matmul(_fold_matrix(kind, pooled.dtype, pooled.device), pooled)


@functools.lru_cache(maxsize=32)
def _pixel_patches(h: int, w: int, grid: int, device: torch.device) -> torch.Tensor | None:
    """[h * w] the patch (row-major) of each pixel when the grid divides the frame (the
    adaptive pool's windows then tile it: one patch per pixel); None where windows overlap."""
    if h % grid or w % grid:
        return None
    rows = torch.arange(h) // (h // grid)
    cols = torch.arange(w) // (w // grid)
    return (rows[:, None] * grid + cols[None, :]).reshape(-1).to(device)


class _RegionHist:
    """Soft histograms of ``rows`` maps of h x w pixels, averaged over each patch and the
    whole frame without a per-pixel histogram: each entry (a pixel's weight split between two
    neighbouring slots) is added straight into its patch's slot when the grid tiles the
    frame, else into per-pixel maps pooled by :func:`_region_weights`."""

    def __init__(
        self, rows: int, src: tuple[int, int], grid: int, slots: int, like: torch.Tensor,
        size: tuple[int, int] | None = None, exact: bool = False,
    ) -> None:
        """``src``: the maps' (h, w); ``size``: pooled as if bilinearly resized to it;
        ``exact``: float64 sums, for histograms whose differences cancel to ~0 (a region's
        slot adds ~10^3 pixels: float32 sums of two frames differ by ~1e-8 where their
        pixels do not, and the signed square root makes that ~1e-4)."""
        h, w = src
        self.rows, self.h, self.w, self.grid, self.slots = rows, h, w, grid, slots
        self.size = size or src
        self.like = like
        patch = _pixel_patches(h, w, grid, like.device) if self.size == src else None
        p = grid * grid
        dtype = torch.float64 if exact else like.dtype
        if patch is not None:
            row = torch.arange(rows, device=like.device).unsqueeze(1) * (p * slots)
            self.base: torch.Tensor | None = row + patch.unsqueeze(0) * slots  # [rows, S]
            self.sums = like.new_zeros(rows * p * slots, dtype=dtype)
        else:
            self.base = None
            self.sums = like.new_zeros(rows, slots, h * w, dtype=dtype)

    def add(self, pos: torch.Tensor, weight: torch.Tensor, offset: int) -> None:
        """Entries at ``pos`` [rows, S] (in slot units; slot ``floor(pos) + offset`` gets
        ``(1 - frac) * weight``, the next one ``frac * weight``). ``pos`` is overwritten."""
        lo = torch.floor(pos)
        hi_w = pos.sub_(lo).mul_(weight)  # frac * weight
        lo_w = weight - hi_w  # (1 - frac) * weight
        idx = lo.to(torch.long)
        if self.base is not None:
            idx = idx.add_(self.base).add_(offset).view(-1)
            self.sums.scatter_add_(0, idx, lo_w.reshape(-1).to(self.sums.dtype))
            self.sums.scatter_add_(0, idx.add_(1), hi_w.reshape(-1).to(self.sums.dtype))
        else:
            idx = idx.add_(offset).unsqueeze(1)
            self.sums.scatter_add_(1, idx, lo_w.unsqueeze(1).to(self.sums.dtype))
            self.sums.scatter_add_(1, idx.add_(1), hi_w.unsqueeze(1).to(self.sums.dtype))

    def pooled(self) -> torch.Tensor:
        """[rows, slots, P + 1] the slots' averages over each patch and the whole frame."""
        if self.base is None:
            weights = _region_weights(*self.size, self.grid, (self.h, self.w), False,
                                      self.sums.dtype, self.sums.device)
            pooled = _pool(self.sums, weights)
        else:
            p = self.grid * self.grid
            means = self.sums.view(self.rows, p, self.slots) * (p / (self.h * self.w))
            pooled = torch.cat([means, means.mean(dim=1, keepdim=True)], dim=1).transpose(1, 2)
        return pooled.to(self.like.dtype)


def _axis_weights(n: int, src: int, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One axis of the region weights, float64: a map of ``src`` pixels bilinearly resized to
    ``n`` (the identity when equal) and averaged over the adaptive pool's ``grid`` windows ->
    ([grid, src] window weights, [src] whole-axis weights)."""
    windows = torch.zeros(grid, n, dtype=torch.float64)
    for i in range(grid):  # adaptive_avg_pool's windows: [floor(i n / g), ceil((i + 1) n / g))
        lo, hi = (i * n) // grid, -(-((i + 1) * n) // grid)
        windows[i, lo:hi] = 1.0 / (hi - lo)
    eye = torch.eye(src, dtype=torch.float64).unsqueeze(0)
    up = F.interpolate(eye, size=n, mode="linear", align_corners=False)[0]  # [src, n]
    return windows @ up.T, up.mean(dim=1)


@functools.lru_cache(maxsize=32)
def _region_weights(
    h: int, w: int, grid: int, src: tuple[int, int], moments: bool, dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """[sh * sw, K * (grid**2 + 1)]: a map of ``src`` = (sh, sw) pixels (row-major) times this
    matrix gives its average over each of the ``grid x grid`` patches (row-major) and, last,
    over the whole frame, of the map bilinearly resized to ``h x w`` as
    ``F.interpolate(..., align_corners=False)`` and ``F.adaptive_avg_pool2d`` would. With
    ``moments`` the columns repeat K = 6 times, weighted by the pixel's coordinates on
    [-1, 1] at ``src`` resolution: 1, x, y, x*x, y*y, x*y."""
    sh, sw = src
    ry, my = _axis_weights(h, sh, grid)
    rx, mx = _axis_weights(w, sw, grid)
    patches = (ry[:, None, :, None] * rx[None, :, None, :]).reshape(grid * grid, sh * sw)
    weights = torch.cat([patches, torch.outer(my, mx).reshape(1, sh * sw)]).T  # [S, R]
    if moments:
        ys = torch.linspace(-1.0, 1.0, sh, dtype=torch.float64).view(sh, 1).expand(sh, sw)
        xs = torch.linspace(-1.0, 1.0, sw, dtype=torch.float64).view(1, sw).expand(sh, sw)
        ys, xs = ys.reshape(-1, 1), xs.reshape(-1, 1)
        weights = torch.cat([weights * b for b in (1.0, xs, ys, xs * xs, ys * ys, xs * ys)], dim=1)
    return weights.to(dtype).contiguous().to(device)


def _pool(maps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[..., S] maps times [S, R'] region weights -> [..., R'] (one matrix product)."""
    return (maps.reshape(-1, maps.shape[-1]) @ weights).reshape(*maps.shape[:-1], weights.shape[1])


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Separable [1 4 6 4 1]/16 binomial blur of [N, C, H, W] (replicate padding), each channel
    on its own: four passes of the 2-tap sum per axis ([1 1]^4 = [1 4 6 4 1]), several times
    cheaper on CPU than a 5-tap convolution."""
    x = F.pad(x, (2, 2, 2, 2), mode="replicate")
    for _ in range(4):
        x = x[..., :-1, :] + x[..., 1:, :]
    for _ in range(4):
        x = x[..., :-1] + x[..., 1:]
    return x.mul_(1.0 / 256)


def _smooth(clips: torch.Tensor) -> torch.Tensor:
    """[b, 3, L, H, W] -> the same, each frame blurred by :func:`_blur`: the [1 4 6 4 1] / 16
    smoothing, under which sensor noise and thin lines shaken by a pixel fall below FG_LOW and a
    small saturated actor keeps most of its contrast."""
    b, _, n, h, w = clips.shape
    flat = clips.reshape(b * 3 * n, 1, h, w)
    parts = flat.split(8) if flat.device.type == "cpu" else [flat]  # L2-sized on CPU
    return torch.cat([_blur(part) for part in parts]).reshape(b, 3, n, h, w)


def _batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Batcher's odd-even merge sorting network of ``n`` inputs (comparators past ``n`` dropped,
    as for inputs padded with +inf)."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


@functools.lru_cache(maxsize=32)
def _median_network(n: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """The comparators of the sorting network that the lower median's position depends on, each
    as (i, j, min needed, max needed): a selection network, about half the sort's work."""
    need = {(n - 1) // 2}
    kept = []
    for i, j in reversed(_batcher_pairs(n)):
        lo, hi = i in need, j in need
        if lo or hi:
            kept.append((i, j, lo, hi))
            need |= {i, j}
    return tuple(reversed(kept))


def _lower_median(x: torch.Tensor) -> torch.Tensor:
    """``x.median(dim=1).values`` (the lower median) of [B, N, ...], by a selection network of
    elementwise min / max: several times faster on CPU than ``torch.median`` along a
    non-contiguous dimension, and exactly the same values."""
    vals = list(x.unbind(1))
    for i, j, lo, hi in _median_network(len(vals)):
        a, b = vals[i], vals[j]
        if lo:
            vals[i] = torch.minimum(a, b)
        if hi:
            vals[j] = torch.maximum(a, b)
    return vals[(len(vals) - 1) // 2]


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of [N, 1, H, W] (replicate padding): (d/dx, d/dy)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]).mul_(0.5)
    gy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]).mul_(0.5)
    return gx, gy


def _avg2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool2d(x, 2)`` (an odd last row / column dropped) as two strided sums: several
    times faster on CPU."""
    h, w = x.shape[-2:]
    rows = x[..., 0 : h - 1 : 2, :] + x[..., 1:h:2, :]
    return (rows[..., 0 : w - 1 : 2] + rows[..., 1:w:2]).mul_(0.25)


def _max3x3(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 3, stride=1, padding=1)`` of [N, C, H, W], as two 3-tap maxima."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")  # a border's copy never raises the maximum
    rows = torch.maximum(torch.maximum(p[..., :-2, :], p[..., 1:-1, :]), p[..., 2:, :])
    return torch.maximum(torch.maximum(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:])


class _Terms:
    """Per-pixel terms of one clip batch that several families share, computed on first use."""

    def __init__(self, rgb: torch.Tensor) -> None:
        self.rgb = rgb  # [B, 3, L, H, W]
        self.history: torch.Tensor | None = None  # [K, 3, L, H, W] the clips before rgb's first
        self._chroma: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._absdiff: torch.Tensor | None = None

    def opponent(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a, c, chroma) [B, L, H, W]: the opponent colour axes and the chroma."""
        if self._chroma is None:
            r, g, b = self.rgb[:, 0], self.rgb[:, 1], self.rgb[:, 2]
            a = r - 0.5 * (g + b)
            c = (math.sqrt(3.0) / 2.0) * (g - b)
            chroma = torch.sqrt(a * a + c * c + 1e-12)  # 0 (grey) .. 1 (saturated)
            self._chroma = (a, c, chroma)
        return self._chroma

    def absdiff(self) -> torch.Tensor:
        """|d RGB / dt| [B, 3, L - 1, H, W]."""
        if self._absdiff is None:
            self._absdiff = (self.rgb[:, :, 1:] - self.rgb[:, :, :-1]).abs_()
        return self._absdiff


def _add_colour(
    acc: _RegionHist, a: torch.Tensor, c: torch.Tensor, chroma: torch.Tensor, light: torch.Tensor,
    weight: torch.Tensor | None = None, shift: int = 0,
) -> None:
    """Add the soft hue (chroma-weighted) and grey-lightness histograms of [rows, S] pixels
    (opponent axes, chroma, lightness; times ``weight`` if given) to ``acc``'s
    :data:`COLOUR_SLOTS` slots from ``shift`` on (:func:`_fold` "colour" gives the 15 bins)."""
    sat = (chroma / 0.75).clamp_(0, 1)  # soft "this pixel is coloured" weight
    grey = 1.0 - sat
    if weight is not None:
        sat = sat.mul_(weight)
        grey = grey.mul_(weight)
    acc.add(torch.atan2(c, a).mul_(HUE_BINS / (2 * math.pi)), sat, shift + HUE_OFFSET)
    # relu(1 - |light - centre| / 0.35) for the centres 0.15, 0.5, 0.85 (0.35 apart): linear
    # between neighbouring centres, a tail beyond the end ones
    acc.add((light - GREY_CENTRES[0]).div_(0.35), grey, shift + HUE_SLOTS + 1)


class ClassicalDescriptors(nn.Module):
    """Hand-built colour, motion and shape descriptors of RGB clips, pooled to a patch grid.

    ``forward(rgb)`` with ``rgb`` [B, 3, L, H, W] in [0, 1] returns
    ``{"clip": [B, D], "patches": [B, grid**2, D]}`` for the requested ``families`` (in the
    order given), D = the sum of their widths in :data:`DESCRIPTORS`. The clip feature is the
    same descriptor computed over the whole frame.
    """

    def __init__(self, families: list[str], grid: int, background_clips: int = 0) -> None:
        super().__init__()
        unknown = [f for f in families if f not in DESCRIPTORS]
        if unknown:
            raise ValueError(f"unknown descriptors {unknown}; choose from {list(DESCRIPTORS)}")
        if background_clips < 0:
            raise ValueError(f"background_clips must be >= 0, got {background_clips}")
        self.families = list(families)
        self.grid = grid
        self.dim = sum(DESCRIPTORS[f] for f in families)
        # clips before a clip whose frames (every other one) join its `objects` background
        self.background_clips = background_clips if "objects" in families else 0

    # ------------------------------------------------------------------ helpers

    def _weights(
        self, x: torch.Tensor, src: tuple[int, int], size: tuple[int, int] | None = None,
        moments: bool = False,
    ) -> torch.Tensor:
        """Region weights of ``src``-sized maps (resized to ``size``, default ``src``)."""
        h, w = size or src
        return _region_weights(h, w, self.grid, src, moments, x.dtype, x.device)

    def _split(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, D, P + 1] region values -> (clip [B, D], patches [B, P, D])."""
        return pooled[..., -1], pooled[..., :-1].transpose(1, 2)

    def _zeros(self, rgb: torch.Tensor, family: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(clip, patches) of zeros of ``family``'s width: a one-frame clip has no change."""
        width, bsz = DESCRIPTORS[family], rgb.shape[0]
        return rgb.new_zeros(bsz, width), rgb.new_zeros(bsz, self.grid * self.grid, width)

    # ------------------------------------------------------------------ families

    def _colour(self, terms: _Terms) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame hue / lightness histograms: their clip mean and last-third - first-third."""
        rgb = terms.rgb
        bsz, _, n, h, w = rgb.shape
        a, c, chroma = terms.opponent()
        light = rgb.sum(dim=1).mul_(1.0 / 3.0)  # [B, L, H, W]
        s = h * w
        acc = _RegionHist(bsz * n, (h, w), self.grid, COLOUR_SLOTS, rgb, exact=True)
        _add_colour(acc, a.reshape(-1, s), c.reshape(-1, s), chroma.reshape(-1, s), light.reshape(-1, s))
        pooled = _fold(acc.pooled(), "colour").reshape(bsz, n, HUE_BINS + GREY_BINS, -1)
        third = max(1, n // 3)
        mean = pooled.mean(dim=1)
        change = pooled[:, n - third :].mean(dim=1) - pooled[:, :third].mean(dim=1)
        return self._split(torch.cat([mean, change], dim=1))

    def _normal_flow(self, grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Blurred grey frames [B, L, h, w] -> the normal flow ``-I_t grad I`` (fx, fy) and
        ``I_t`` of each pair of consecutive frames, [B * (L - 1), 1, h, w] each."""
        hh, ww = grey.shape[-2:]
        avg = 0.5 * (grey[:, 1:] + grey[:, :-1]).reshape(-1, 1, hh, ww)
        gx, gy = _gradients(avg)
        it = (grey[:, 1:] - grey[:, :-1]).reshape(-1, 1, hh, ww)
        # normal flow scaled by the gradient: points along the motion's component across edges
        return -it * gx, -it * gy, it

    def _motion(self, terms: _Terms) -> tuple[torch.Tensor, torch.Tensor]:
        """Normal flow at (up to) half resolution, pooled as if resized to the clip's size."""
        rgb = terms.rgb
        bsz, _, n, h, w = rgb.shape
        if n < 2:
            return self._zeros(rgb, "motion")
        grey = rgb.mean(dim=1).reshape(bsz * n, 1, h, w)
        grey = F.avg_pool2d(grey, 2) if min(h, w) >= 32 else grey  # halve displacements
        grey = _blur(grey)
        hh, ww = grey.shape[-2:]
        fx, fy, it = self._normal_flow(grey.reshape(bsz, n, hh, ww))
        m, s = bsz * (n - 1), hh * ww
        offset, slots = _unwrapped_bins(DIRECTION_BINS, 2 * math.pi)
        acc = _RegionHist(m, (hh, ww), self.grid, slots, rgb, (h, w))
        angle = torch.atan2(fy, fx).reshape(m, s).mul_(DIRECTION_BINS / (2 * math.pi))
        acc.add(angle, torch.hypot(fx, fy).reshape(m, s), offset)
        direction = _fold(acc.pooled(), "direction").reshape(bsz, n - 1, DIRECTION_BINS, -1)
        direction = direction.mean(dim=1)
        # fx, fy and the energy |I_t| against the weights 1, x, y (of a [-1, 1] frame)
        weights = self._weights(rgb, (hh, ww), (h, w), moments=True)
        r = weights.shape[1] // 6
        flow = torch.cat([fx, fy, it.abs_()], dim=1).reshape(m, 3, s)
        mom = _pool(flow, weights[:, : 3 * r]).reshape(bsz, n - 1, 3, 3, r).mean(dim=1)
        f_x, f_y, energy = mom[:, 0, 0], mom[:, 1, 0], mom[:, 2, 0]
        ex, ey = mom[:, 2, 1], mom[:, 2, 2]
        radial = mom[:, 0, 1] + mom[:, 1, 2]  # mean f . p
        tangential = mom[:, 0, 2] - mom[:, 1, 1]  # mean p x f
        absdiff = terms.absdiff().reshape(bsz, 3 * (n - 1), h * w)
        colour_change = _pool(absdiff, self._weights(rgb, (h, w))).mean(dim=1)
        # divergence / curl of the flow about each region's energy centroid
        safe = energy.clamp_min(1e-6)
        cx, cy = ex / safe, ey / safe
        div = radial - (cx * f_x + cy * f_y)  # mean f . (p - c)
        curl = tangential - (cy * f_x - cx * f_y)  # mean (p - c) x f
        extra = torch.stack([f_x, f_y, div, curl, energy, colour_change], dim=1)
        return self._split(torch.cat([direction, extra], dim=1))

    def _change(self, terms: _Terms) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 3, L, H, W] -> (clip [B, 39], patches [B, P, 39]): change-weighted averages."""
        rgb = terms.rgb
        bsz, _, n, h, w = rgb.shape
        if n < 2:
            return self._zeros(rgb, "change")
        s = h * w
        a, c, chroma = terms.opponent()
        light = rgb.sum(dim=1).mul_(1.0 / 3.0).reshape(bsz, n, s)
        a, c, chroma = a.reshape(bsz, n, s), c.reshape(bsz, n, s), chroma.reshape(bsz, n, s)
        # sum over pairs of w_t (h_t + h_t+1) / 2 and w_t (h_t+1 - h_t) = sum over frames of
        # h_t (w_t-1 + w_t) / 2 and h_t (w_t-1 - w_t), w_-1 = w_L-1 = 0
        weight = terms.absdiff().mean(dim=1).reshape(bsz, n - 1, s)  # [B, n-1, S]
        pad = F.pad(weight, (0, 0, 1, 1))  # [B, n+1, S]
        involved_w = (pad[:, :-1] + pad[:, 1:]).mul_(0.5)  # [B, n, S]
        signed_w = pad[:, :-1] - pad[:, 1:]
        acc = _RegionHist(bsz * n, (h, w), self.grid, 2 * COLOUR_SLOTS, rgb, exact=True)
        fa, fc, fchroma, flight = (x.reshape(-1, s) for x in (a, c, chroma, light))
        _add_colour(acc, fa, fc, fchroma, flight, weight=involved_w.reshape(-1, s))
        _add_colour(acc, fa, fc, fchroma, flight, weight=signed_w.reshape(-1, s), shift=COLOUR_SLOTS)
        hists = acc.pooled().reshape(bsz, n, 2, COLOUR_SLOTS, -1).sum(dim=1)
        inv, sig = _fold(hists[:, 0], "colour"), _fold(hists[:, 1], "colour")
        grey = _blur(rgb.mean(dim=1).reshape(bsz * n, 1, h, w)).reshape(bsz, n, h, w)
        fx, fy, _ = self._normal_flow(grey)
        mag = torch.hypot(fx, fy).reshape(-1, s)
        offset, slots = _unwrapped_bins(DIRECTION_BINS, 2 * math.pi)
        acc = _RegionHist(bsz * (n - 1), (h, w), self.grid, slots, rgb)
        angle = torch.atan2(fy, fx).reshape(-1, s).mul_(DIRECTION_BINS / (2 * math.pi))
        acc.add(angle, mag, offset)
        dirs = _fold(acc.pooled().reshape(bsz, n - 1, slots, -1).sum(dim=1), "direction")
        weights = self._weights(rgb, (h, w))
        flow_mass = _pool(mag.reshape(bsz, n - 1, s), weights).sum(dim=1, keepdim=True)  # [B, 1, R]
        m = _pool(weight, weights).sum(dim=1, keepdim=True)  # [B, 1, R]
        per_pair = m / (n - 1)
        pooled = torch.cat(
            [inv / (m + 1e-4), sig / (m + 1e-4), dirs / (flow_mass + 1e-6),
             torch.log1p(100.0 * per_pair)],
            dim=1,
        )
        return self._split(pooled)

    def _objects(self, terms: _Terms) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 3, L, H, W] -> (clip [B, 33], patches [B, P, 33]): the clip's foreground."""
        rgb = terms.rgb
        bsz, _, n, h, w = rgb.shape
        if n < 2:
            return self._zeros(rgb, "objects")
        window = self.background_clips
        if window:  # each clip has its own window of clips before it: every frame is smoothed once
            smooth = _smooth(rgb)
            every_other = smooth[:, :, ::2]  # the frames a later clip's background takes
            history = terms.history
            if history is not None and history.shape[0]:
                every_other = torch.cat([_smooth(history[:, :, ::2]), every_other])
            first = every_other.shape[0] - bsz  # index of rgb's first clip in every_other
            masks = []
            for k in range(bsz):
                before = every_other[max(0, first + k - window) : first + k]  # [m, 3, L', H, W]
                masks.append(self._foreground(
                    rgb[k : k + 1], before.transpose(0, 1).reshape(1, 3, -1, h, w) if before.shape[0] else None,
                    changing=True, smooth=smooth[k : k + 1]))
            mask = torch.cat(masks)
        elif rgb.device.type == "cpu":  # one clip at a time: its temporaries stay in the cache
            mask = torch.cat([self._foreground(rgb[k : k + 1]) for k in range(bsz)])
        else:
            mask = self._foreground(rgb)
        frames = rgb
        if min(h, w) >= 64:  # moments and colours at half resolution: a quarter of that work
            mask = _avg2x2(mask)
            frames = _avg2x2(rgb.reshape(bsz, 3 * n, h, w))
            h, w = frames.shape[-2:]
            frames = frames.reshape(bsz, 3, n, h, w)
        s = h * w
        r, g, b = frames[:, 0], frames[:, 1], frames[:, 2]  # [B, L, h, w]
        a = r - 0.5 * (g + b)
        c = (math.sqrt(3.0) / 2.0) * (g - b)
        chroma = torch.sqrt(a * a + c * c + 1e-12)
        light = (r + g + b).mul_(1.0 / 3.0)
        mask = mask.reshape(bsz * n, s)
        acc = _RegionHist(bsz * n, (h, w), self.grid, COLOUR_SLOTS, rgb)
        _add_colour(acc, a.reshape(-1, s), c.reshape(-1, s), chroma.reshape(-1, s), light.reshape(-1, s), mask)
        hist = _fold(acc.pooled(), "colour")  # [B*L, 15, R]
        # float64: the second moments' variances (E[x x] - E[x]^2) cancel in small masses
        weights = _region_weights(h, w, self.grid, (h, w), True, torch.float64, rgb.device)
        rr = weights.shape[1] // 6
        moments = (mask.to(torch.float64) @ weights).to(rgb.dtype).reshape(bsz * n, 6, rr)
        # [B, L, R, 21]: m, mx, my, mxx, myy, mxy, then the 15 colour bins
        v = torch.cat([moments, hist], dim=1).reshape(bsz, n, 21, rr).transpose(2, 3)
        centres = weights[:, rr : 3 * rr].reshape(s, 2, rr).sum(0)[:, :-1].T.to(rgb.dtype)  # [P, 2]
        return (self._finish_objects(v[:, :, -1:], torch.zeros_like(centres[:1]))[:, 0],
                self._finish_objects(v[:, :, :-1], centres))

    @staticmethod
    def _foreground(clips: torch.Tensor, before: torch.Tensor | None = None, changing: bool = False,
                    smooth: torch.Tensor | None = None) -> torch.Tensor:
        """[b, 3, L, H, W] clips -> [b, L, H, W] foreground weight in [0, 1] of each pixel.

        ``smooth``: the clips already smoothed (:func:`_smooth`), else they are smoothed here.
        ``before`` [b, 3, E, H, W]: smoothed frames of the clips before, which join the background
        median: an actor slower than its own size per clip covers a pixel for most of a short
        clip and would be its own background (docs/features.md, "A longer background").
        ``changing``: a pixel counts only as far as its value changes within the clip (its range
        over the frames, thresholded like the distance), so an actor that has stopped, or the
        street it uncovered, is not foreground while the longer background still remembers it."""
        b, _, n, h, w = clips.shape
        if smooth is None:
            smooth = _smooth(clips)
        pool = smooth if before is None else torch.cat([before, smooth], dim=2)
        background = _lower_median(pool.transpose(1, 2))  # [b, 3, H, W] the clip's background
        # a shake of a fraction of a pixel changes a pixel by up to its gradient: the threshold
        # rises with the background's own gradient (largest over the 3x3 shifts), so edges and
        # thin lines of the scene do not count, flat road or grass keeps the low threshold
        gx, gy = _gradients(background.reshape(b * 3, 1, h, w))
        slope = _max3x3((gx.abs_() + gy.abs_()).reshape(b, 3, h, w).mean(dim=1, keepdim=True))
        # distance to the background at the best of the 3x3 shifts: a camera shake is no motion.
        # The weight only grows with the distance, and the best shift's distance is at most the
        # unshifted one's: a pixel that the unshifted background gives weight 0 keeps it, and
        # only the others (the few that move) are compared with the 8 shifted backgrounds
        dist = (smooth - background.unsqueeze(2)).abs_()
        total = dist[:, 0] + dist[:, 1]
        total += dist[:, 2]  # [b, L, H, W] sum over the colour channels

        def weight(total: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
            diff = total * (1.0 / 3.0)  # mean over the colour channels
            return diff.sub_(slope).sub_(FG_LOW).mul_(1.0 / (FG_HIGH - FG_LOW)).clamp_(0, 1)

        mask = weight(total, slope)
        if changing:
            spread = (smooth.amax(dim=2) - smooth.amin(dim=2)).sum(dim=1)  # [b, H, W]
            mask.mul_(weight(spread, slope[:, 0]).unsqueeze(1))
        moving = (mask > 0).nonzero()  # [K, 4]: clip, frame, y, x
        if moving.shape[0] == 0:
            return mask
        ci, ti, yi, xi = moving.unbind(1)
        padded = F.pad(background, (1, 1, 1, 1), mode="replicate")  # [b, 3, H+2, W+2]
        frame = smooth[ci, :, ti, yi, xi]  # [K, 3]
        best = total[ci, ti, yi, xi]
        for dy in range(3):
            for dx in range(3):
                if dy != 1 or dx != 1:  # the unshifted background is done
                    d = (frame - padded[ci, :, yi + dy, xi + dx]).abs_()
                    best = torch.minimum(best, (d[:, 0] + d[:, 1]).add_(d[:, 2]))
        best = weight(best, slope[ci, 0, yi, xi])
        mask[ci, ti, yi, xi] = best.mul_(weight(spread[ci, yi, xi], slope[ci, 0, yi, xi])) if changing else best
        return mask

    def _finish_objects(self, v: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Per-frame pooled moments [B, L, R, 21] of R regions (centres [R, 2]) -> [B, R, 33]."""
        n = v.shape[1]
        half = n // 2
        mass = v[..., 0]  # [B, L, R] fraction of the region in the foreground
        cx = (v[..., 1] + FG_EPS * centres[:, 0]) / (mass + FG_EPS)
        cy = (v[..., 2] + FG_EPS * centres[:, 1]) / (mass + FG_EPS)

        def halves(x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            a = (x[:, :half] * weights[:, :half]).sum(1) / weights[:, :half].sum(1).clamp_min(1e-12)
            b = (x[:, half:] * weights[:, half:]).sum(1) / weights[:, half:].sum(1).clamp_min(1e-12)
            return a, b

        weight = mass + FG_EPS
        x0, x1 = halves(cx, weight)
        y0, y1 = halves(cy, weight)
        dx, dy = x1 - x0, y1 - y0  # net displacement, in half-frame units
        scale = float(self.grid) if v.shape[2] > 1 else 1.0  # patch widths, comparable across grids
        dx, dy = dx * scale, dy * scale
        direction = _soft_bins(torch.atan2(dy, dx), DIRECTION_BINS, 2 * math.pi)
        direction = direction * torch.hypot(dx, dy).unsqueeze(-1)
        path = torch.hypot(cx[:, 1:] - cx[:, :-1], cy[:, 1:] - cy[:, :-1]).sum(1) * scale
        mean_mass = mass.mean(1)
        third = max(1, n // 3)
        grow = (mass[:, n - third :].mean(1) - mass[:, :third].mean(1)) / (mean_mass + FG_EPS)
        flicker = mass.std(1) / (mean_mass + FG_EPS)
        total = v.sum(1)  # [B, R, 21]
        tm = total[..., 0] + FG_EPS
        colour = total[..., 6:] / tm.unsqueeze(-1)

        def orientation(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            mm = s[..., 0] + FG_EPS
            mx, my = s[..., 1] / mm, s[..., 2] / mm
            vxx = (s[..., 3] / mm - mx * mx).clamp_min(0)
            vyy = (s[..., 4] / mm - my * my).clamp_min(0)
            vxy = s[..., 5] / mm - mx * my
            spread = vxx + vyy + 1e-8
            return (vxx - vyy) / spread, 2 * vxy / spread, spread  # elongation x (cos, sin) 2 theta

        c2, s2, spread = orientation(total)
        a2, b2, _ = orientation(v[:, :half].sum(1))
        a3, b3, _ = orientation(v[:, half:].sum(1))
        turn = a2 * b3 - b2 * a3  # sin of twice the turn, scaled by both elongations
        size = torch.sqrt(spread) * scale
        extra = torch.stack([mean_mass, dx, dy, path, grow, flicker, c2, s2, turn, size], dim=-1)
        return torch.cat([colour, direction, extra], dim=-1)

    def _shape(self, terms: _Terms) -> tuple[torch.Tensor, torch.Tensor]:
        """Unsigned gradient-orientation histogram of the chroma image, averaged over frames."""
        bsz, _, n, h, w = terms.rgb.shape
        chroma = terms.opponent()[2].reshape(bsz * n, 1, h, w)
        gx, gy = _gradients(chroma)
        s = h * w
        offset, slots = _unwrapped_bins(ORIENTATION_BINS, math.pi)
        acc = _RegionHist(bsz * n, (h, w), self.grid, slots, terms.rgb)
        angle = torch.atan2(gy, gx).reshape(-1, s).mul_(ORIENTATION_BINS / math.pi)
        acc.add(angle, torch.hypot(gx, gy).reshape(-1, s), offset)
        pooled = _fold(acc.pooled(), "orientation")
        return self._split(pooled.reshape(bsz, n, ORIENTATION_BINS, -1).mean(dim=1))

    # ------------------------------------------------------------------ forward

    def forward(self, rgb: torch.Tensor, history: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``history`` [K, 3, L, H, W]: the clips of the same video just before ``rgb``'s first
        (RGB in [0, 1]), read by the ``objects`` background when ``background_clips`` > 0; the
        features of a clip then do not depend on how the video was cut into batches."""
        rgb = rgb.float().clamp(0, 1)
        if bool(torch.isnan(rgb).any()):
            raise ValueError("classical descriptors: the clip has NaN pixels; pass RGB in [0, 1]")
        terms = _Terms(rgb)
        if history is not None and self.background_clips:
            terms.history = history.float().clamp(0, 1)[-self.background_clips :]
        run = {"colour": self._colour, "motion": self._motion, "change": self._change,
               "objects": self._objects, "shape": self._shape}
        clips, patches = [], []
        for fam in self.families:
            c, p = run[fam](terms)
            clips.append(c)
            patches.append(p)
        clip = torch.cat(clips, dim=-1)
        patch = torch.cat(patches, dim=-1)
        # signed square root compresses heavy-tailed histogram mass (Hellinger-style)
        return {
            "clip": torch.sign(clip) * torch.sqrt(clip.abs()),
            "patches": torch.sign(patch) * torch.sqrt(patch.abs()),
        }


__all__ = ["DESCRIPTORS", "ClassicalDescriptors"]
