"""Synthetic domains: each a generator of its own scene, objects, events and language.

A :class:`Domain` bundles what ``benchmark.py`` needs from a generator: draw a
video's script from a random generator, describe its events in sentences,
render its frames, and turn one event into the ``event`` field of its JSONL
record. Everything else (seeding, splits, query order, encoding, atomic and
resumable writing, the manifest) is shared, so every domain gets the same
layout and guarantees.

- ``shapes``: coloured shapes on textured backgrounds, 112x112 (``script.py``,
  ``render.py``, ``language.py``);
- ``street``: a top-down street with small vehicles, pedestrians and dogs,
  160x120 (``street/``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.synth.config import DOMAINS, SynthConfig


@dataclass(frozen=True)
class Domain:
    """One synthetic generator (see the module docstring)."""

    name: str
    prefix: str  # video ids are f"{prefix}_{index:04d}"
    make_script: Callable[[str, np.random.Generator, SynthConfig], Any]
    describe: Callable[[Any, np.random.Generator], list[Any]]
    render: Callable[[Any], Iterator[np.ndarray]]
    event_record: Callable[[Any, int], dict[str, Any]]
    noun_words: frozenset[str]
    video_version: int = 1  # bump when the same (config, seed) renders other pixels

    def video_id(self, index: int) -> str:
        return f"{self.prefix}_{index:04d}"


def _shapes_event(script: Any, index: int) -> dict[str, Any]:
    ev = script.events[index]
    obj = next(o for o in script.objects if o.index == ev.object)
    event: dict[str, Any] = {"kind": ev.kind, "object": ev.object, "shape": obj.shape, "colour": ev.colour}
    if ev.kind == "move":
        event.update(direction=ev.direction, distance_px=ev.distance)
    elif ev.kind in ("grow", "shrink"):
        event["factor"] = ev.factor
    elif ev.kind == "spin":
        event["degrees"] = round(float(np.degrees(ev.rotation)), 1)
    elif ev.kind == "recolor":
        event["new_colour"] = ev.new_colour
    return event


def _street_event(script: Any, index: int) -> dict[str, Any]:
    ev = script.events[index]
    obj = next(o for o in script.objects if o.index == ev.object)
    event: dict[str, Any] = {"kind": ev.kind, "object": ev.object, "category": obj.category, "colour": obj.colour}
    if ev.kind in ("enter", "exit", "drive", "reverse", "walk", "run"):
        event.update(direction=ev.direction, distance_px=round(math.hypot(ev.x1 - ev.x0, ev.y1 - ev.y0), 2))
    if ev.kind in ("enter", "exit"):
        event["edge"] = ev.edge
    elif ev.kind in ("turn", "circle"):
        event["turn"] = ev.turn
    elif ev.kind in ("open", "close"):
        event["umbrella"] = obj.umbrella
    return event


def _shapes() -> Domain:
    from pipeline.synth import language, render, script

    words = frozenset(w for options in language.NOUNS.values() for w in options)
    return Domain("shapes", "synth", script.make_script, language.describe, render.render_frames, _shapes_event, words)


def _street() -> Domain:
    from pipeline.synth.street import language, render, script

    words = frozenset(w for options in language.NOUNS.values() for w in options) | {"vehicle"}
    return Domain("street", "street", script.make_script, language.describe, render.render_frames, _street_event, words)


_FACTORIES: dict[str, Callable[[], Domain]] = {"shapes": _shapes, "street": _street}
assert tuple(_FACTORIES) == DOMAINS, "config.DOMAINS and the domain registry must list the same names"


def get_domain(name: str) -> Domain:
    """The domain called ``name`` (one of ``config.DOMAINS``)."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown synthetic domain {name!r}; choose one of {list(_FACTORIES)}")
    return _FACTORIES[name]()


def all_noun_words() -> frozenset[str]:
    return frozenset().union(*(get_domain(n).noun_words for n in _FACTORIES))
