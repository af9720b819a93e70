"""The classical descriptors keep their values: outputs on fixed clips made here match the
ones stored in ``tests/data/descriptors_reference.npz``.

The stored values were written by ``pipeline/descriptors.py`` as of commit c419a52, before
its speed rewrite (pooling by matrix products, shared per-pixel terms, a pruned median
network); the rewrite must give the same features up to float rounding. Regenerate the file
(``python tests/test_descriptors_reference.py --write``) only when the descriptors' math is
changed on purpose: the stored features of every existing store change with it.

The clips are drawn from numpy's PCG64 (stable across versions) and cover the default input
(8 x 112 x 112, grid 4), a grid that does not divide the frame (overlapping patches), odd and
non-square frames, frames too small for the motion family's and the objects family's half
resolution, pure noise, and a one-frame clip.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.descriptors import DESCRIPTORS, HUE_BINS, ClassicalDescriptors

FIXTURE = Path(__file__).parent / "data" / "descriptors_reference.npz"
FAMILIES = ["colour", "motion", "shape", "change", "objects"]
# (clips, frames, height, width, grid, kind)
CASES: dict[str, tuple[int, int, int, int, int, str]] = {
    "default": (2, 8, 112, 112, 4, "scene"),
    "grid3": (2, 8, 112, 112, 3, "scene"),
    "grid1": (1, 8, 112, 112, 1, "scene"),
    "odd": (1, 3, 38, 50, 2, "scene"),
    "odd_half": (1, 5, 70, 66, 3, "scene"),
    "small": (1, 8, 24, 24, 4, "scene"),
    "noise": (1, 8, 64, 64, 4, "noise"),
    "single": (1, 1, 32, 32, 2, "scene"),
}
# float32 rounding of sums over ~10^4 pixels, through the signed square root
ATOL = 1e-4


def _scene(rng: np.random.Generator, frames: int, h: int, w: int) -> np.ndarray:
    """[3, frames, h, w] in [0, 1]: a coloured textured background shaken by a pixel, three
    moving coloured shapes, a blinking light and sensor noise, quantised like decoded video."""
    y, x = np.mgrid[0 : h + 4, 0 : w + 4].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    base = np.stack(
        [0.45 + 0.2 * np.sin(x / (5 + 2 * c) + phase[c]) * np.cos(y / (7 + c)) for c in range(3)]
    )
    clip = np.empty((3, frames, h, w))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    shapes = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(-3, 3), rng.uniform(-3, 3),
               rng.uniform(2, 8), rng.uniform(0, 1, size=3)) for _ in range(3)]
    for t in range(frames):
        oy, ox = rng.integers(1, 4, size=2)
        frame = base[:, oy : oy + h, ox : ox + w].copy()
        for cx, cy, vx, vy, r, rgb in shapes:
            inside = (xx - cx - vx * t) ** 2 + (yy - cy - vy * t) ** 2 <= r * r
            frame[:, inside] = rgb[:, None]
        if t % 2:
            frame[:, h // 3 : h // 3 + 3, w // 2 : w // 2 + 3] = 1.0
        clip[:, t] = frame + rng.normal(0, 0.015, size=frame.shape)
    return np.round(np.clip(clip, 0, 1) * 255) / 255


def make_input(case: str) -> torch.Tensor:
    clips, frames, h, w, _, kind = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case))
    if kind == "noise":
        x = rng.uniform(0, 1, size=(clips, 3, frames, h, w))
    else:
        x = np.stack([_scene(rng, frames, h, w) for _ in range(clips)])
    return torch.from_numpy(x.astype(np.float32))


def compute(case: str) -> dict[str, np.ndarray]:
    grid = CASES[case][4]
    with torch.inference_mode():
        out = ClassicalDescriptors(FAMILIES, grid)(make_input(case))
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_descriptors_match_the_stored_reference(case: str) -> None:
    stored = np.load(FIXTURE)
    out = compute(case)
    for key in ("clip", "patches"):
        want = stored[f"{case}/{key}"]
        assert out[key].shape == want.shape
        assert np.isfinite(out[key]).all()
        worst = np.abs(out[key] - want)
        offset = 0
        for fam in FAMILIES:  # name the family that drifted
            width = DESCRIPTORS[fam]
            part = worst[..., offset : offset + width]
            assert part.max() <= ATOL, f"{case} {key} {fam}: max abs diff {part.max():.2e}"
            offset += width


def test_the_default_families_alone_give_the_same_values() -> None:
    """The families do not depend on each other (shared terms are computed once)."""
    stored = np.load(FIXTURE)
    x = make_input("default")
    dims = {f: DESCRIPTORS[f] for f in FAMILIES}
    starts = {f: sum(list(dims.values())[: FAMILIES.index(f)]) for f in FAMILIES}
    with torch.inference_mode():
        for fams in (["colour", "motion", "shape", "objects"], ["shape"], ["objects", "colour"]):
            out = ClassicalDescriptors(fams, 4)(x)["patches"].numpy()
            want = np.concatenate(
                [stored["default/patches"][..., starts[f] : starts[f] + dims[f]] for f in fams], -1
            )
            assert np.abs(out - want).max() <= ATOL



def test_the_batched_foreground_is_the_per_clip_one() -> None:
    """CPU computes the objects family's foreground clip by clip, other devices the whole
    batch at once: the same values."""
    x = make_input("default")
    batched = ClassicalDescriptors._foreground(x)
    single = torch.cat([ClassicalDescriptors._foreground(x[k : k + 1]) for k in range(len(x))])
    assert batched.shape == (2, 8, 112, 112) and float(batched.max()) > 0
    assert torch.equal(batched, single)



def test_a_patch_whose_colours_do_not_change_reads_no_colour_change() -> None:
    """A red square moving by whole pixels inside one patch of a flat grey frame: that patch's
    histogram is the same in every frame, so its colour change (last third - first third) is
    0 up to rounding, ~1e-8 before the signed square root (float32 sums over the patch would
    leave ~1e-4 after it)."""
    x = torch.full((1, 3, 8, 112, 112), 0.37)
    for t in range(8):
        x[0, :, t, 5 : 15, 3 + 2 * t : 13 + 2 * t] = torch.tensor([0.8, 0.15, 0.2])[:, None, None]
    out = ClassicalDescriptors(["colour"], 4)(x)["patches"][0]
    change = out[:, HUE_BINS + 3 :]
    assert float(out[0, :HUE_BINS].max()) > 0.1  # the square is seen, in the first patch
    assert float(change.abs().max()) < 1e-4


def test_nan_pixels_are_one_clear_error() -> None:
    x = torch.rand(1, 3, 4, 32, 32)
    x[0, 1, 2, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN pixels"):
        ClassicalDescriptors(["colour"], 2)(x)

if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    FIXTURE.parent.mkdir(exist_ok=True)
    arrays = {f"{c}/{k}": v for c in sorted(CASES) for k, v in compute(c).items()}
    np.savez_compressed(FIXTURE, **arrays)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes, {len(arrays)} arrays)")
