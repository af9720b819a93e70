"""Natural-language queries for a video's events: one sentence per event.

Grammar (``docs/synthetic.md`` lists it in full)::

    query    := clause                                        relation "plain"
              | "after" other "," clause                      relation "after"  (other ended first)
              | clause "before" other                         relation "before" (other starts later)
              | clause "while" other-gerund                   relation "while"  (they overlap)
              | "after" same "," "it" verb                    relation "then"   (same object, previous event)
              | same "," "then it" verb                       relation "then"
    clause   := subject verb
    subject  := ["the" | "a"] [size] colour noun | "the" noun
    verb     := a synonym of the event kind, with its parameters ("slides to the left", "turns blue"),
                + "for the first time" / "again" when the object repeats that action in the video

The sentence always describes the target event in its main clause (or after
"then"); the other clause only anchors it in time. Synonyms are drawn with a
skew towards a canonical phrasing, so plain sentences recur across videos
(as "person opens the door" recurs in Charades-STA).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.synth.script import EventSpec, ObjectSpec, VideoScript

NOUNS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc", "dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "star": ("star",),
    "ring": ("ring", "donut", "hoop"),
    "cross": ("cross", "plus sign"),
    "hexagon": ("hexagon",),
}

# (present tense, gerund); "{d}" is a direction phrase, "{c}" the new colour
VERBS: dict[str, tuple[tuple[str, str], ...]] = {
    "appear": (
        ("appears", "appearing"),
        ("shows up", "showing up"),
        ("pops up", "popping up"),
        ("comes into view", "coming into view"),
        ("fades in", "fading in"),
    ),
    "disappear": (
        ("disappears", "disappearing"),
        ("vanishes", "vanishing"),
        ("fades away", "fading away"),
        ("goes out of view", "going out of view"),
    ),
    "move": (
        ("moves {d}", "moving {d}"),
        ("slides {d}", "sliding {d}"),
        ("drifts {d}", "drifting {d}"),
        ("travels {d}", "travelling {d}"),
    ),
    "grow": (
        ("grows bigger", "growing bigger"),
        ("gets larger", "getting larger"),
        ("expands", "expanding"),
        ("grows", "growing"),
        ("swells up", "swelling up"),
    ),
    "shrink": (
        ("shrinks", "shrinking"),
        ("gets smaller", "getting smaller"),
        ("contracts", "contracting"),
        ("becomes smaller", "becoming smaller"),
    ),
    "spin": (
        ("spins", "spinning"),
        ("rotates", "rotating"),
        ("turns around", "turning around"),
        ("twirls", "twirling"),
    ),
    "recolor": (
        ("turns {c}", "turning {c}"),
        ("changes colour to {c}", "changing colour to {c}"),
        ("becomes {c}", "becoming {c}"),
        ("changes to {c}", "changing to {c}"),
    ),
    "blink": (
        ("blinks", "blinking"),
        ("flickers", "flickering"),
        ("flashes on and off", "flashing on and off"),
    ),
}
DIRECTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("to the left", "left", "leftward"),
    "right": ("to the right", "right", "rightward"),
    "up": ("up", "upward", "towards the top"),
    "down": ("down", "downward", "towards the bottom"),
}
SPIN_SENSE = {1: "clockwise", -1: "counterclockwise"}

# P(plain sentence); the rest goes to the temporal forms that the video allows
_RELATION_WEIGHTS: dict[str, float] = {
    "plain": 0.40,
    "after": 0.20,
    "before": 0.12,
    "while": 0.12,
    "then": 0.16,
}


@dataclass(frozen=True)
class Query:
    """A sentence for one event, the relation it uses and the other event it refers to (or -1)."""

    event: int
    sentence: str
    relation: str
    anchor: int = -1


def _pick(rng: np.random.Generator, options: tuple, canonical: float = 0.5):  # type: ignore[no-untyped-def,type-arg]
    """The first option with probability ``canonical``, else a uniform pick among all."""
    if len(options) == 1 or rng.random() < canonical:
        return options[0]
    return options[int(rng.integers(len(options)))]


def _size_word(ev: EventSpec, scale: float) -> str:
    r = ev.radius / scale
    if r <= 11.0:
        return "small"
    if r >= 17.0:
        return "big"
    return ""


def subject(rng: np.random.Generator, obj: ObjectSpec, ev: EventSpec, scale: float) -> str:
    """A noun phrase for ``obj`` as it looks when ``ev`` starts ("the small red ball")."""
    noun = _pick(rng, NOUNS[obj.shape], 0.6)
    if rng.random() < 0.12:  # shapes are distinct within a video, so the noun alone is unambiguous
        return f"the {noun}"
    article = "the" if rng.random() < 0.75 else "a"
    size = _size_word(ev, scale) if rng.random() < 0.35 else ""
    words = [article, size, ev.colour, noun]
    return " ".join(w for w in words if w)


def verb(
    rng: np.random.Generator, ev: EventSpec, gerund: bool = False, occurrence: str = ""
) -> str:
    """A verb phrase for ``ev`` (present tense, or the gerund for "while" clauses).

    ``occurrence`` ("for the first time", "again") tells apart repeats of the same
    action by the same object in one video.
    """
    present, ing = _pick(rng, VERBS[ev.kind], 0.45)
    phrase = ing if gerund else present
    if ev.kind == "move":
        phrase = phrase.format(d=_pick(rng, DIRECTION_PHRASES[ev.direction], 0.5))
    elif ev.kind == "recolor":
        phrase = phrase.format(c=ev.new_colour)
    elif ev.kind == "spin" and rng.random() < 0.3:
        phrase += " " + SPIN_SENSE[1 if ev.rotation > 0 else -1]
    return f"{phrase} {occurrence}" if occurrence else phrase


def _occurrences(script: VideoScript) -> dict[int, str]:
    """Event index -> "for the first time" / "again" for actions an object repeats in the video.

    Two events of one object with the same kind (and direction, or target colour)
    would otherwise read the same ("the red star spins" twice) and the sentence
    could not tell which moment it means.
    """
    groups: dict[tuple[int, str, str, str], list[int]] = {}
    for ev in script.events:  # sorted by start time
        groups.setdefault((ev.object, ev.kind, ev.direction, ev.new_colour), []).append(ev.index)
    out: dict[int, str] = {}
    for indices in groups.values():
        if len(indices) > 1:
            out[indices[0]] = "for the first time"
            out.update({i: "again" for i in indices[1:]})
    return out


def _candidates(script: VideoScript, ev: EventSpec) -> dict[str, list[EventSpec]]:
    others = [o for o in script.events if o.index != ev.index]
    return {
        "after": [o for o in others if o.object != ev.object and o.end <= ev.start],
        "before": [o for o in others if o.object != ev.object and o.start >= ev.end],
        "while": [
            o
            for o in others
            if o.object != ev.object
            and min(o.end, ev.end) - max(o.start, ev.start) >= 0.5 * (ev.end - ev.start)
        ],
        "then": [o for o in others if o.object == ev.object and o.end <= ev.start][-1:],
    }


def pick_relation(rng: np.random.Generator, weights: dict[str, float],
                  candidates: Mapping[str, Sequence[object]]) -> str:
    """A relation drawn by ``weights`` among "plain" and those with an anchor in ``candidates``."""
    allowed = [k for k in weights if k == "plain" or candidates[k]]
    w = np.array([weights[k] for k in allowed])
    return allowed[int(rng.choice(len(allowed), p=w / w.sum()))]


def describe(script: VideoScript, rng: np.random.Generator) -> list[Query]:
    """One query per event of ``script``, in event order (deterministic for ``rng``'s state)."""
    scale = script.size / 112.0
    objects = {o.index: o for o in script.objects}
    occurrence = _occurrences(script)
    queries = []
    for ev in script.events:
        obj = objects[ev.object]
        cands = _candidates(script, ev)
        relation = pick_relation(rng, _RELATION_WEIGHTS, cands)
        subj = subject(rng, obj, ev, scale)
        anchor = -1
        if relation == "plain":
            sentence = f"{subj} {verb(rng, ev, occurrence=occurrence.get(ev.index, ''))}"
        else:
            other = cands[relation][int(rng.integers(len(cands[relation])))]
            anchor = other.index
            osubj = subject(rng, objects[other.object], other, scale)
            o_occ, t_occ = occurrence.get(other.index, ""), occurrence.get(ev.index, "")
            if relation == "after":
                sentence = f"after {osubj} {verb(rng, other, occurrence=o_occ)}, {subj} {verb(rng, ev, occurrence=t_occ)}"
            elif relation == "before":
                sentence = f"{subj} {verb(rng, ev, occurrence=t_occ)} before {osubj} {verb(rng, other, occurrence=o_occ)}"
            elif relation == "while":
                sentence = (
                    f"{subj} {verb(rng, ev, occurrence=t_occ)} while {osubj} is "
                    f"{verb(rng, other, gerund=True, occurrence=o_occ)}"
                )
            elif rng.random() < 0.5:  # then: same object, its previous event
                sentence = f"after {osubj} {verb(rng, other, occurrence=o_occ)}, it {verb(rng, ev, occurrence=t_occ)}"
            else:
                sentence = f"{osubj} {verb(rng, other, occurrence=o_occ)}, then it {verb(rng, ev, occurrence=t_occ)}"
        queries.append(Query(ev.index, sentence, relation, anchor))
    return queries
