"""Queries about a street video's events: one sentence per event, in the street domain's own words.

Grammar (``docs/synthetic.md`` lists it with frequencies)::

    query   := clause                                          relation "plain"
             | "once" OTHER "," clause                         relation "once"        (OTHER ended first)
             | "as soon as" OTHER "," clause                   relation "as_soon_as"  (OTHER ended <= 1 s before)
             | clause "until" OTHER                            relation "until"       (OTHER starts as it ends)
             | clause "as" OTHER                               relation "as"          (they overlap by >= half)
             | subject verb(SAME) "and then" verb              relation "then"        (SAME: the actor's previous event)
             | subject verb(SAME) "; next, it" verb            relation "then"
    clause  := subject verb
    subject := "the" colour vehicle-noun | "the" vehicle-noun | "the" colour "vehicle"
             | "the" person-noun "in" colour | "the" person-noun
             | "the" fur dog-noun | "the" dog-noun
    verb    := a phrase of the event kind with its parameters ("turns left", "heads north",
               "opens a pink umbrella"), + "for the first / second / third time" when
               the actor does that action more than once in the video

The target moment is always the main clause's event (for "then", the one after
"and then" / "next"); the other clause anchors it in time. A subject names one
actor of its video ((category, colour) is unique per video; a bare noun is used
only when its category is). All verbs are in the present tense.
"""

from __future__ import annotations

import numpy as np

from pipeline.synth.language import Query, _pick, pick_relation
from pipeline.synth.street.script import Actor, StreetEvent, StreetScript

NOUNS: dict[str, tuple[str, ...]] = {
    "car": ("car", "sedan", "automobile"),
    "van": ("van", "minivan"),
    "truck": ("truck", "lorry"),
    "motorbike": ("motorbike", "motorcycle", "scooter"),
    "person": ("person", "pedestrian", "walker"),
    "dog": ("dog", "puppy", "hound"),
}
DIRECTION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("to the left", "west", "leftwards"),
    "right": ("to the right", "east", "rightwards"),
    "up": ("upwards", "north", "towards the top"),
    "down": ("downwards", "south", "towards the bottom"),
}
EDGE_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("the left", "the left side", "the west"),
    "right": ("the right", "the right side", "the east"),
    "up": ("the top", "the top edge", "the north"),
    "down": ("the bottom", "the bottom edge", "the south"),
}
# per (family, kind): present-tense phrases; {d} a direction, {e} an edge, {s} a side, {u} an umbrella colour
VERBS: dict[tuple[str, str], tuple[str, ...]] = {
    ("vehicle", "enter"): ("drives in from {e}", "enters the scene from {e}", "pulls into view from {e}", "arrives"),
    ("person", "enter"): ("walks in from {e}", "steps into the frame from {e}", "comes into view", "arrives"),
    ("dog", "enter"): ("runs in from {e}", "trots into view from {e}", "comes running in", "arrives"),
    ("vehicle", "exit"): ("drives off {d}", "leaves the scene", "exits the frame {d}", "drives out of view"),
    ("person", "exit"): ("walks out of view", "leaves the frame {d}", "walks away {d}", "exits the scene"),
    ("dog", "exit"): ("runs off {d}", "runs out of view", "leaves the scene", "dashes away"),
    ("vehicle", "drive"): ("drives {d}", "heads {d}", "moves {d}", "rolls {d}"),
    ("vehicle", "reverse"): ("backs up", "reverses", "drives backwards", "reverses a little"),
    ("vehicle", "turn"): ("turns {s}", "makes a {s} turn", "swings {s}", "takes a {s} turn"),
    ("vehicle", "flash"): ("flashes its headlights", "blinks its lights", "flashes its lights", "signals with its lights"),
    ("person", "walk"): ("walks {d}", "strolls {d}", "crosses {d}", "heads {d} on foot"),
    ("person", "open"): ("opens an umbrella", "opens a {u} umbrella", "puts up an umbrella", "unfolds a {u} umbrella"),
    ("person", "close"): ("closes the umbrella", "closes the {u} umbrella", "folds up the umbrella", "puts the umbrella away"),
    ("dog", "run"): ("runs {d}", "dashes {d}", "sprints {d}", "races {d}"),
    ("dog", "circle"): ("runs in a circle", "chases its tail", "runs a loop", "circles around"),
}
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")

# P(plain sentence); the rest goes to the temporal forms that the video allows
_RELATION_WEIGHTS: dict[str, float] = {
    "plain": 0.40, "once": 0.14, "as_soon_as": 0.20, "until": 0.20, "as": 0.10, "then": 0.14,
}
_SOON = 1.0  # s: "as soon as" = the anchor ended at most this long before the target starts
_UNTIL = 0.5  # s: "until" = the anchor starts within this of the target's end


