"""What happens in a street video: a top-down street scene, its small actors and their timed events.

A video shows a road layout seen from above (a horizontal or vertical road, or a
crossing, with sidewalks, grass and markings) and 2-4 actors: vehicles (car,
van, truck, motorbike), pedestrians and dogs, all small (a car is 14 x 7 px at
160 px width). Actors stand still between their events; during an event they
do one visible thing:

========== ======================================== ===========================
kind       pixels                                   actors
========== ======================================== ===========================
enter      drives/walks/runs in from beyond an edge  all (a hidden actor's event)
exit       drives/walks/runs out through an edge     all
drive      forward along its heading                 vehicles
reverse    backwards, against its heading            vehicles
turn       a quarter arc to its own left or right    vehicles
flash      headlight beams blink at 2-3 Hz           vehicles
walk       a slow move in a screen direction         pedestrians
open       an umbrella opens (a disc grows)          pedestrians
close      the umbrella closes (the disc shrinks)    pedestrians
run        a fast move in a screen direction         dogs
circle     runs one loop and comes back              dogs
========== ======================================== ===========================

Each actor's events never overlap and follow its state (a hidden actor can only
enter; a move only goes where there is room; an umbrella opens only when
closed); events of different actors overlap freely. Every event has exact start
and end times (multiples of ``SynthConfig.time_step``), stored with the actor's
state at both ends, which is all the renderer and the language need.
``make_script`` is deterministic for a ``numpy.random.Generator`` state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.synth.config import SynthConfig
from pipeline.synth.script import _fit_lengths, _quantise

REF_WIDTH = 160.0  # sizes and speeds below are for a 160-px-wide frame

# category -> (family, length px, width px): a top-down footprint, heading along the length
CATEGORIES: dict[str, tuple[str, float, float]] = {
    "car": ("vehicle", 14.0, 7.0),
    "van": ("vehicle", 16.0, 8.0),
    "truck": ("vehicle", 22.0, 8.0),
    "motorbike": ("vehicle", 9.0, 4.0),
    "person": ("person", 5.0, 6.0),
    "dog": ("dog", 9.0, 4.0),
}
_CATEGORY_WEIGHTS: dict[str, float] = {
    "car": 0.26, "van": 0.10, "truck": 0.10, "motorbike": 0.10, "person": 0.26, "dog": 0.18,
}
# colour names per family (a vehicle's paint, a pedestrian's clothes, a dog's fur)
PALETTES: dict[str, dict[str, tuple[int, int, int]]] = {
    "vehicle": {
        "red": (215, 30, 30),
        "blue": (30, 80, 230),
        "white": (245, 245, 245),
        "yellow": (250, 215, 20),
        "green": (30, 170, 60),
        "orange": (250, 130, 20),
        "silver": (185, 190, 200),
    },
    "person": {
        "red": (225, 35, 40),
        "blue": (40, 90, 240),
        "green": (40, 190, 70),
        "yellow": (250, 225, 40),
        "purple": (150, 50, 210),
        "pink": (250, 120, 190),
        "orange": (250, 140, 30),
    },
    "dog": {
        "brown": (135, 80, 35),
        "white": (240, 240, 235),
        "golden": (220, 170, 70),
        "black": (25, 25, 25),
    },
}
UMBRELLA_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 50),
    "yellow": (250, 220, 30),
    "blue": (40, 100, 245),
    "green": (40, 200, 90),
    "pink": (250, 110, 190),
}
# screen directions: heading angles (radians, image coordinates: y grows downwards)
HEADINGS: dict[str, float] = {"right": 0.0, "down": math.pi / 2, "left": math.pi, "up": 3 * math.pi / 2}
EVENT_KINDS: dict[str, tuple[str, ...]] = {
    "vehicle": ("enter", "exit", "drive", "reverse", "turn", "flash"),
    "person": ("enter", "exit", "walk", "open", "close"),
    "dog": ("enter", "exit", "run", "circle"),
}
# probabilities of the next event of a visible actor (renormalised over the feasible kinds)
_KIND_WEIGHTS: dict[str, dict[str, float]] = {
    "vehicle": {"exit": 0.10, "drive": 0.30, "reverse": 0.12, "turn": 0.24, "flash": 0.24},
    "person": {"exit": 0.10, "walk": 0.45, "open": 0.45, "close": 0.45},
    "dog": {"exit": 0.10, "run": 0.50, "circle": 0.40},
}
# speeds in px/s (at 160 px) and distance ranges in px per moving kind
_SPEED: dict[str, tuple[float, float]] = {
    "drive": (16.0, 30.0), "reverse": (7.0, 12.0), "walk": (6.0, 11.0), "run": (22.0, 38.0),
    "vehicle": (16.0, 30.0), "person": (6.0, 11.0), "dog": (22.0, 38.0),  # enter / exit
}
_DISTANCE: dict[str, tuple[float, float]] = {
    "drive": (20.0, 55.0), "reverse": (10.0, 22.0), "walk": (10.0, 30.0), "run": (22.0, 55.0),
}
_TURN_RADIUS = (10.0, 16.0)
_LOOP_RADIUS = (6.0, 10.0)
_MAX_MOVE_S = 5.0


@dataclass(frozen=True)
class Actor:
    """An actor as it is at time 0 (position in px of the configured frame)."""

    index: int
    category: str
    colour: str
    x: float
    y: float
    heading: str  # one of HEADINGS
    visible: bool  # False: off-screen until its first event, an "enter"
    umbrella: str = ""  # pedestrians: the umbrella's colour

    @property
    def family(self) -> str:
        return CATEGORIES[self.category][0]


@dataclass(frozen=True)
class StreetEvent:
    """One timed event of one actor, with the actor's state at its start and end."""

    index: int
    object: int
    kind: str
    start: float
    end: float
    x0: float
    y0: float
    x1: float
    y1: float
    heading0: float  # radians
    heading1: float  # radians (a turn adds +-pi/2, a loop 2 pi)
    direction: str = ""  # enter/exit/drive/walk/run: screen direction of travel; reverse: of the motion
    edge: str = ""  # enter: the edge it comes in from; exit: the edge it leaves through
    turn: str = ""  # turn: "left" / "right" (the vehicle's own); circle: "clockwise" / "counterclockwise"
    radius: float = 0.0  # turn / circle: px
    blink_hz: float = 0.0  # flash

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Layout:
    """The static scene: road orientation and bands (px), markings, lighting."""

    roads: tuple[str, ...]  # "h" and/or "v"
    road_h: tuple[float, float]  # y range of the horizontal road
    road_v: tuple[float, float]  # x range of the vertical road
    crosswalk: bool


