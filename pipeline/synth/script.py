"""What happens in a synthetic video: its objects and its script of timed events.

A video holds 2-4 objects of distinct shapes on a textured background. Each
object follows its own timeline of non-overlapping events (events of
different objects may overlap). Every event has exact start and end times in
seconds (multiples of ``SynthConfig.time_step``) and the parameters the
renderer and the language generator need: direction and distance of a move,
growth factor, rotation, the colour before and after, the radius at the start.

``make_script`` is deterministic for a ``numpy.random.Generator`` state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.synth.config import SynthConfig

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross", "hexagon")
ROTATABLE: frozenset[str] = frozenset({"square", "triangle", "star", "cross", "hexagon"})
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 185, 60),
    "blue": (35, 75, 235),
    "yellow": (245, 225, 30),
    "purple": (150, 55, 205),
    "orange": (250, 135, 15),
    "cyan": (25, 215, 225),
    "white": (250, 250, 250),
}
EVENT_KINDS: tuple[str, ...] = ("appear", "disappear", "move", "grow", "shrink", "spin", "recolor", "blink")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

# Probabilities of the next event of a visible object (renormalised over the feasible kinds).
_KIND_WEIGHTS: dict[str, float] = {
    "disappear": 0.08,
    "move": 0.30,
    "grow": 0.10,
    "shrink": 0.10,
    "spin": 0.12,
    "recolor": 0.16,
    "blink": 0.10,
    "appear": 0.0,
    # appear is only (and always) the next event of a hidden object
}
_REF = 112.0  # radii and speeds below are for a 112-px frame
_RADIUS = (10.0, 16.0)  # px: objects 20-32 px across, large enough at 112 px
_MAX_RADIUS = 27.0  # px: a grow must not exceed this
_MIN_RADIUS = 6.0  # px: a shrink must not go below this
_SPEED = (16.0, 32.0)  # px/s for moves: 1-2 px per frame at 15 fps
_MOVE_DISTANCE = (24.0, 70.0)  # px


@dataclass(frozen=True)
class ObjectSpec:
    """An object as it is at time 0 (radius and position in px of the configured frame)."""

    index: int
    shape: str
    colour: str
    radius: float
    x: float
    y: float
    angle: float  # radians
    visible: bool  # False: the object's first event is an "appear"


@dataclass(frozen=True)
class EventSpec:
    """One timed event of one object; ``index`` orders the video's events by start time."""

    index: int
    object: int
    kind: str
    start: float
    end: float
    # the object's state when the event starts (what a sentence about it can say)
    colour: str
    radius: float
    # kind-specific parameters
    direction: str = ""  # move: left/right/up/down
    distance: float = 0.0  # move: px
    factor: float = 1.0  # grow (> 1) / shrink (< 1): radius multiplier
    rotation: float = 0.0  # spin: radians, > 0 clockwise on screen
    new_colour: str = ""  # recolor
    blink_hz: float = 0.0  # blink: on/off cycles per second

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class VideoScript:
    """A whole video: frame geometry, objects, events (sorted by start) and the background seed."""

    video_id: str
    num_frames: int
    fps: float
    size: int
    objects: tuple[ObjectSpec, ...]
    events: tuple[EventSpec, ...]
    background_seed: int

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    def events_of(self, obj: int) -> list[EventSpec]:
        return [e for e in self.events if e.object == obj]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _State:
    visible: bool
    x: float
    y: float
    radius: float
    colour: str


def _place_objects(rng: np.random.Generator, count: int, size: int, scale: float) -> list[tuple[float, float, float]]:
    placed: list[tuple[float, float, float]] = []
    for _ in range(count):
        r = float(rng.uniform(*_RADIUS)) * scale
        margin = 1.3 * r + 2
        best: tuple[float, float, float] | None = None
        best_gap = -math.inf
        for _try in range(40):
            x, y = (float(v) for v in rng.uniform(margin, size - margin, size=2))
            gap = min((math.hypot(x - px, y - py) - (r + pr) for px, py, pr in placed), default=math.inf)
            if gap > best_gap:
                best, best_gap = (x, y, r), gap
            if gap > 0.15 * r:
                break
        assert best is not None
        placed.append(best)
    return placed


