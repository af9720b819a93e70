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


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Separable [1 4 6 4 1]/16 binomial blur of [N, C, H, W] (replicate padding), each channel
    on its own: four passes of the 2-tap sum per axis ([1 1]^4 = [1 4 6 4 1]), several times
    cheaper on CPU than a 5-tap convolution."""
    x = F.pad(x, (2, 2, 2, 2), mode="replicate")
    for _ in range(4):
        x = x[..., :-1, :] + x[..., 1:, :]
    for _ in range(4):
        x = x[..., :-1] + x[..., 1:]
    return x * (1.0 / 256)


def _lower_median(x: torch.Tensor) -> torch.Tensor:
    """``x.median(dim=1).values`` (the lower median) of [B, N, ...], by an odd-even
    transposition sorting network of elementwise min / max: several times faster on CPU
    than ``torch.median`` along a non-contiguous dimension, and exactly the same values."""
    vals = list(x.unbind(1))
    n = len(vals)
    for r in range(n):
        for i in range(r % 2, n - 1, 2):
            a, b = vals[i], vals[i + 1]
            vals[i], vals[i + 1] = torch.minimum(a, b), torch.maximum(a, b)
    return vals[(n - 1) // 2]


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of [N, 1, H, W] (replicate padding): (d/dx, d/dy)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) * 0.5
    gy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) * 0.5
    return gx, gy


class ClassicalDescriptors(nn.Module):
    """Hand-built colour, motion and shape descriptors of RGB clips, pooled to a patch grid.

    ``forward(rgb)`` with ``rgb`` [B, 3, L, H, W] in [0, 1] returns
    ``{"clip": [B, D], "patches": [B, grid**2, D]}`` for the requested ``families`` (in the
    order given), D = the sum of their widths in :data:`DESCRIPTORS`. The clip feature is the
    same descriptor computed over the whole frame.
    """

    def __init__(self, families: list[str], grid: int) -> None:
        super().__init__()
        unknown = [f for f in families if f not in DESCRIPTORS]
        if unknown:
            raise ValueError(f"unknown descriptors {unknown}; choose from {list(DESCRIPTORS)}")
        self.families = list(families)
        self.grid = grid
        self.dim = sum(DESCRIPTORS[f] for f in families)

    # ------------------------------------------------------------------ pooling helpers

    def _pool(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, C, H, W] per-pixel values -> (clip [B, C], patches [B, P, C]) averages."""
        clip = maps.mean(dim=(2, 3))
        patches = F.adaptive_avg_pool2d(maps, self.grid).flatten(2).transpose(1, 2)
        return clip, patches

    # ------------------------------------------------------------------ families

    def _colour(self, rgb: torch.Tensor) -> torch.Tensor:
        """[B, 3, L, H, W] -> per-pixel maps [B, 2 * (HUE + GREY), H, W]."""
        r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]  # [B, L, H, W]
        a = r - 0.5 * (g + b)
        c = (math.sqrt(3.0) / 2.0) * (g - b)
        chroma = torch.sqrt(a * a + c * c + 1e-12)  # 0 (grey) .. 1 (saturated)
        hue = torch.atan2(c, a)
        sat = (chroma / 0.75).clamp(0, 1)  # soft "this pixel is coloured" weight
        hue_h = _soft_bins(hue, HUE_BINS, 2 * math.pi) * sat.unsqueeze(-1)  # [B, L, H, W, 12]
        light = (r + g + b) / 3.0
        grey = 1.0 - sat
        centres = torch.tensor([0.15, 0.5, 0.85], dtype=rgb.dtype, device=rgb.device)
        light_w = torch.relu(1.0 - (light.unsqueeze(-1) - centres).abs() / 0.35)
        grey_h = light_w * grey.unsqueeze(-1)  # [B, L, H, W, 3]
        h = torch.cat([hue_h, grey_h], dim=-1).permute(0, 1, 4, 2, 3)  # [B, L, 15, H, W]
        n = h.shape[1]
        third = max(1, n // 3)
        mean = h.mean(dim=1)
        change = h[:, n - third :].mean(dim=1) - h[:, :third].mean(dim=1)
        return torch.cat([mean, change], dim=1)

    def _motion(self, rgb: torch.Tensor) -> torch.Tensor:
        """[B, 3, L, H, W] -> per-pixel maps [B, DIRECTION_BINS + 6, H, W]."""
        bsz, _, n, h, w = rgb.shape
        out_hw = (h, w)
        if n < 2:
            return rgb.new_zeros(bsz, DIRECTION_BINS + 8, h, w)
        grey = rgb.mean(dim=1).reshape(bsz * n, 1, h, w)
        grey = F.avg_pool2d(grey, 2) if min(h, w) >= 32 else grey  # halve displacements
        grey = _blur(grey)
        hh, ww = grey.shape[-2:]
        grey = grey.reshape(bsz, n, hh, ww)
        avg = 0.5 * (grey[:, 1:] + grey[:, :-1]).reshape(-1, 1, hh, ww)
        gx, gy = _gradients(avg)
        it = (grey[:, 1:] - grey[:, :-1]).reshape(-1, 1, hh, ww)
        # normal flow scaled by the gradient: points along the motion's component across edges
        fx, fy = -it * gx, -it * gy
        mag = torch.hypot(fx, fy)
        direction = _soft_bins(torch.atan2(fy, fx), DIRECTION_BINS, 2 * math.pi) * mag.unsqueeze(-1)
        direction = direction.squeeze(1).permute(0, 3, 1, 2)  # [B*(n-1), 8, hh, ww]
        # divergence / curl of the flow about its energy centroid, per patch and whole frame
        ys = torch.linspace(-1.0, 1.0, hh, dtype=rgb.dtype, device=rgb.device).view(1, 1, hh, 1)
        xs = torch.linspace(-1.0, 1.0, ww, dtype=rgb.dtype, device=rgb.device).view(1, 1, 1, ww)
        energy = it.abs()
        maps = torch.cat(
            [direction, fx, fy, energy, energy * xs, energy * ys, fx * xs + fy * ys, fx * ys - fy * xs],
            dim=1,
        ).reshape(bsz, n - 1, DIRECTION_BINS + 7, hh, ww).mean(dim=1)
        colour_change = (rgb[:, :, 1:] - rgb[:, :, :-1]).abs().mean(dim=(1, 2)).unsqueeze(1)
        maps = F.interpolate(maps, size=out_hw, mode="bilinear", align_corners=False)
        return torch.cat([maps, colour_change], dim=1)

    def _motion_pool(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool the motion maps; divergence and curl are taken about each region's energy centroid."""
        d = DIRECTION_BINS

        def finish(v: torch.Tensor) -> torch.Tensor:
            hist, fx, fy = v[..., :d], v[..., d], v[..., d + 1]
            energy, ex, ey = v[..., d + 2], v[..., d + 3], v[..., d + 4]
            radial, tangential, colour_change = v[..., d + 5], v[..., d + 6], v[..., d + 7]
            safe = energy.clamp_min(1e-6)
            cx, cy = ex / safe, ey / safe  # the region's motion-energy centroid
            div = radial - (cx * fx + cy * fy)  # mean f . (p - c)
            curl = tangential - (cy * fx - cx * fy)  # mean (p - c) x f
            extra = torch.stack([fx, fy, div, curl, energy, colour_change], dim=-1)
            return torch.cat([hist, extra], dim=-1)

        clip, patches = self._pool(maps)
        return finish(clip), finish(patches)

    def _hist15(self, rgb: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> soft hue (chroma-weighted) + grey-lightness histogram [N, 15, H, W]."""
        r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        a = r - 0.5 * (g + b)
        c = (math.sqrt(3.0) / 2.0) * (g - b)
        sat = (torch.sqrt(a * a + c * c + 1e-12) / 0.75).clamp(0, 1)
        hue_h = _soft_bins(torch.atan2(c, a), HUE_BINS, 2 * math.pi) * sat.unsqueeze(-1)
        centres = torch.tensor([0.15, 0.5, 0.85], dtype=rgb.dtype, device=rgb.device)
        light = ((r + g + b) / 3.0).unsqueeze(-1)
        grey_h = torch.relu(1.0 - (light - centres).abs() / 0.35) * (1.0 - sat).unsqueeze(-1)
        return torch.cat([hue_h, grey_h], dim=-1).permute(0, 3, 1, 2)

    def _zeros(self, rgb: torch.Tensor, family: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(clip, patches) of zeros of ``family``'s width: a one-frame clip has no change."""
        width, bsz = DESCRIPTORS[family], rgb.shape[0]
        return rgb.new_zeros(bsz, width), rgb.new_zeros(bsz, self.grid * self.grid, width)

    def _change(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 3, L, H, W] -> (clip [B, 39], patches [B, P, 39]): change-weighted averages."""
        bsz, _, n, h, w = rgb.shape
        if n < 2:
            return self._zeros(rgb, "change")
        frames = rgb.permute(0, 2, 1, 3, 4).reshape(bsz * n, 3, h, w)
        hist = self._hist15(frames).reshape(bsz, n, 15, h, w)
        before, after = hist[:, :-1], hist[:, 1:]  # [B, n-1, 15, H, W]
        weight = (rgb[:, :, 1:] - rgb[:, :, :-1]).abs().mean(dim=1)  # [B, n-1, H, W]
        wt = weight.unsqueeze(2)
        involved = (wt * (before + after) * 0.5).sum(dim=1)  # [B, 15, H, W]
        signed = (wt * (after - before)).sum(dim=1)
        grey = _blur(rgb.mean(dim=1).reshape(bsz * n, 1, h, w)).reshape(bsz, n, h, w)
        avg = (0.5 * (grey[:, 1:] + grey[:, :-1])).reshape(-1, 1, h, w)
        gx, gy = _gradients(avg)
        it = (grey[:, 1:] - grey[:, :-1]).reshape(-1, 1, h, w)
        fx, fy = -it * gx, -it * gy
        mag = torch.hypot(fx, fy)
        direction = (_soft_bins(torch.atan2(fy, fx), DIRECTION_BINS, 2 * math.pi) * mag.unsqueeze(-1))
        direction = direction.squeeze(1).permute(0, 3, 1, 2).reshape(bsz, n - 1, DIRECTION_BINS, h, w).sum(1)
        flow_mass = mag.reshape(bsz, n - 1, h, w).sum(dim=1, keepdim=True)  # [B, 1, H, W]
        mass = weight.sum(dim=1, keepdim=True)  # [B, 1, H, W]
        maps = torch.cat([involved, signed, mass, direction, flow_mass], dim=1)  # [B, 32, H, W]
        clip, patches = self._pool(maps)  # averages over the area: ratios below cancel it

        def finish(v: torch.Tensor) -> torch.Tensor:
            inv, sig, m = v[..., :15], v[..., 15:30], v[..., 30:31]
            dirs, fm = v[..., 31 : 31 + DIRECTION_BINS], v[..., 31 + DIRECTION_BINS :]
            per_pair = m / (n - 1)
            return torch.cat([inv / (m + 1e-4), sig / (m + 1e-4), dirs / (fm + 1e-6),
                              torch.log1p(100.0 * per_pair)], dim=-1)

        return finish(clip), finish(patches)

    def _objects(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 3, L, H, W] -> (clip [B, 33], patches [B, P, 33]): the clip's foreground."""
        bsz, _, n, h, w = rgb.shape
        if n < 2:
            return self._zeros(rgb, "objects")
        frames = rgb.permute(0, 2, 1, 3, 4).reshape(bsz * n, 3, h, w)
        # the [1 4 6 4 1] / 16 smoothing: sensor noise and thin lines shaken by a pixel fall
        # below FG_LOW, a small saturated actor keeps most of its contrast
        smooth = _blur(frames).reshape(bsz, n, 3, h, w)
        background = _lower_median(smooth)  # [B, 3, H, W] the clip's background
        # distance to the background at the best of the 3x3 shifts: a camera shake is no motion
        padded = F.pad(background, (1, 1, 1, 1), mode="replicate")
        diff = smooth.new_full((bsz, n, h, w), float("inf"))
        for dy in range(3):
            for dx in range(3):
                shifted = padded[:, None, :, dy : dy + h, dx : dx + w]
                diff = torch.minimum(diff, (smooth - shifted).abs().mean(dim=2))
        # a shake of a fraction of a pixel changes a pixel by up to its gradient: the threshold
        # rises with the background's own gradient (largest over the 3x3 shifts), so edges and
        # thin lines of the scene do not count, flat road or grass keeps the low threshold
        gx, gy = _gradients(background.reshape(bsz * 3, 1, h, w))
        slope = (gx.abs() + gy.abs()).reshape(bsz, 3, h, w).mean(dim=1)
        slope = F.max_pool2d(slope.unsqueeze(1), 3, stride=1, padding=1)  # [B, 1, H, W]
        mask = ((diff - FG_LOW - slope) / (FG_HIGH - FG_LOW)).clamp(0, 1)  # [B, L, H, W]
        if min(h, w) >= 64:  # moments and colours at half resolution: a quarter of that work
            mask = F.avg_pool2d(mask, 2)
            frames = F.avg_pool2d(frames, 2)
            h, w = frames.shape[-2:]
        hist = self._hist15(frames).reshape(bsz, n, 15, h, w) * mask.unsqueeze(2)
        ys = torch.linspace(-1.0, 1.0, h, dtype=rgb.dtype, device=rgb.device).view(1, 1, h, 1)
        xs = torch.linspace(-1.0, 1.0, w, dtype=rgb.dtype, device=rgb.device).view(1, 1, 1, w)
        m, mx, my = mask, mask * xs, mask * ys
        maps = torch.cat([torch.stack([m, mx, my, mx * xs, my * ys, mx * ys], dim=2), hist], dim=2)
        maps = maps.reshape(bsz * n, 6 + 15, h, w)
        patches = F.adaptive_avg_pool2d(maps, self.grid)  # [B*L, 21, g, g]
        # the whole frame's mean is the patches' mean when the grid divides the frame
        clip = (patches.mean(dim=(2, 3)) if h % self.grid == 0 and w % self.grid == 0
                else maps.mean(dim=(2, 3))).reshape(bsz, n, 1, 21)
        patches = patches.reshape(bsz, n, 21, self.grid * self.grid).permute(0, 1, 3, 2)  # [B, L, P, 21]
        centres = F.adaptive_avg_pool2d(
            torch.stack([xs.expand(1, 1, h, w), ys.expand(1, 1, h, w)], dim=1).reshape(1, 2, h, w), self.grid
        ).reshape(2, -1).T  # [P, 2] centre of each patch
        return (self._finish_objects(clip, torch.zeros(1, 2, dtype=rgb.dtype, device=rgb.device))[:, 0],
                self._finish_objects(patches, centres))

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
        direction = _soft_bins(torch.atan2(dy, dx), DIRECTION_BINS, 2 * math.pi) * torch.hypot(dx, dy).unsqueeze(-1)
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

    def _shape(self, rgb: torch.Tensor) -> torch.Tensor:
        """[B, 3, L, H, W] -> per-pixel maps [B, ORIENTATION_BINS, H, W]."""
        bsz, _, n, h, w = rgb.shape
        r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        a = r - 0.5 * (g + b)
        c = (math.sqrt(3.0) / 2.0) * (g - b)
        chroma = torch.sqrt(a * a + c * c + 1e-12).reshape(bsz * n, 1, h, w)
        gx, gy = _gradients(chroma)
        mag = torch.hypot(gx, gy)
        hog = _soft_bins(torch.atan2(gy, gx), ORIENTATION_BINS, math.pi) * mag.unsqueeze(-1)
        hog = hog.squeeze(1).permute(0, 3, 1, 2).reshape(bsz, n, ORIENTATION_BINS, h, w)
        return hog.mean(dim=1)

    # ------------------------------------------------------------------ forward

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        rgb = rgb.float().clamp(0, 1)
        clips, patches = [], []
        for fam in self.families:
            if fam == "colour":
                c, p = self._pool(self._colour(rgb))
            elif fam == "motion":
                c, p = self._motion_pool(self._motion(rgb))
            elif fam == "change":
                c, p = self._change(rgb)
            elif fam == "objects":
                c, p = self._objects(rgb)
            else:
                c, p = self._pool(self._shape(rgb))
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
