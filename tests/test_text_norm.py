"""Word and sentence vectors are standardised with the train split's statistics, like video features."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from model_fixtures import planted_data

from model.data import GroundingData, NormStats, QueryInput, prepare


def _shared_direction(data: GroundingData, scale: float = 50.0) -> GroundingData:
    """Add one large common vector to every word: what word2vec on a tiny corpus produces."""
    common = np.random.default_rng(1).normal(size=300).astype(np.float32) * scale
    queries = {k: replace(q, words=q.words + common) for k, q in data.queries.items()}
    return replace(data, queries=queries)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_prepare_removes_the_shared_direction_of_word_vectors() -> None:
    data = _shared_direction(planted_data(num_videos=8))
    q = list(data.queries.values())
    assert _cos(q[0].words[0], q[1].words[1]) > 0.9  # near-parallel as given
    prepared, norm = prepare(data, num_clips=24, max_words=16)
    assert norm.has_text
    w = [pq.words.numpy() for pq in prepared.queries.values()]
    assert abs(_cos(w[0][0], w[1][1])) < 0.5
    train_words = np.concatenate([prepared.queries[r.query_id].words.numpy()
                                  for r in data.split("train") if r.query_id in prepared.queries])
    np.testing.assert_allclose(train_words.mean(0), 0.0, atol=1e-3)


def test_text_statistics_come_from_the_train_split_only() -> None:
    data = planted_data(num_videos=10)
    test_ids = {r.query_id for r in data.split("test")}
    shifted = {k: (replace(q, sentence=q.sentence + 100.0) if k in test_ids else q)
               for k, q in data.queries.items()}
    _, norm = prepare(replace(data, queries=shifted), num_clips=24, max_words=16)
    _, ref = prepare(data, num_clips=24, max_words=16)
    assert norm.sentence_mean is not None and ref.sentence_mean is not None
    np.testing.assert_allclose(norm.sentence_mean, ref.sentence_mean)


def test_norm_stats_round_trip_and_old_checkpoints() -> None:
    data = planted_data(num_videos=6)
    _, norm = prepare(data, num_clips=24, max_words=16)
    back = NormStats.from_dict(norm.to_dict())
    assert back.has_text
    np.testing.assert_allclose(back.word_std, norm.word_std)
    # a checkpoint written before the text statistics existed: vectors are used as they are
    old = {k: v for k, v in norm.to_dict().items() if not k.startswith(("word", "sentence"))}
    legacy = NormStats.from_dict(old)
    assert not legacy.has_text
    q: QueryInput = next(iter(data.queries.values()))
    np.testing.assert_array_equal(legacy.standardize_words(q.words), q.words)
    prepared, _ = prepare(data, num_clips=24, max_words=16, norm=legacy)
    first = next(iter(prepared.queries.values()))
    np.testing.assert_allclose(first.words.numpy(), data.queries[first.record.query_id].words[: len(first.words)])