def _move_room(state: _State, size: int, direction: str) -> float:
    dx, dy = DIRECTIONS[direction]
    margin = state.radius * 1.1 + 1
    if dx < 0:
        return state.x - margin
    if dx > 0:
        return size - margin - state.x
    if dy < 0:
        return state.y - margin
    return size - margin - state.y


def _choose_event(
    rng: np.random.Generator, state: _State, shape: str, cfg: SynthConfig, duration: float, scale: float
) -> dict[str, Any]:
    """Pick the next event of an object in ``state`` and its parameters and desired length (s)."""

    def long_max(frac: float) -> float:  # longest length of an event allowed to last a fraction of the video
        return max(cfg.min_event_duration, frac * duration)

    if not state.visible:
        return {"kind": "appear", "length": float(rng.uniform(cfg.min_event_duration, 3.5))}
    feasible: dict[str, float] = {}
    rooms = {d: _move_room(state, cfg.size, d) for d in DIRECTIONS}
    for kind, w in _KIND_WEIGHTS.items():
        if w <= 0:
            continue
        if kind == "move" and max(rooms.values()) < _MOVE_DISTANCE[0] * scale:
            continue
        if kind == "grow" and state.radius * 1.45 > _MAX_RADIUS * scale:
            continue
        if kind == "shrink" and state.radius * 0.6 < _MIN_RADIUS * scale:
            continue
        if kind == "spin" and shape not in ROTATABLE:
            continue
        feasible[kind] = w
    kinds = sorted(feasible)
    probs = np.array([feasible[k] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=probs / probs.sum()))]
    ev: dict[str, Any] = {"kind": kind}
    if kind == "disappear":
        ev["length"] = float(rng.uniform(cfg.min_event_duration, 3.5))
    elif kind == "move":
        options = sorted(d for d, room in rooms.items() if room >= _MOVE_DISTANCE[0] * scale)
        direction = options[int(rng.integers(len(options)))]
        dist = float(rng.uniform(_MOVE_DISTANCE[0] * scale, min(rooms[direction], _MOVE_DISTANCE[1] * scale)))
        speed = float(rng.uniform(*_SPEED)) * scale
        ev.update(direction=direction, distance=dist, length=float(np.clip(dist / speed, cfg.min_event_duration, 5.0)))
    elif kind in ("grow", "shrink"):
        if kind == "grow":
            factor = float(rng.uniform(1.45, min(1.9, _MAX_RADIUS * scale / state.radius)))
        else:
            factor = float(rng.uniform(max(0.45, _MIN_RADIUS * scale / state.radius), 0.6))
        ev.update(factor=factor, length=float(rng.uniform(cfg.min_event_duration, long_max(0.4))))
    elif kind == "spin":
        length = float(rng.uniform(cfg.min_event_duration, long_max(0.45)))
        speed = float(rng.uniform(0.6, 1.2)) * math.pi  # 110-215 degrees per second
        sign = 1.0 if rng.random() < 0.5 else -1.0
        ev.update(rotation=sign * speed * length, length=length)
    elif kind == "recolor":
        others = sorted(c for c in COLOURS if c != state.colour)
        ev.update(new_colour=others[int(rng.integers(len(others)))], length=float(rng.uniform(cfg.min_event_duration, 4.0)))
    elif kind == "blink":
        ev.update(blink_hz=float(rng.uniform(2.0, 3.0)), length=float(rng.uniform(cfg.min_event_duration, long_max(0.3))))
    return ev


def _apply(state: _State, ev: dict[str, Any]) -> None:
    kind = ev["kind"]
    if kind == "appear":
        state.visible = True
    elif kind == "disappear":
        state.visible = False
    elif kind == "move":
        dx, dy = DIRECTIONS[ev["direction"]]
        state.x += dx * ev["distance"]
        state.y += dy * ev["distance"]
    elif kind in ("grow", "shrink"):
        state.radius *= ev["factor"]
    elif kind == "recolor":
        state.colour = ev["new_colour"]


def _fit_lengths(lengths: list[float], available: float, minimum: float) -> list[float] | None:
    """Scale the lengths down (not below ``minimum``) until they fit in ``available``; None if impossible."""
    if minimum * len(lengths) > available:
        return None
    out = list(lengths)
    for _ in range(20):
        total = sum(out)
        if total <= available:
            return out
        out = [max(minimum, x * available / total) for x in out]
    return out if sum(out) <= available + 1e-9 else None