@dataclass(frozen=True)
class StreetScript:
    """A whole street video: frame geometry, layout, actors, events (sorted by start), seeds."""

    video_id: str
    num_frames: int
    fps: float
    width: int
    height: int
    layout: Layout
    objects: tuple[Actor, ...]
    events: tuple[StreetEvent, ...]
    background_seed: int

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    def events_of(self, obj: int) -> list[StreetEvent]:
        return [e for e in self.events if e.object == obj]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _State:
    visible: bool
    x: float
    y: float
    heading: float
    umbrella_open: bool


def _unit(theta: float) -> tuple[float, float]:
    return math.cos(theta), math.sin(theta)


def screen_direction(theta: float) -> str:
    """The screen direction nearest to heading ``theta``."""
    theta = theta % (2 * math.pi)
    return min(HEADINGS, key=lambda d: abs(math.remainder(theta - HEADINGS[d], 2 * math.pi)))


def _inside(x: float, y: float, w: int, h: int, margin: float) -> bool:
    return margin <= x <= w - margin and margin <= y <= h - margin


def _room(x: float, y: float, theta: float, w: int, h: int, margin: float) -> float:
    """How far one can go from (x, y) along a screen-axis heading before the margin."""
    dx, dy = (round(v) for v in _unit(theta))
    if dx > 0:
        return w - margin - x
    if dx < 0:
        return x - margin
    if dy > 0:
        return h - margin - y
    return y - margin


def _edge_exit(x: float, y: float, theta: float, w: int, h: int, half: float) -> float:
    """Distance along a screen-axis heading until the actor is wholly outside the frame."""
    return _room(x, y, theta, w, h, -half - 2.0)


def _lane(layout: Layout, edge: str) -> float | None:
    """The lane coordinate a vehicle entering from ``edge`` drives in (right-hand traffic), if a road meets it."""
    if edge in ("left", "right") and "h" in layout.roads:
        lo, hi = layout.road_h
        return lo + (hi - lo) * (0.73 if edge == "left" else 0.27)
    if edge in ("up", "down") and "v" in layout.roads:
        lo, hi = layout.road_v
        return lo + (hi - lo) * (0.27 if edge == "up" else 0.73)
    return None


