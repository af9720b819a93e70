"""Classical colour / motion / shape descriptors: each reads what it claims on clips made here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.backbones import build_extractor
from pipeline.descriptors import (
    DESCRIPTORS,
    DIRECTION_BINS,
    HUE_BINS,
    ClassicalDescriptors,
    _lower_median,
)

SIZE = 64
FRAMES = 8


def _background() -> torch.Tensor:
    """A grey textured background [3, L, H, W] (gratings, so edges exist everywhere)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    tex = 0.45 + 0.05 * np.sin(x / 3.0) * np.cos(y / 5.0)
    frame = torch.from_numpy(np.stack([tex, tex, tex]))  # grey: no chroma
    return frame[:, None].repeat(1, FRAMES, 1, 1).clone()


def _disc(clip: torch.Tensor, t: int, cx: float, cy: float, r: float, rgb: tuple[float, ...]) -> None:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    inside = torch.from_numpy(((x - cx) ** 2 + (y - cy) ** 2) <= r * r)
    for c in range(3):
        clip[c, t][inside] = rgb[c]


def _moving(dx: float, dy: float, rgb: tuple[float, ...] = (0.9, 0.1, 0.1)) -> torch.Tensor:
    clip = _background()
    for t in range(FRAMES):
        _disc(clip, t, 32 + dx * (t - FRAMES / 2), 32 + dy * (t - FRAMES / 2), 9.0, rgb)
    return clip


def _run(clips: list[torch.Tensor], families: list[str], grid: int = 1) -> dict[str, torch.Tensor]:
    return ClassicalDescriptors(families, grid)(torch.stack(clips))


def test_widths_and_shapes() -> None:
    out = _run([_moving(1, 0), _moving(0, 1)], ["colour", "motion", "shape"], grid=4)
    dim = sum(DESCRIPTORS[f] for f in ("colour", "motion", "shape"))
    assert out["clip"].shape == (2, dim) and out["patches"].shape == (2, 16, dim)
    assert torch.isfinite(out["clip"]).all() and torch.isfinite(out["patches"]).all()


def test_change_sees_a_small_object_whole_whatever_the_patch_size() -> None:
    """A 6-px red square moving left on grey: the change family reports red and leftward at
    full strength in its patch, where the area-weighted colour family is diluted by the patch."""
    x = torch.full((1, 3, 8, 64, 64), 0.5)
    for t in range(8):
        x[0, :, t, 20:26, 40 - 3 * t : 46 - 3 * t] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    out = ClassicalDescriptors(["change", "colour"], 4)(x)["patches"][0]
    width = DESCRIPTORS["change"]
    assert width == 39 and out.shape == (16, width + DESCRIPTORS["colour"])
    k = int(out[:, width - 1].argmax())  # the patch with the most change
    involved, direction = out[k, :15], out[k, 30 : 30 + DIRECTION_BINS]
    assert int(involved[:HUE_BINS].argmax()) == 0  # red (hue bin 0)
    assert int(direction.argmax()) == DIRECTION_BINS // 2  # leftwards (180 degrees)
    # the change family's red share is the object's, not the patch's: ~8x the colour family's
    assert involved[0] > 2.0 * out[k, width + 0]
    static = ClassicalDescriptors(["change"], 4)(torch.full((1, 3, 8, 64, 64), 0.5))["patches"]
    assert torch.isfinite(static).all() and static.abs().max() < 1e-3  # nothing changes: zeros


def _street_like(seed: int) -> torch.Tensor:
    """[3, 8, 64, 64]: grey asphalt with a white lane line, sensor noise and a 1-px camera shake."""
    g = torch.Generator().manual_seed(seed)
    base = torch.full((3, 72, 72), 0.3)
    base[:, 40:42, :] = 0.95  # a sharp, bright lane line
    clip = torch.empty(3, FRAMES, SIZE, SIZE)
    for t in range(FRAMES):
        oy, ox = int(torch.randint(3, 6, (1,), generator=g)), int(torch.randint(3, 6, (1,), generator=g))
        clip[:, t] = base[:, oy : oy + SIZE, ox : ox + SIZE]
    return (clip + 0.016 * torch.randn(clip.shape, generator=g)).clamp(0, 1)


