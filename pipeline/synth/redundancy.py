"""The redundancy control: how much of what a query says the video shows.

The explicit-alignment paper (``../shared/papers/explicit-alignment-and-redundancy.txt``)
finds that the best strength of an explicit cross-modal alignment depends on how much
information the two modalities share (redundancy) against what each holds alone. This
module gives the synthetic generator that knob, the same for every domain:

``redundancy = r`` in (0, 1] is the share of a query's content words that describe what
the video shows. At ``r = 1`` (the default) the sentences are the domain's own, byte for
byte. Below 1, each sentence gets clauses of facts only the text carries (a sound, a
person off screen, a mood: "as a neighbour hums softly") until the share of its
content words that name visible things falls to about ``r``:
``text_only >= round(visible * (1 - r) / r)``. Videos are unchanged (the same pixels at
every ``r``), so one feature extraction serves every level of a sweep.

The text-only lexicon shares no word with either domain's sentences (tested), so the
added words never name, by accident, something a video shows. Clauses are drawn from
their own random stream (``SeedSequence([seed, video, 3])``), so the domain's sentences,
the query order and the splits do not move with ``r``.
"""

from __future__ import annotations

import numpy as np

from pipeline.synth.language import Query

# function words: they describe nothing on their own, visible or not
FUNCTION_WORDS: frozenset[str] = frozenset(
    "a an the it is its to and or of for on in at by with after before while then as "
    "just when again first time during".split()
)

# people off screen, what they do, how: sounds, feelings, plans; nothing a frame shows
_WHO: tuple[str, ...] = (
    "grandma", "the narrator", "a neighbour", "the teacher", "my uncle", "the baker",
    "a stranger", "the janitor", "our landlord", "a tourist", "the mayor", "the poet",
)
_DOES: tuple[str, ...] = (
    "hums", "sneezes", "laughs", "whistles", "sighs", "coughs", "sings", "yawns", "chuckles",
    "snores", "mumbles", "prays",
)
_HOW: tuple[str, ...] = (
    "softly", "loudly", "twice", "quietly", "happily", "sadly", "nervously", "politely",
)
_CONNECTORS: tuple[str, ...] = ("as", "while", "just as", "when")


def text_only_words() -> frozenset[str]:
    """Every content word the redundancy clauses can add (for the disjointness test)."""
    words: set[str] = set()
    for phrase in _WHO + _DOES + _HOW:
        words.update(content_words(phrase))
    return frozenset(words)


def content_words(sentence: str) -> list[str]:
    """The sentence's words less punctuation and function words."""
    words = (w.strip(".,;:!?\"'").lower() for w in sentence.split())
    return [w for w in words if w and w not in FUNCTION_WORDS]


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def clause(rng: np.random.Generator, words: int = 2) -> str:
    """One text-only clause of 2 ("as the baker hums") or 3 ("... hums softly") content words."""
    parts = [_pick(rng, _CONNECTORS), _pick(rng, _WHO), _pick(rng, _DOES)]
    if words >= 3:
        parts.append(_pick(rng, _HOW))
    return " ".join(parts)


def dilute(sentence: str, redundancy: float, rng: np.random.Generator) -> str:
    """``sentence`` with text-only clauses appended until about ``redundancy`` of its
    content words are the visible ones (unchanged, and no draw made, at 1)."""
    if not 0 < redundancy <= 1:
        raise ValueError(f"redundancy must be in (0, 1], got {redundancy}")
    if redundancy >= 1:
        return sentence
    visible = len(content_words(sentence))
    need = int(round(visible * (1.0 - redundancy) / redundancy))
    added: list[str] = []
    have = 0
    while have < need:
        rem = need - have
        if rem == 1 and added and len(content_words(added[-1])) == 2:
            added[-1] += " " + _pick(rng, _HOW)  # one word more: an adverb on the last clause
            have += 1
            continue
        n = 3 if rem >= 3 and rem != 4 else 2  # 4 = 2 + 2
        added.append(clause(rng, n))
        have += n
    return ", ".join([sentence, *added]) if added else sentence


def dilute_queries(queries: list[Query], redundancy: float, rng: np.random.Generator) -> list[Query]:
    """Every query of one video, diluted (see :func:`dilute`); event, relation, anchor kept."""
    if redundancy >= 1:
        return queries
    return [Query(q.event, dilute(q.sentence, redundancy, rng), q.relation, q.anchor) for q in queries]


def visible_share(sentences: list[str]) -> float:
    """Measured share of content words that are not text-only words (1.0 for no words)."""
    lexicon = text_only_words()
    total = seen = 0
    for s in sentences:
        words = content_words(s)
        total += len(words)
        seen += sum(w not in lexicon for w in words)
    return seen / total if total else 1.0