def _choose_event(
    rng: np.random.Generator, state: _State, actor_family: str, half: float, w: int, h: int,
    cfg: SynthConfig, duration: float, scale: float, layout: Layout,
) -> dict[str, Any]:
    """The next event of an actor in ``state``: kind, parameters, end state and desired length (s)."""
    min_len = cfg.min_event_duration
    margin = half + 3.0 * scale
    if not state.visible:  # enter from an edge, heading inwards, to a point well inside
        edges = sorted(HEADINGS)
        if actor_family == "vehicle":  # vehicles come in along a road when there is one
            edges = [e for e in edges if _lane(layout, e) is not None]
        edge = edges[int(rng.integers(len(edges)))]
        lane = _lane(layout, edge) if actor_family == "vehicle" else None
        theta = HEADINGS[{"left": "right", "right": "left", "up": "down", "down": "up"}[edge]]
        depth = float(rng.uniform(14.0, 50.0)) * scale + half
        if edge in ("left", "right"):
            y = float(rng.uniform(margin, h - margin)) if lane is None else lane
            x_end = depth if edge == "left" else w - depth
            x_start = -half - 2.0 if edge == "left" else w + half + 2.0
            start, end = (x_start, y), (x_end, y)
        else:
            x = float(rng.uniform(margin, w - margin)) if lane is None else lane
            y_end = depth if edge == "up" else h - depth
            y_start = -half - 2.0 if edge == "up" else h + half + 2.0
            start, end = (x, y_start), (x, y_end)
        dist = math.hypot(end[0] - start[0], end[1] - start[1])
        speed = float(rng.uniform(*_SPEED[actor_family])) * scale
        return {
            "kind": "enter", "edge": edge, "direction": screen_direction(theta), "from": start, "to": end,
            "h0": theta, "h1": theta, "length": float(np.clip(dist / speed, min_len, _MAX_MOVE_S + 1.0)),
        }
    weights = dict(_KIND_WEIGHTS[actor_family])
    options: dict[str, dict[str, Any]] = {}
    here = (state.x, state.y)
    for kind in weights:
        ev: dict[str, Any] | None = None
        if kind == "exit":
            # vehicles leave forwards; pedestrians and dogs through the nearest edge
            if actor_family == "vehicle":
                theta = state.heading
            else:
                dists = {d: _room(state.x, state.y, t, w, h, 0.0) for d, t in HEADINGS.items()}
                theta = HEADINGS[min(dists, key=lambda d: dists[d])]
            dist = _edge_exit(state.x, state.y, theta, w, h, half)
            speed = float(rng.uniform(*_SPEED[actor_family])) * scale
            ux, uy = _unit(theta)
            ev = {
                "edge": screen_direction(theta), "direction": screen_direction(theta),
                "to": (state.x + ux * dist, state.y + uy * dist), "h1": theta,
                "length": float(np.clip(dist / speed, min_len, _MAX_MOVE_S + 1.0)),
            }
        elif kind in ("drive", "reverse", "walk", "run"):
            lo, hi = (v * scale for v in _DISTANCE[kind])
            if kind in ("drive", "reverse"):
                thetas = [state.heading if kind == "drive" else state.heading + math.pi]
            else:
                thetas = [HEADINGS[d] for d in sorted(HEADINGS)]
            feasible = [t for t in thetas if _room(state.x, state.y, t, w, h, margin) >= lo]
            if feasible:
                theta = feasible[int(rng.integers(len(feasible)))]
                dist = float(rng.uniform(lo, min(hi, _room(state.x, state.y, theta, w, h, margin))))
                speed = float(rng.uniform(*_SPEED[kind])) * scale
                ux, uy = _unit(theta)
                ev = {
                    "direction": screen_direction(theta), "to": (state.x + ux * dist, state.y + uy * dist),
                    "h1": state.heading if kind == "reverse" else theta,
                    "length": float(np.clip(dist / speed, min_len, _MAX_MOVE_S)),
                }
        elif kind == "turn":
            side = "left" if rng.random() < 0.5 else "right"
            sign = -1.0 if side == "left" else 1.0  # y grows downwards: a left turn is counterclockwise
            radius = float(rng.uniform(*_TURN_RADIUS)) * scale
            fx, fy = _unit(state.heading)
            nx, ny = _unit(state.heading + sign * math.pi / 2)
            end = (state.x + radius * (fx + nx), state.y + radius * (fy + ny))
            mid = (state.x + radius * (math.sin(math.pi / 4) * fx + (1 - math.cos(math.pi / 4)) * nx),
                   state.y + radius * (math.sin(math.pi / 4) * fy + (1 - math.cos(math.pi / 4)) * ny))
            if _inside(*end, w, h, margin) and _inside(*mid, w, h, margin):
                ev = {"turn": side, "radius": radius, "to": end, "h1": state.heading + sign * math.pi / 2,
                      "length": float(rng.uniform(min_len, 3.0))}
        elif kind == "flash":
            ev = {"blink_hz": float(rng.uniform(2.0, 3.0)), "length": float(rng.uniform(min_len, 3.5))}
        elif kind == "open" and not state.umbrella_open or kind == "close" and state.umbrella_open:
            ev = {"length": float(rng.uniform(min_len, 3.0))}
        elif kind == "circle":
            side = "clockwise" if rng.random() < 0.5 else "counterclockwise"
            radius = float(rng.uniform(*_LOOP_RADIUS)) * scale
            sign = 1.0 if side == "clockwise" else -1.0
            nx, ny = _unit(state.heading + sign * math.pi / 2)
            cx, cy = state.x + radius * nx, state.y + radius * ny
            if _inside(cx, cy, w, h, margin + radius):
                ev = {"turn": side, "radius": radius, "to": here, "h1": state.heading + sign * 2 * math.pi,
                      "length": float(rng.uniform(min_len, 3.0))}
        if ev is not None:
            options[kind] = ev
    kinds = sorted(options)
    probs = np.array([weights[k] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=probs / probs.sum()))]
    ev = {"kind": kind, "from": here, "h0": state.heading, "to": here, "h1": state.heading, **options[kind]}
    return ev


