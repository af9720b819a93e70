"""Query tokenization: normalisation, nltk word tokens, a vocabulary with counts, truncation.

Tokenization needs no downloaded nltk data: ``NLTKWordTokenizer`` (the
tokenizer behind ``nltk.word_tokenize``, minus its punkt sentence splitter)
runs on each sentence piece after a small regex split at ``. ! ?`` followed
by whitespace, so a period inside a two-sentence ActivityNet caption is
split off like the final one.

Normalisation, in order: strict UTF-8 decoding (bytes) or a check that a
``str`` encodes to UTF-8 (lone surrogates from ``surrogateescape`` decoding
fail), unicode NFKC, whitespace collapsed and stripped, lower-casing.
Tokens with no letter or digit (punctuation, nltk's quote marks) are dropped
by default. A query with no token left is an error naming the query id.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nltk.tokenize import NLTKWordTokenizer

from storage.fingerprint import digest_strings

logger = logging.getLogger(__name__)

_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=\S)")
_WHITESPACE = re.compile(r"\s+")


class QueryTextError(ValueError):
    """A query's text cannot be tokenized (invalid UTF-8, nothing left after tokenization)."""


@dataclass(frozen=True)
class TextConfig:
    """How sentences become tokens."""

    lowercase: bool = True  # GloVe 6B/42B are lower-cased; 840B lookups fall back to case-folding
    drop_punctuation: bool = True  # "." and "," carry no grounding signal and inflate N
    max_len: int = 50  # ActivityNet captions reach ~70 tokens; Charades-STA stays under 20


@dataclass(frozen=True)
class TokenizedQuery:
    query_id: str
    tokens: list[str]  # after truncation
    full_length: int  # before truncation

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.tokens)


class Vocabulary:
    """Token counts; ``words`` are ordered by count (descending) then alphabetically."""

    def __init__(self, counts: Counter[str] | None = None) -> None:
        self.counts: Counter[str] = Counter() if counts is None else Counter(counts)

    def update(self, tokens: Iterable[str]) -> None:
        self.counts.update(tokens)

    @property
    def words(self) -> list[str]:
        return [w for w, _ in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    def __len__(self) -> int:
        return len(self.counts)

    def __contains__(self, word: object) -> bool:
        return word in self.counts

    def digest(self) -> str:
        """A short stable digest of the word set (not the counts): the GloVe subset cache key."""
        return digest_strings(*sorted(self.counts))


@dataclass
class TokenizedCorpus:
    queries: list[TokenizedQuery]
    vocab: Vocabulary
    max_len: int
    truncated_ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # messages of skipped queries

    @property
    def num_truncated(self) -> int:
        return len(self.truncated_ids)


def normalize_text(text: str | bytes, *, query_id: str, lowercase: bool = True) -> str:
    """Decode/validate UTF-8, NFKC-normalise, collapse whitespace, strip, optionally lower-case."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise QueryTextError(
                f"query {query_id!r}: sentence is not valid UTF-8 ({exc.reason} at byte "
                f"{exc.start}); re-encode the annotation file as UTF-8"
            ) from None
    else:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise QueryTextError(
                f"query {query_id!r}: sentence is not valid UTF-8 (undecodable character "
                f"{text[exc.start]!r} at position {exc.start}); re-encode the annotation file as UTF-8"
            ) from None
    text = unicodedata.normalize("NFKC", text)
    text = _WHITESPACE.sub(" ", text).strip()
    return text.lower() if lowercase else text


class Tokenizer:
    """Sentence -> tokens with nltk's ``NLTKWordTokenizer`` (no downloaded data needed)."""

    def __init__(self, *, lowercase: bool = True, drop_punctuation: bool = True) -> None:
        self.lowercase = lowercase
        self.drop_punctuation = drop_punctuation
        self._nltk = NLTKWordTokenizer()

    def tokenize(self, text: str | bytes, *, query_id: str) -> list[str]:
        """All tokens of ``text`` (no truncation); raises ``QueryTextError`` naming the query."""
        norm = normalize_text(text, query_id=query_id, lowercase=self.lowercase)
        tokens: list[str] = []
        for piece in _SENTENCE_BREAK.split(norm):
            tokens.extend(self._nltk.tokenize(piece))
        if self.drop_punctuation:
            tokens = [t for t in tokens if any(ch.isalnum() for ch in t)]
        if not tokens:
            raise QueryTextError(
                f"query {query_id!r}: sentence {str(text)[:80]!r} has no word left after "
                "tokenization; fix or drop this annotation"
            )
        return tokens


def build_tokenizer(cfg: TextConfig) -> Tokenizer:
    return Tokenizer(lowercase=cfg.lowercase, drop_punctuation=cfg.drop_punctuation)


def tokenize_queries(
    items: Sequence[tuple[str, str | bytes]],
    tokenizer: Tokenizer,
    *,
    max_len: int,
    skip_invalid: bool = False,
) -> TokenizedCorpus:
    """Tokenize ``(query_id, sentence)`` pairs, truncate to ``max_len`` and count the vocabulary.

    The vocabulary counts the kept (truncated) tokens; truncations are counted and logged.
    With ``skip_invalid`` a query that fails (``QueryTextError``) is left out and its message
    kept in ``errors`` instead of stopping the run.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    queries: list[TokenizedQuery] = []
    vocab = Vocabulary()
    truncated: list[str] = []
    errors: list[str] = []
    for qid, sentence in items:
        try:
            toks = tokenizer.tokenize(sentence, query_id=qid)
        except QueryTextError as exc:
            if not skip_invalid:
                raise
            logger.warning("skipping query: %s", exc)
            errors.append(str(exc))
            continue
        kept = toks[:max_len]
        if len(toks) > max_len:
            truncated.append(qid)
        vocab.update(kept)
        queries.append(TokenizedQuery(query_id=qid, tokens=kept, full_length=len(toks)))
    if truncated:
        logger.info(
            "truncated %d of %d queries to %d tokens (first: %s)",
            len(truncated),
            len(queries),
            max_len,
            truncated[0],
        )
    return TokenizedCorpus(
        queries=queries, vocab=vocab, max_len=max_len, truncated_ids=truncated, errors=errors
    )