def subject(rng: np.random.Generator, script: StreetScript, obj: Actor) -> str:
    """A noun phrase that names ``obj`` alone in its video ("the red car", "the pedestrian in blue")."""
    family = obj.family
    noun = _pick(rng, NOUNS[obj.category], 0.6)
    same_category = sum(o.category == obj.category for o in script.objects)
    if same_category == 1 and rng.random() < 0.15:
        return f"the {noun}"
    if family == "person":
        return f"the {noun} in {obj.colour}" if rng.random() < 0.8 else f"the {noun} wearing {obj.colour}"
    if family == "vehicle":
        same_colour = sum(o.family == "vehicle" and o.colour == obj.colour for o in script.objects)
        if same_colour == 1 and rng.random() < 0.12:
            return f"the {obj.colour} vehicle"
    return f"the {obj.colour} {noun}"


def verb(rng: np.random.Generator, obj: Actor, ev: StreetEvent, occurrence: str = "") -> str:
    """A present-tense verb phrase for ``ev`` with its parameters and repeat marker."""
    phrase = _pick(rng, VERBS[(obj.family, ev.kind)], 0.45)
    phrase = phrase.format(
        d=_pick(rng, DIRECTION_WORDS.get(ev.direction, ("",)), 0.5),
        e=_pick(rng, EDGE_WORDS.get(ev.edge, ("",)), 0.5),
        s=ev.turn,
        u=obj.umbrella,
    )
    return f"{phrase} {occurrence}" if occurrence else phrase


def _occurrences(script: StreetScript) -> dict[int, str]:
    """Event index -> "for the first/second/... time" for actions an actor repeats in the video.

    Kinds whose phrase always carries its parameter (drive/walk/run direction, turn
    side) count repeats per parameter; the others per kind.
    """
    groups: dict[tuple[int, str, str], list[int]] = {}
    for ev in script.events:  # sorted by start time
        param = ev.direction if ev.kind in ("drive", "walk", "run") else ev.turn if ev.kind == "turn" else ""
        groups.setdefault((ev.object, ev.kind, param), []).append(ev.index)
    out: dict[int, str] = {}
    for indices in groups.values():
        if len(indices) > 1:
            out.update({i: f"for the {ORDINALS[min(k, len(ORDINALS) - 1)]} time" for k, i in enumerate(indices)})
    return out


def _candidates(script: StreetScript, ev: StreetEvent) -> dict[str, list[StreetEvent]]:
    others = [o for o in script.events if o.index != ev.index and o.object != ev.object]
    return {
        "once": [o for o in others if o.end <= ev.start],
        "as_soon_as": [o for o in others if 0.0 <= ev.start - o.end <= _SOON],
        "until": [o for o in others if abs(o.start - ev.end) <= _UNTIL],
        "as": [o for o in others if min(o.end, ev.end) - max(o.start, ev.start) >= 0.5 * (ev.end - ev.start)],
        "then": [o for o in script.events if o.object == ev.object and o.end <= ev.start][-1:],
    }


def describe(script: StreetScript, rng: np.random.Generator) -> list[Query]:
    """One query per event of ``script``, in event order (deterministic for ``rng``'s state)."""
    objects = {o.index: o for o in script.objects}
    occurrence = _occurrences(script)
    queries = []
    for ev in script.events:
        obj = objects[ev.object]
        cands = _candidates(script, ev)
        relation = pick_relation(rng, _RELATION_WEIGHTS, cands)
        subj = subject(rng, script, obj)
        t_verb = verb(rng, obj, ev, occurrence.get(ev.index, ""))
        anchor = -1
        if relation == "plain":
            sentence = f"{subj} {t_verb}"
        else:
            other = cands[relation][int(rng.integers(len(cands[relation])))]
            anchor = other.index
            oobj = objects[other.object]
            o_verb = verb(rng, oobj, other, occurrence.get(other.index, ""))
            if relation == "then":
                if rng.random() < 0.6:
                    sentence = f"{subj} {o_verb} and then {t_verb}"
                else:
                    sentence = f"{subj} {o_verb}; next, it {t_verb}"
            else:
                other_clause = f"{subject(rng, script, oobj)} {o_verb}"
                if relation == "once":
                    sentence = f"once {other_clause}, {subj} {t_verb}"
                elif relation == "as_soon_as":
                    sentence = f"as soon as {other_clause}, {subj} {t_verb}"
                elif relation == "until":
                    sentence = f"{subj} {t_verb} until {other_clause}"
                else:
                    sentence = f"{subj} {t_verb} as {other_clause}"
        queries.append(Query(ev.index, sentence, relation, anchor))
    return queries