def _apply(state: _State, ev: dict[str, Any]) -> None:
    state.x, state.y = ev["to"]
    state.heading = ev["h1"] % (2 * math.pi)
    if ev["kind"] == "enter":
        state.visible = True
    elif ev["kind"] == "exit":
        state.visible = False
    elif ev["kind"] == "open":
        state.umbrella_open = True
    elif ev["kind"] == "close":
        state.umbrella_open = False


def _road_layout(rng: np.random.Generator, w: int, h: int, scale: float) -> Layout:
    pick = float(rng.random())
    roads = ("h",) if pick < 0.4 else ("v",) if pick < 0.7 else ("h", "v")
    half_road = float(rng.uniform(16.0, 22.0)) * scale
    cy = float(rng.uniform(0.35, 0.65)) * h
    cx = float(rng.uniform(0.3, 0.7)) * w
    return Layout(
        roads=roads,
        road_h=(round(cy - half_road, 2), round(cy + half_road, 2)),
        road_v=(round(cx - half_road, 2), round(cx + half_road, 2)),
        crosswalk=bool(rng.random() < 0.5),
    )


def _place(
    rng: np.random.Generator, layout: Layout, family: str, half: float, w: int, h: int,
    placed: list[tuple[float, float]], scale: float,
) -> tuple[float, float, str]:
    """A start position and heading: vehicles on a road lane, along it; others anywhere."""
    margin = half + 4.0 * scale
    best: tuple[float, float, str] | None = None
    best_gap = -math.inf
    for _try in range(40):
        if family == "vehicle":
            road = layout.roads[int(rng.integers(len(layout.roads)))]
            if road == "h":
                lo, hi = layout.road_h
                lane = int(rng.integers(2))
                y = lo + (hi - lo) * (0.27 if lane == 0 else 0.73)
                x = float(rng.uniform(margin, w - margin))
                heading = "left" if lane == 0 else "right"
            else:
                lo, hi = layout.road_v
                lane = int(rng.integers(2))
                x = lo + (hi - lo) * (0.27 if lane == 0 else 0.73)
                y = float(rng.uniform(margin, h - margin))
                heading = "down" if lane == 0 else "up"
        else:
            x, y = (float(rng.uniform(margin, lim - margin)) for lim in (w, h))
            dirs = sorted(HEADINGS)
            heading = dirs[int(rng.integers(len(dirs)))]
        gap = min((math.hypot(x - px, y - py) for px, py in placed), default=math.inf)
        if gap > best_gap:
            best, best_gap = (x, y, heading), gap
        if gap > 22.0 * scale:
            break
    assert best is not None
    return best