def test_objects_follow_a_small_actor_and_ignore_shake_and_noise() -> None:
    """A 4-px purple walker moving right on a shaky, noisy street: its patch reports purple,
    rightward and foreground mass; the lane line's patch, shaken by 1 px, reports none."""
    width = DESCRIPTORS["objects"]
    assert width == 33
    walker = _street_like(0)
    for t in range(FRAMES):
        walker[:, t, 10:14, 6 + 2 * t : 10 + 2 * t] = torch.tensor([0.6, 0.1, 0.7])[:, None, None]
    still = _street_like(1)
    out = ClassicalDescriptors(["objects"], 4)(torch.stack([walker, still]))["patches"]
    assert out.shape == (2, 16, width) and torch.isfinite(out).all()
    colour, direction = slice(0, HUE_BINS + 3), slice(HUE_BINS + 3, HUE_BINS + 3 + DIRECTION_BINS)
    mass = HUE_BINS + 3 + DIRECTION_BINS  # first of the scalar block
    k = int(out[0, :, mass].argmax())
    assert k in (0, 1)  # the top-left patches, where it walks
    hue = out[0, k, colour][:HUE_BINS]
    assert int(hue.argmax()) in (9, 10)  # purple (hue ~ 290-300 degrees)
    assert int(out[0, k, direction].argmax()) == 0 and out[0, k, mass + 1] > 0  # rightwards, dx > 0
    # shake and noise are not foreground: the lane line's patches and the still street stay empty
    assert out[0, 8:12, mass].max() < 0.2 * out[0, k, mass]
    assert out[1, :, mass].max() < 0.2 * out[0, k, mass]


@pytest.mark.parametrize("n", [1, 2, 3, 8, 9, 16])
def test_the_background_median_is_torch_median(n: int) -> None:
    x = torch.rand(2, n, 3, 7, 5, generator=torch.Generator().manual_seed(n))
    x[:, :, 0, 0, 0] = 0.5  # ties
    assert torch.equal(_lower_median(x), x.median(dim=1).values)


