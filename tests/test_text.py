"""Tokenization, normalisation, vocabulary, truncation and bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.text import (
    QueryTextError,
    TextConfig,
    Tokenizer,
    Vocabulary,
    build_tokenizer,
    normalize_text,
    tokenize_queries,
)


def test_tokenize_normalises_and_drops_punctuation() -> None:
    tok = build_tokenizer(TextConfig())
    # NFKC folds the full-width letters and the "ﬁ" ligature; whitespace collapses.
    assert tok.tokenize("  A person\u00a0ＯＰＥＮＳ the ﬁle.  ", query_id="q") == [
        "a",
        "person",
        "opens",
        "the",
        "file",
    ]
    # contractions split as nltk does; a mid-text period is split off like the final one
    assert tok.tokenize("He doesn't stop. Then walks-out!", query_id="q") == [
        "he",
        "does",
        "n't",
        "stop",
        "then",
        "walks-out",
    ]
    assert tok.tokenize(b"caf\xc3\xa9 3.5 cm", query_id="q") == ["café", "3.5", "cm"]
    keep = Tokenizer(lowercase=False, drop_punctuation=False)
    assert keep.tokenize("Opens it.", query_id="q") == ["Opens", "it", "."]


def test_bad_text_names_the_query() -> None:
    tok = Tokenizer()
    with pytest.raises(QueryTextError, match=r"query 'v1#3'.*not valid UTF-8"):
        tok.tokenize(b"bad \xff byte", query_id="v1#3")
    surrogate = b"bad \xff byte".decode("utf-8", "surrogateescape")
    with pytest.raises(QueryTextError, match=r"query 'v1#4'.*not valid UTF-8"):
        tok.tokenize(surrogate, query_id="v1#4")
    with pytest.raises(QueryTextError, match=r"query 'v2#0'.*no word left"):
        tok.tokenize(" ... !! ", query_id="v2#0")
    with pytest.raises(QueryTextError, match="no word left"):
        tok.tokenize("", query_id="v2#1")


def test_corpus_vocab_truncation_and_skipping() -> None:
    items = [
        ("a", "the person opens the door"),
        ("b", "the person sits down on a chair and then opens a book slowly"),
        ("c", "?!"),
    ]
    with pytest.raises(QueryTextError, match="'c'"):
        tokenize_queries(items, Tokenizer(), max_len=5)
    corpus = tokenize_queries(items, Tokenizer(), max_len=5, skip_invalid=True)
    assert [q.query_id for q in corpus.queries] == ["a", "b"]
    assert corpus.truncated_ids == ["b"] and corpus.num_truncated == 1
    b = corpus.queries[1]
    assert b.tokens == ["the", "person", "sits", "down", "on"] and b.full_length == 13
    assert b.truncated and not corpus.queries[0].truncated
    assert corpus.vocab.counts["the"] == 3 and corpus.vocab.counts["person"] == 2
    assert "chair" not in corpus.vocab  # counted after truncation
    assert corpus.vocab.words[:2] == ["the", "person"]
    assert len(corpus.errors) == 1 and "'c'" in corpus.errors[0]
    assert Vocabulary(corpus.vocab.counts).digest() == corpus.vocab.digest()
    assert Vocabulary().digest() != corpus.vocab.digest()
    with pytest.raises(ValueError, match="max_len"):
        tokenize_queries(items, Tokenizer(), max_len=0)


def test_real_jsonl_queries_tokenize(shared_data: Path) -> None:
    path = shared_data / "jsonl" / "charades_test_release.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    items = [(str(r["qid"]), r["query"]) for r in rows]
    corpus = tokenize_queries(items, Tokenizer(), max_len=50)
    assert len(corpus.queries) == len(rows) and not corpus.errors
    assert corpus.num_truncated == 0
    assert all(t == t.lower() for q in corpus.queries for t in q.tokens)
    assert corpus.vocab.counts["person"] > 1000
    assert normalize_text(" A  B ", query_id="x") == "a b"