def make_script(video_id: str, rng: np.random.Generator, cfg: SynthConfig, max_tries: int = 100) -> StreetScript:
    """Draw one street video's layout, actors and event script from ``rng`` (deterministic for its state)."""
    w, h = cfg.width, cfg.frame_height
    scale = w / REF_WIDTH
    step = cfg.time_step
    for _attempt in range(max_tries):
        num_frames = int(round(float(rng.uniform(cfg.min_duration, cfg.max_duration)) * cfg.fps))
        duration = num_frames / cfg.fps
        n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        # at most as many events per actor as its share of the video holds at 2 s each
        per_actor = max(1, int((duration - 0.5) // (cfg.min_event_duration + 0.5)))
        n_events = min(int(rng.integers(cfg.min_events, cfg.max_events + 1)), n_obj * per_actor)
        layout = _road_layout(rng, w, h, scale)
        cats = sorted(_CATEGORY_WEIGHTS)
        probs = np.array([_CATEGORY_WEIGHTS[c] for c in cats])
        # (category, colour) is unique within a video: "the red car" always names one actor
        actors_cc: list[tuple[str, str]] = []
        while len(actors_cc) < n_obj:
            cat = cats[int(rng.choice(len(cats), p=probs / probs.sum()))]
            palette = sorted(PALETTES[CATEGORIES[cat][0]])
            colour = palette[int(rng.integers(len(palette)))]
            if (cat, colour) not in actors_cc:
                actors_cc.append((cat, colour))
        counts = [0] * n_obj
        counts[int(rng.integers(n_obj))] = min(2, n_events)
        for _ in range(n_events - sum(counts)):
            open_slots = [i for i in range(n_obj) if counts[i] < per_actor]
            counts[open_slots[int(rng.integers(len(open_slots)))]] += 1
        actors: list[Actor] = []
        timed: list[tuple[int, dict[str, Any], float, float]] = []
        placed: list[tuple[float, float]] = []
        ok = True
        for i, (cat, colour) in enumerate(actors_cc):
            family, length, width = CATEGORIES[cat]
            half = 0.5 * max(length, width) * scale
            x, y, heading = _place(rng, layout, family, half, w, h, placed, scale)
            placed.append((x, y))
            starts_hidden = counts[i] > 0 and rng.random() < 0.3
            umbrella = ""
            if family == "person":
                names = sorted(UMBRELLA_COLOURS)
                umbrella = names[int(rng.integers(len(names)))]
            state = _State(not starts_hidden, x, y, HEADINGS[heading], False)
            planned: list[dict[str, Any]] = []
            for _ in range(counts[i]):
                ev = _choose_event(rng, state, family, half, w, h, cfg, duration, scale, layout)
                planned.append(ev)
                _apply(state, ev)
            if starts_hidden:  # off-screen where its "enter" starts
                (x, y), heading = planned[0]["from"], planned[0]["direction"]
            actors.append(Actor(i, cat, colour, round(x, 3), round(y, 3), heading, not starts_hidden, umbrella))
            if counts[i] == 0:
                continue
            available = duration - 2 * step - step * len(planned)
            lengths = _fit_lengths([p["length"] for p in planned], available, cfg.min_event_duration)
            if lengths is None:
                ok = False
                break
            free = available - sum(lengths)
            gaps = rng.dirichlet(np.ones(len(planned) + 1)) * free
            t = step
            for ev, length, gap in zip(planned, lengths, gaps[:-1], strict=True):
                start = _quantise(t + gap, step)
                end = _quantise(start + max(length, cfg.min_event_duration), step)
                if end - start < cfg.min_event_duration - 1e-9:
                    end = _quantise(end + step, step)
                if end > duration:
                    ok = False
                    break
                timed.append((i, ev, start, end))
                t = end + step
            if not ok:
                break
        if not ok:
            continue
        timed.sort(key=lambda item: (item[2], item[0]))
        events = tuple(
            StreetEvent(
                index=j, object=i, kind=ev["kind"], start=start, end=end,
                x0=round(ev["from"][0], 3), y0=round(ev["from"][1], 3),
                x1=round(ev["to"][0], 3), y1=round(ev["to"][1], 3),
                heading0=round(ev["h0"], 5), heading1=round(ev["h1"], 5),
                direction=ev.get("direction", ""), edge=ev.get("edge", ""), turn=ev.get("turn", ""),
                radius=round(ev.get("radius", 0.0), 3), blink_hz=round(ev.get("blink_hz", 0.0), 3),
            )
            for j, (i, ev, start, end) in enumerate(timed)
        )
        return StreetScript(
            video_id=video_id, num_frames=num_frames, fps=cfg.fps, width=w, height=h, layout=layout,
            objects=tuple(actors), events=events, background_seed=int(rng.integers(2**31 - 1)),
        )
    raise RuntimeError(
        f"could not fit {cfg.min_events}-{cfg.max_events} street events of >= {cfg.min_event_duration} s into "
        f"{cfg.min_duration}-{cfg.max_duration} s videos after {max_tries} tries; raise min_duration or lower min_events"
    )