def test_objects_tell_appearing_from_leaving() -> None:
    """An actor present only in the clip's second half grows the mass; only the first, shrinks."""
    grow = HUE_BINS + 3 + DIRECTION_BINS + 4
    clips = []
    for first in (False, True):
        clip = _street_like(2)
        for t in range(FRAMES):
            if (t < FRAMES // 2) == first:
                clip[:, t, 20:26, 20:30] = torch.tensor([0.9, 0.8, 0.1])[:, None, None]
        clips.append(clip)
    out = ClassicalDescriptors(["objects"], 1)(torch.stack(clips))["clip"]
    assert out[0, grow] > 0 > out[1, grow]


def test_motion_direction_histogram_follows_the_motion() -> None:
    motion = _run([_moving(2, 0), _moving(-2, 0), _moving(0, 2), _moving(0, 0)], ["motion"])["clip"]
    hist = motion[:, :DIRECTION_BINS]
    fx, fy = motion[:, DIRECTION_BINS], motion[:, DIRECTION_BINS + 1]
    # bins are 45 degrees apart from angle 0 (rightwards); image y points down
    assert int(hist[0].argmax()) == 0 and fx[0] > 0
    assert int(hist[1].argmax()) == DIRECTION_BINS // 2 and fx[1] < 0
    assert int(hist[2].argmax()) == DIRECTION_BINS // 4 and fy[2] > 0
    assert hist[3].sum() < 0.1 * hist[0].sum()  # a static clip has (almost) no flow


def test_divergence_tells_growing_from_shrinking() -> None:
    def sized(r0: float, r1: float) -> torch.Tensor:
        clip = _background()
        for t in range(FRAMES):
            _disc(clip, t, 32, 32, r0 + (r1 - r0) * t / (FRAMES - 1), (0.1, 0.2, 0.9))
        return clip

    motion = _run([sized(6, 14), sized(14, 6)], ["motion"])["clip"]
    div = motion[:, DIRECTION_BINS + 2]
    assert div[0] > 0 > div[1]


def test_curl_tells_the_sense_of_rotation() -> None:
    def bar(sense: float) -> torch.Tensor:
        clip = _background()
        y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
        for t in range(FRAMES):
            a = sense * 0.15 * t
            u = (x - 32) * math.cos(a) + (y - 32) * math.sin(a)
            v = -(x - 32) * math.sin(a) + (y - 32) * math.cos(a)
            inside = torch.from_numpy((np.abs(u) < 16) & (np.abs(v) < 4))
            for c, val in enumerate((0.1, 0.8, 0.2)):
                clip[c, t][inside] = val
        return clip

    curl = _run([bar(1.0), bar(-1.0)], ["motion"])["clip"][:, DIRECTION_BINS + 3]
    assert curl[0] * curl[1] < 0 and abs(curl[0]) > 1e-3


def test_colour_histogram_finds_the_hue_where_it_is() -> None:
    red = _background()
    blue = _background()
    for t in range(FRAMES):
        _disc(red, t, 16, 16, 8, (0.9, 0.1, 0.1))  # top-left patch of a 2x2 grid
        _disc(blue, t, 48, 48, 8, (0.1, 0.1, 0.9))  # bottom-right patch
    patches = _run([red, blue], ["colour"], grid=2)["patches"]
    hue_red = patches[0, :, :HUE_BINS]
    hue_blue = patches[1, :, :HUE_BINS]
    assert int(hue_red.sum(1).argmax()) == 0 and int(hue_blue.sum(1).argmax()) == 3
    assert int(hue_red[0].argmax()) != int(hue_blue[3].argmax())


def test_colour_change_is_signed() -> None:
    clip = _background()
    for t in range(FRAMES):
        rgb = (0.9, 0.1, 0.1) if t < FRAMES // 2 else (0.1, 0.9, 0.1)
        _disc(clip, t, 32, 32, 10, rgb)
    colour = _run([clip], ["colour"])["clip"][0]
    change = colour[HUE_BINS + 3 :]
    assert change[:HUE_BINS].min() < 0 < change[:HUE_BINS].max()  # red leaves, green arrives


def test_extractor_layers_join_descriptors_to_the_network() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 8, 112, 112, 3) * 255
    both = build_extractor("tiny3d", layer="layer3+colour+motion", grid=2)
    alone = build_extractor("tiny3d", layer="colour+motion", grid=2)
    with torch.inference_mode():
        xb = both.normalize(x.to(torch.uint8))
        out, ref = both(xb), alone(xb)
    assert out["clip"].shape == (2, 256 + DESCRIPTORS["colour"] + DESCRIPTORS["motion"])
    torch.testing.assert_close(out["clip"][:, 256:], ref["clip"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["patches"][..., 256:], ref["patches"], rtol=1e-4, atol=1e-5)
    assert alone._stages == []  # descriptors alone run no network stage


def test_unknown_or_repeated_layer_is_refused() -> None:
    with pytest.raises(ValueError, match="no layer 'texture'"):
        build_extractor("tiny3d", layer="layer3+texture")
    with pytest.raises(ValueError, match="twice"):
        build_extractor("tiny3d", layer="colour+colour")


def test_classic_has_no_network_and_takes_no_weights(tmp_path) -> None:
    from pipeline.backbones import WeightsError

    weights = tmp_path / "w.pt"
    torch.save({"conv.weight": torch.zeros(1)}, weights)
    with pytest.raises(WeightsError, match="no network and takes no --weights"):
        build_extractor("classic", weights=str(weights))


def test_unknown_geometry_is_one_clear_error() -> None:
    from pipeline.video import ClipSampling

    with pytest.raises(ValueError, match="geometry must be 'crop' or 'full'"):
        ClipSampling(geometry="letterbox")


def _slow_walker(clips: int, speed: float) -> torch.Tensor:
    """[clips, 3, 8, 64, 64]: a 4-px purple walker moving right by ``speed`` px per frame on the
    shaky, noisy street, over ``clips`` consecutive 8-frame clips."""
    out = torch.stack([_street_like(10 + c) for c in range(clips)])
    for c in range(clips):
        for t in range(FRAMES):
            x0 = int(round(4 + speed * (c * FRAMES + t)))
            out[c, :, t, 30:34, x0 : x0 + 4] = torch.tensor([0.6, 0.1, 0.7])[:, None, None]
    return out


def test_a_slow_walker_is_foreground_only_with_the_clips_before() -> None:
    """At 0.6 px per frame a 4-px walker covers a pixel for most of one clip's 8 frames, so the
    clip's own median takes it for background; with the 3 clips before, it reads as foreground
    moving right in its patch."""
    mass = HUE_BINS + 3 + DIRECTION_BINS
    walk = _slow_walker(4, 0.6)
    alone = ClassicalDescriptors(["objects"], 4)(walk[3:])["patches"][0]
    longer = ClassicalDescriptors(["objects"], 4, background_clips=3)(walk[3:], history=walk[:3])["patches"][0]
    k = int(longer[:, mass].argmax())
    assert longer[k, mass] ** 2 > 10 * alone[:, mass].max() ** 2  # the stored mass is its signed square root
    assert int(longer[k, HUE_BINS + 3 : mass].argmax()) == 0 and longer[k, mass + 1] > 0  # rightwards
    # once it stops, neither where it stands nor the street it left is foreground, though the
    # longer background still holds its earlier positions
    stopped = _street_like(20)[None]
    stopped[0, :, :, 30:34, 30:34] = torch.tensor([0.6, 0.1, 0.7])[:, None, None, None]
    after = ClassicalDescriptors(["objects"], 4, background_clips=3)(stopped, history=walk[1:])["patches"][0]
    assert after[:, mass].max() < 0.2 * longer[k, mass]


def test_the_longer_background_does_not_depend_on_how_clips_are_batched() -> None:
    """Clip k's features are the same whether the clips before it came in the same batch or as
    the history of an earlier one; only the last ``background_clips`` of the history count."""
    walk = _slow_walker(6, 0.6)
    d = ClassicalDescriptors(["objects", "colour"], 4, background_clips=3)
    whole = d(walk)
    split = [d(walk[:2]), d(walk[2:5], history=walk[:2]), d(walk[5:], history=walk[:5])]
    for key in ("clip", "patches"):
        torch.testing.assert_close(torch.cat([s[key] for s in split]), whole[key], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="background_clips"):
        ClassicalDescriptors(["objects"], 4, background_clips=-1)


def test_background_clips_is_provenance_only_where_objects_are_read() -> None:
    """The setting decides the features only with the `objects` family: it is in the extractor id
    and the stored provenance there, read back by from_feature_config (0 for groups written
    before it), and left out for layers without `objects`. A negative value is one clear error."""
    import dataclasses

    from pipeline.extract import ExtractionConfig

    default = ExtractionConfig()
    assert default.feature_config()["background_clips"] == 3
    alone = dataclasses.replace(default, background_clips=0)
    assert "background_clips" not in alone.feature_config()
    assert alone.resolved_extractor_id() != default.resolved_extractor_id()
    assert ExtractionConfig.from_feature_config(default.feature_config()).background_clips == 3
    assert ExtractionConfig.from_feature_config(alone.feature_config()).background_clips == 0
    no_objects = ExtractionConfig(layer="colour+motion+shape")
    assert "background_clips" not in no_objects.feature_config()
    assert (dataclasses.replace(no_objects, background_clips=0).resolved_extractor_id()
            == no_objects.resolved_extractor_id())
    with pytest.raises(ValueError, match="--background-clips must be >= 0"):
        dataclasses.replace(default, background_clips=-1).sampling()