def _quantise(t: float, step: float) -> float:
    return round(round(t / step) * step, 6)


def make_script(video_id: str, rng: np.random.Generator, cfg: SynthConfig, max_tries: int = 100) -> VideoScript:
    """Draw one video's objects and event script from ``rng`` (deterministic for its state)."""
    scale = cfg.size / _REF
    step = cfg.time_step
    for _attempt in range(max_tries):
        num_frames = int(round(float(rng.uniform(cfg.min_duration, cfg.max_duration)) * cfg.fps))
        duration = num_frames / cfg.fps
        n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        n_events = int(rng.integers(cfg.min_events, cfg.max_events + 1))
        shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))[:n_obj]]
        colour_names = sorted(COLOURS)
        colours = [colour_names[int(i)] for i in rng.integers(len(colour_names), size=n_obj)]
        placements = _place_objects(rng, n_obj, cfg.size, scale)
        # every video has one object with >= 2 events (shared nouns, "then it ..."), the rest at random
        counts = [0] * n_obj
        counts[int(rng.integers(n_obj))] = min(2, n_events)
        for _ in range(n_events - sum(counts)):
            counts[int(rng.integers(n_obj))] += 1
        objects: list[ObjectSpec] = []
        timed: list[tuple[int, dict[str, Any], float, float, str, float]] = []
        ok = True
        for i in range(n_obj):
            x, y, r = placements[i]
            starts_hidden = counts[i] > 0 and rng.random() < 0.3
            angle = float(rng.uniform(0, 2 * math.pi))
            objects.append(ObjectSpec(i, shapes[i], colours[i], round(r, 3), round(x, 3), round(y, 3), round(angle, 4), not starts_hidden))
            if counts[i] == 0:
                continue
            state = _State(not starts_hidden, x, y, r, colours[i])
            planned: list[tuple[dict[str, Any], str, float]] = []
            for _ in range(counts[i]):
                ev = _choose_event(rng, state, shapes[i], cfg, duration, scale)
                planned.append((ev, state.colour, state.radius))
                _apply(state, ev)
            available = duration - 2 * step - step * len(planned)
            lengths = _fit_lengths([p[0]["length"] for p in planned], available, cfg.min_event_duration)
            if lengths is None:
                ok = False
                break
            free = available - sum(lengths)
            gaps = rng.dirichlet(np.ones(len(planned) + 1)) * free
            t = step
            for (ev, colour, radius), length, gap in zip(planned, lengths, gaps[:-1], strict=True):
                start = _quantise(t + gap, step)
                end = _quantise(start + max(length, cfg.min_event_duration), step)
                if end - start < cfg.min_event_duration - 1e-9:
                    end = _quantise(end + step, step)
                if end > duration:
                    ok = False
                    break
                timed.append((i, ev, start, end, colour, radius))
                t = end + step
            if not ok:
                break
        if not ok:
            continue
        timed.sort(key=lambda item: (item[2], item[0]))
        events = tuple(
            EventSpec(
                index=j,
                object=i,
                kind=ev["kind"],
                start=start,
                end=end,
                colour=colour,
                radius=round(radius, 3),
                direction=ev.get("direction", ""),
                distance=round(ev.get("distance", 0.0), 3),
                factor=round(ev.get("factor", 1.0), 4),
                rotation=round(ev.get("rotation", 0.0), 4),
                new_colour=ev.get("new_colour", ""),
                blink_hz=round(ev.get("blink_hz", 0.0), 3),
            )
            for j, (i, ev, start, end, colour, radius) in enumerate(timed)
        )
        return VideoScript(
            video_id=video_id,
            num_frames=num_frames,
            fps=cfg.fps,
            size=cfg.size,
            objects=tuple(objects),
            events=events,
            background_seed=int(rng.integers(2**31 - 1)),
        )
    raise RuntimeError(
        f"could not fit {cfg.min_events}-{cfg.max_events} events of >= {cfg.min_event_duration} s into "
        f"{cfg.min_duration}-{cfg.max_duration} s videos after {max_tries} tries; raise min_duration or lower min_events"
    )
