"""Round trips of the Zarr query store against an in-memory and an on-disk store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from zarr.storage import MemoryStore

from storage.queries import COMMIT_ATTR, QueryStore


@pytest.fixture(params=["memory", "disk", "file-url"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> QueryStore:
    if request.param == "memory":
        return QueryStore(MemoryStore())
    if request.param == "file-url":
        return QueryStore(f"file://{tmp_path}/q.zarr")
    return QueryStore(tmp_path / "q.zarr")


def _sample(rng: np.random.Generator, n_queries: int = 5, word_dim: int = 7, sent_dim: int = 3):
    ids = [f"vid{i // 2}#{i}" for i in range(n_queries)]
    tokens = [[f"w{j}" for j in range(int(rng.integers(1, 6)))] for _ in ids]
    tokens[2] = ["a person", "opens", "ünïcode"]  # spaces and non-ASCII survive the round trip
    words = [rng.standard_normal((len(t), word_dim)).astype(np.float32) for t in tokens]
    sentences = rng.standard_normal((n_queries, sent_dim)).astype(np.float32)
    return ids, tokens, words, sentences


def test_round_trip(store: QueryStore) -> None:
    rng = np.random.default_rng(0)
    ids, tokens, words, sentences = _sample(rng)
    group = store.encoder("charades-sta", "glove6B@abcd+skip@run1")
    assert not group.exists() and not group.is_complete()
    group.write(
        ids,
        tokens,
        words,
        sentences,
        {"glove": {"sha256": "abcd"}, "oov_count": 3},
        full_lengths=[len(t) + (i == 0) for i, t in enumerate(tokens)],
    )
    assert group.is_complete()

    for i, q in enumerate(ids):
        f = group.read_query(q)
        assert f.tokens == tokens[i]
        np.testing.assert_array_equal(f.words, words[i])
        np.testing.assert_array_equal(f.sentence, sentences[i])
    assert group.read_query(ids[0]).full_length == len(tokens[0]) + 1

    allq = group.read_all()
    assert allq.query_ids == ids
    assert allq.words.shape == (sum(len(t) for t in tokens), 7)
    assert allq.offsets[0] == 0 and allq.offsets[-1] == allq.words.shape[0]
    np.testing.assert_array_equal(allq.sentences, sentences)
    attrs = group.attrs
    assert attrs["glove"] == {"sha256": "abcd"} and attrs["oov_count"] == 3
    assert attrs["dimension_names"]["words"] == ["token", "word_dim"]
    assert attrs["code_version"] and COMMIT_ATTR in attrs
    assert store.list_encoders("charades-sta") == ["glove6B@abcd+skip@run1"]

    # a fresh handle on the same store (on disk: a new process would see the same)
    again = QueryStore(store.root).encoder("charades-sta", "glove6B@abcd+skip@run1")
    assert again.read_query(ids[2]).tokens == ["a person", "opens", "ünïcode"]
    with pytest.raises(KeyError, match="nope"):
        again.read_query("nope")


def test_interrupted_write_is_not_complete_and_is_replaced(store: QueryStore) -> None:
    rng = np.random.default_rng(1)
    ids, tokens, words, sentences = _sample(rng)
    group = store.encoder("tacos", "enc")
    w = group.writer(ids, [len(t) for t in tokens], word_dim=7, sentence_dim=3)
    w.write_block(0, tokens[:2], words[:2], sentences[:2])
    # "crash": commit() never runs
    assert group.exists() and not group.is_complete()
    with pytest.raises(RuntimeError, match="incomplete"):
        group.read_all()
    assert store.list_encoders("tacos") == []
    assert store.list_encoders("tacos", complete_only=False) == ["enc"]
    with pytest.raises(RuntimeError, match="never written"):
        w.commit({})
    # the next run replaces the leftover without being asked
    group.write(ids, tokens, words, sentences, {})
    assert group.is_complete()
    np.testing.assert_array_equal(group.read_query(ids[4]).words, words[4])


def test_block_writes_and_overwrite(store: QueryStore) -> None:
    rng = np.random.default_rng(2)
    ids, tokens, words, sentences = _sample(rng, n_queries=9)
    group = store.encoder("activitynet", "enc")
    with group.writer(ids, [len(t) for t in tokens], word_dim=7, sentence_dim=3) as w:
        for start in range(0, 9, 4):
            sl = slice(start, start + 4)
            w.write_block(start, tokens[sl], words[sl], sentences[sl])
        w.commit({"run": 1})
    assert group.read_all().words.shape[0] == sum(map(len, tokens))
    with pytest.raises(FileExistsError, match="overwrite"):
        group.write(ids, tokens, words, sentences, {"run": 2})
    group.write(ids[:3], tokens[:3], words[:3], sentences[:3], {"run": 2}, overwrite=True)
    assert group.attrs["run"] == 2 and len(group.read_all()) == 3


def test_bad_inputs(store: QueryStore) -> None:
    with pytest.raises(ValueError, match="dataset name '../x'"):
        store.encoder("../x", "enc")
    with pytest.raises(ValueError, match="encoder id 'a/b'"):
        store.encoder("ds", "a/b")
    group = store.encoder("ds", "enc")
    with pytest.raises(ValueError, match="unique.*'q'"):
        group.write(["q", "q"], [["a"], ["b"]], [np.zeros((1, 2))] * 2, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="query 'q2': 1 tokens and 2 word vectors"):
        group.write(
            ["q1", "q2"], [["a"], ["b"]], [np.zeros((1, 2)), np.zeros((2, 2))], np.zeros((2, 2))
        )
    with pytest.raises(FileNotFoundError, match="mktn embed"):
        store.encoder("ds", "other").read_all()


def test_latest_encoder_pointer(store: QueryStore) -> None:
    with pytest.raises(FileNotFoundError, match="no complete encoding of dataset 'ds'"):
        store.latest_encoder("ds")
    rng = np.random.default_rng(3)
    ids, tokens, words, sentences = _sample(rng)
    store.encoder("ds", "a").write(ids, tokens, words, sentences)
    with pytest.raises(RuntimeError, match="not complete"):
        store.set_latest("ds", "b")
    store.set_latest("ds", "a")
    assert store.latest_encoder("ds") == "a"
    assert store.list_encoders("ds") == ["a"]


def test_one_commit_marker_name_and_old_groups_still_read(tmp_path) -> None:
    """Both stores commit under storage.keys.COMMIT_ATTR ("commit"); a query group committed
    under the old name ("mktn_commit") is still complete and readable."""
    import zarr

    from storage.features import COMMIT_ATTR as FEATURES_COMMIT
    from storage.keys import is_committed

    assert COMMIT_ATTR == FEATURES_COMMIT == "commit"
    store = QueryStore(tmp_path / "q.zarr")
    g = store.encoder("ds", "enc")
    g.write(["a"], [["x", "y"]], [np.ones((2, 3), np.float32)], np.ones((1, 4), np.float32), {"k": 1})
    path = tmp_path / "q.zarr" / g.key
    old = zarr.open_group(str(path), mode="r+")
    marker = old.attrs[COMMIT_ATTR]
    attrs = {k: v for k, v in old.attrs.items() if k != COMMIT_ATTR}
    old.attrs.clear()
    old.attrs.update({**attrs, "mktn_commit": marker})
    again = QueryStore(tmp_path / "q.zarr").encoder("ds", "enc")
    assert again.is_complete() and is_committed(again.attrs) and COMMIT_ATTR not in again.attrs
    assert again.read_query("a").tokens == ["x", "y"]
    assert QueryStore(tmp_path / "q.zarr").list_encoders("ds") == ["enc"]
    with pytest.raises(ValueError, match="written only by commit"):
        store.encoder("ds", "other").write(["a"], [["x"]], [np.ones((1, 3), np.float32)],
                                           np.ones((1, 4), np.float32), {"mktn_commit": 1})
