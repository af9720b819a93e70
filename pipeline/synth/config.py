"""Configuration of the synthetic benchmark: a frozen dataclass and named size presets per domain.

A *domain* is a generator of its own (objects, scene, events, language): ``shapes``
(coloured shapes on textured backgrounds, 112x112) and ``street`` (a top-down
street scene with small vehicles, pedestrians and dogs, 160x120). Each domain has
its ``quick`` and ``default`` presets (``shapes`` also ``large``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from pipeline.overrides import check_keys


@dataclass(frozen=True)
class SynthConfig:
    """Everything that decides the bytes of a synthetic dataset (with the seed).

    Sizes are in pixels at ``size`` px; object radii and speeds are given for the
    domain's reference width (112 px for shapes, 160 px for street) and scaled with
    ``size``. ``height`` ``None`` means a square ``size x size`` frame.
    """

    num_videos: int = 200  # x ~20 s mean = ~4,000 s of video: the ~15-min CPU reproduction budget
    min_duration: float = 8.0  # seconds; long enough for 3 events of >= 1.5 s
    max_duration: float = 32.0  # seconds; mean 20 s keeps the default near 4,000 s in all
    fps: float = 15.0  # frames per second; motions of 1-2.5 px per frame stay visible
    size: int = 112  # square frame side in px: 3D CNNs see their native 112x112 (must be even)
    min_objects: int = 2
    max_objects: int = 4
    min_events: int = 3
    max_events: int = 6
    min_event_duration: float = 1.5  # seconds: a 16-frame clip at 15 fps is ~1.07 s
    time_step: float = 0.1  # event boundaries are multiples of this (seconds)
    splits: tuple[float, float, float] = (0.70, 0.15, 0.15)  # train / val / test, by video
    crf: int = 23  # libx264 constant rate factor
    preset: str = "veryfast"  # libx264 speed preset
    domain: str = "shapes"  # which generator (DOMAINS); recorded in synth.json
    height: int | None = None  # frame height in px; None: square (size x size)
    # share of a query's content words that describe what the video shows (pipeline/synth/
    # redundancy.py): 1 = the domain's own sentences; lower adds text-only clauses. Videos
    # are the same pixels at every value.
    redundancy: float = 1.0

    @property
    def width(self) -> int:
        return self.size

    @property
    def frame_height(self) -> int:
        return self.size if self.height is None else self.height

    def __post_init__(self) -> None:
        problems = []
        if self.domain not in DOMAINS:
            problems.append(f"unknown domain {self.domain!r}; choose one of {list(DOMAINS)}")
        if self.height is not None and (self.height < 32 or self.height % 2):
            problems.append(f"height must be an even number of pixels >= 32 (yuv420p), got {self.height}")
        if self.num_videos < 1:
            problems.append(f"num_videos must be >= 1, got {self.num_videos}")
        if not 0 < self.min_duration <= self.max_duration:
            problems.append(f"need 0 < min_duration <= max_duration, got {self.min_duration}, {self.max_duration}")
        if self.min_duration < 3 * self.min_event_duration:
            problems.append(
                f"min_duration {self.min_duration} s is too short for 3 events of >= {self.min_event_duration} s"
            )
        if self.size < 32 or self.size % 2:
            problems.append(f"size must be an even number of pixels >= 32 (yuv420p), got {self.size}")
        if not 1 <= self.fps <= 60:
            problems.append(f"fps must be in [1, 60], got {self.fps}")
        if not 1 <= self.min_objects <= self.max_objects <= 6:
            problems.append(f"need 1 <= min_objects <= max_objects <= 6, got {self.min_objects}, {self.max_objects}")
        if not 1 <= self.min_events <= self.max_events <= 10:
            problems.append(f"need 1 <= min_events <= max_events <= 10, got {self.min_events}, {self.max_events}")
        if len(self.splits) != 3 or any(s < 0 for s in self.splits) or abs(sum(self.splits) - 1.0) > 1e-6:
            problems.append(f"splits must be three non-negative fractions summing to 1, got {self.splits}")
        if not 0 < self.redundancy <= 1:
            problems.append(f"redundancy must be in (0, 1], got {self.redundancy}")
        if problems:
            raise ValueError("invalid synthetic benchmark config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["splits"] = list(self.splits)
        if self.redundancy == 1.0:  # the default: datasets written before the key keep their identity
            del d["redundancy"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SynthConfig:
        check_keys(cls, d, "synthetic config keys")
        d = dict(d)
        if "splits" in d:
            d["splits"] = tuple(d["splits"])
        return cls(**d)


DOMAINS: tuple[str, ...] = ("shapes", "street")

PRESETS: dict[str, SynthConfig] = {
    # tests: 12 short videos, a few seconds to generate
    "quick": SynthConfig(num_videos=12, min_duration=6.0, max_duration=10.0),
    # the embedded default dataset of the 15-minute reproduction
    "default": SynthConfig(),
    # a few minutes of CPU: more videos for a better-trained demo
    "large": SynthConfig(num_videos=600),
}


# the street domain: 4:3 frames (the extractor's crop geometry), smaller objects, 3-8 queries per video
_STREET = SynthConfig(domain="street", size=160, height=120, max_events=8)
STREET_PRESETS: dict[str, SynthConfig] = {
    "quick": replace(_STREET, num_videos=12, min_duration=6.0, max_duration=10.0, max_events=6),
    # ~200 videos of 8-32 s: about the shapes default's total seconds, so the default pipeline times match
    "default": _STREET,
}

DOMAIN_PRESETS: dict[str, dict[str, SynthConfig]] = {"shapes": PRESETS, "street": STREET_PRESETS}


def build_synth_config(preset: str = "default", domain: str = "shapes", **overrides: Any) -> SynthConfig:
    """A domain's preset with optional overrides (``None`` values are ignored).

    ``build_synth_config("quick", fps=10)``; ``build_synth_config("default", "street")``.
    Overriding ``size`` (the width) of a non-square preset scales its height with it.
    """
    if domain not in DOMAIN_PRESETS:
        raise ValueError(f"unknown synthetic domain {domain!r}; choose one of {list(DOMAIN_PRESETS)}")
    presets = DOMAIN_PRESETS[domain]
    if preset not in presets:
        raise ValueError(f"unknown synthetic size preset {preset!r} for domain {domain!r}; choose one of {sorted(presets)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    check_keys(SynthConfig, changes, "synthetic config keys", exclude={"domain"})
    base = presets[preset]
    if "size" in changes and "height" not in changes and base.height is not None:
        h = int(round(base.height * int(changes["size"]) / base.size))
        changes["height"] = h + (h % 2)
    return replace(base, **changes)
