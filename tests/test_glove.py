"""GloVe / word2vec / gensim vector files: round trips, 840B tokens, cache, OOV, the default."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors

import pipeline.glove as glove
from pipeline.glove import (
    GloveFormatError,
    WordVectorsConfig,
    build_word_vectors,
    detect_format,
    identity_vector,
    load_subset,
    oov_vector,
    stream_subset,
    train_default_vectors,
)
from storage.fingerprint import file_digest

DIM = 6
WORDS = ["the", "person", "opens", "door", "a", "chair", "walks", "book", "café", "."]


def _vectors(words: list[str], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {w: rng.standard_normal(DIM).astype(np.float32).round(5) for w in words}


def _write_glove(path: Path, vecs: dict[str, np.ndarray]) -> Path:
    lines = [w + " " + " ".join(f"{x:.5f}" for x in v) for w, v in vecs.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_glove_text_matches_gensim_reader(tmp_path: Path) -> None:
    vecs = _vectors(WORDS)
    path = _write_glove(tmp_path / "glove.6B.6d.txt", vecs)
    assert detect_format(path) == "glove"
    ref = KeyedVectors.load_word2vec_format(str(path), binary=False, no_header=True)
    kv, stats = stream_subset(path, ["person", "door", "café", "unseen"], progress=False)
    assert (stats.fmt, stats.dim, stats.lines, stats.found) == ("glove", DIM, len(WORDS), 3)
    assert sorted(kv.index_to_key) == ["café", "door", "person"]
    for w in kv.index_to_key:
        np.testing.assert_allclose(kv[w], ref[w], rtol=0, atol=1e-6)


def test_840b_tokens_with_spaces_and_case_fallback(tmp_path: Path) -> None:
    vecs = _vectors(["at home", ". . .", "Paris", "paris2", "Door", "door", "name@domain.com x"])
    path = _write_glove(tmp_path / "glove.840B.6d.txt", vecs)
    kv, stats = stream_subset(path, ["at home", ". . .", "paris", "door"], progress=False)
    assert stats.dim == DIM  # inferred from the common field count despite the spaced tokens
    np.testing.assert_array_equal(kv["at home"], vecs["at home"])
    np.testing.assert_array_equal(kv[". . ."], vecs[". . ."])
    np.testing.assert_array_equal(kv["paris"], vecs["Paris"])  # lower-cased fallback
    np.testing.assert_array_equal(kv["door"], vecs["door"])  # the exact match wins over "Door"
    assert stats.lowercase_matches == 1
    strict, _ = stream_subset(path, ["paris"], lowercase_fallback=False, progress=False)
    assert len(strict) == 0


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_text_and_binary_round_trip(tmp_path: Path, binary: bool) -> None:
    vecs = _vectors(WORDS)
    src = KeyedVectors(vector_size=DIM)
    src.add_vectors(list(vecs), np.stack(list(vecs.values())))
    path = tmp_path / ("vectors.bin" if binary else "vectors.w2v.txt")
    src.save_word2vec_format(str(path), binary=binary)
    assert detect_format(path) == ("word2vec-binary" if binary else "word2vec")
    kv, stats = stream_subset(path, WORDS + ["zzz"], progress=False)
    assert stats.found == len(WORDS) and stats.lines == len(WORDS)
    for w in WORDS:
        np.testing.assert_allclose(kv[w], vecs[w], atol=1e-6)
    _, info = load_subset(path, ["door"], cache_dir=tmp_path / "c", progress=False)
    assert info["sha256"] == file_digest(path) and info["format"] == stats.fmt


def test_gensim_native_round_trip(tmp_path: Path) -> None:
    vecs = _vectors(WORDS)
    src = KeyedVectors(vector_size=DIM)
    src.add_vectors(list(vecs), np.stack(list(vecs.values())))
    path = tmp_path / "vectors.kv"
    src.save(str(path))
    with pytest.raises(GloveFormatError, match="pickle and loading it can run code"):
        stream_subset(path, ["door"], progress=False)
    kv, stats = stream_subset(path, ["door", "book", "nope"], progress=False, trust_pickle=True)
    assert stats.fmt == "gensim" and sorted(kv.index_to_key) == ["book", "door"]
    np.testing.assert_array_equal(kv["book"], vecs["book"])


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch '{self.marker}'",))


def test_malicious_kv_and_cache_never_run_code(tmp_path: Path) -> None:
    """Issue 13: a .kv handed to --glove, or a tampered subset cache, must not run code."""
    import pickle

    marker = tmp_path / "PWNED"
    evil = tmp_path / "vectors.kv"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    cache = tmp_path / "cache"
    for fmt in ("auto", "gensim"):
        with pytest.raises(GloveFormatError, match="--trust-pickle"):
            load_subset(evil, ["door"], fmt=fmt, cache_dir=cache, progress=False)
    # a corrupt .kv behind the opt-in is one clear error, not a traceback from gensim
    junk = tmp_path / "junk.kv"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(GloveFormatError, match="not a readable gensim KeyedVectors"):
        stream_subset(junk, ["door"], progress=False, trust_pickle=True)
    # the cache is .npy + .json: a pickle planted where the cache lives is never loaded
    path = _write_glove(tmp_path / "glove.txt", _vectors(WORDS))
    kv1, info1 = load_subset(path, ["door", "book"], cache_dir=cache, progress=False)
    npy = Path(info1["cache"])
    assert npy.suffix == ".npy" and npy.with_suffix(".json").is_file()
    assert not list(cache.glob("*.kv"))
    npy.write_bytes(pickle.dumps(_Payload(marker)))  # tampered matrix
    kv2, info2 = load_subset(path, ["door", "book"], cache_dir=cache, progress=False)
    assert not info2["cache_hit"]  # a miss: the text file was read again
    np.testing.assert_array_equal(kv2["door"], kv1["door"])
    npy.with_suffix(".json").write_text("{not json", encoding="utf-8")  # tampered index
    _, info3 = load_subset(path, ["door", "book"], cache_dir=cache, progress=False)
    assert not info3["cache_hit"]
    _, info4 = load_subset(path, ["door", "book"], cache_dir=cache, progress=False)
    assert info4["cache_hit"]
    assert not marker.exists()


def test_wrong_value_counts_name_the_line(tmp_path: Path) -> None:
    good = [w + " " + " ".join(["0.1"] * DIM) for w in ["a", "b", "c", "d"]]
    short = tmp_path / "short.txt"
    short.write_text("\n".join(good[:2] + ["e 0.1 0.2"] + good[2:]) + "\n", encoding="utf-8")
    with pytest.raises(
        GloveFormatError, match=r"short\.txt:3: 2 values after the token, expected 6"
    ):
        stream_subset(short, ["a"], progress=False)
    long = tmp_path / "long.txt"
    long.write_text(
        "\n".join(good + ["f " + " ".join(["0.1"] * (DIM + 2))]) + "\n", encoding="utf-8"
    )
    with pytest.raises(GloveFormatError, match=r"long\.txt:5: 8 values after the token b'f'"):
        stream_subset(long, ["a"], progress=False)
    notnum = tmp_path / "notnum.txt"
    notnum.write_text("\n".join(good + ["g " + " ".join(["x"] * DIM)]) + "\n", encoding="utf-8")
    with pytest.raises(GloveFormatError, match=r"notnum\.txt:5: a value is not a number"):
        stream_subset(notnum, ["g"], progress=False)
    header = tmp_path / "header.txt"
    header.write_text("9 6\n" + "\n".join(good) + "\n", encoding="utf-8")
    with pytest.raises(GloveFormatError, match="header says 9 vectors but the file has 4"):
        stream_subset(header, ["a"], progress=False)
    with pytest.raises(FileNotFoundError, match="download a GloVe release"):
        stream_subset(tmp_path / "missing.txt", ["a"])


def test_subset_cache_hit_and_invalidation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_glove(tmp_path / "glove.txt", _vectors(WORDS))
    cache = tmp_path / "cache"
    kv1, info1 = load_subset(path, ["door", "book"], cache_dir=cache, progress=False)
    assert not info1["cache_hit"] and info1["found"] == 2
    assert info1["sha256"] == file_digest(path)  # hashed during the one streaming pass
    assert glove.lookup_digest(path, cache) == info1["sha256"]  # ... and remembered

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the file was streamed again despite the cache")

    monkeypatch.setattr(glove, "stream_subset", boom)
    kv2, info2 = load_subset(path, ["book", "door"], cache_dir=cache, progress=False)
    assert info2["cache_hit"] and info2["sha256"] == info1["sha256"]
    np.testing.assert_array_equal(kv2["door"], kv1["door"])
    monkeypatch.undo()

    # another vocabulary, or the same path with new content, is a cache miss
    _, info3 = load_subset(path, ["door"], cache_dir=cache, progress=False)
    assert not info3["cache_hit"]
    _write_glove(path, _vectors(WORDS, seed=1))
    kv4, info4 = load_subset(path, ["door", "book"], cache_dir=cache, progress=False)
    assert not info4["cache_hit"] and info4["sha256"] != info1["sha256"]
    assert not np.array_equal(kv4["door"], kv1["door"])


def test_oov_treatment_and_counts(tmp_path: Path) -> None:
    path = _write_glove(tmp_path / "glove.txt", _vectors(WORDS))
    cfg = WordVectorsConfig(path=str(path), cache_dir=str(tmp_path / "c"))
    wv = build_word_vectors(cfg, ["door", "xyzzy", "plugh"], [], progress=False)
    assert wv.oov_words == ["plugh", "xyzzy"]
    assert wv.count_oov({"door": 3, "xyzzy": 2, "plugh": 1}) == (2, 3)
    m = wv.lookup(["door", "xyzzy", "xyzzy"])
    assert m.shape == (3, DIM) and m.dtype == np.float32
    np.testing.assert_array_equal(m[1], m[2])  # the same word, the same vector
    np.testing.assert_array_equal(m[1], oov_vector("xyzzy", DIM, sigma=wv.oov_sigma))
    assert not np.array_equal(m[1], wv.vector("plugh")) and wv.oov_sigma > 0
    zeros = build_word_vectors(
        WordVectorsConfig(path=str(path), cache_dir=str(tmp_path / "c"), oov="zeros"),
        ["xyzzy"],
        [],
        progress=False,
    )
    assert not zeros.lookup(["xyzzy"]).any()
    with pytest.raises(ValueError, match="unknown OOV treatment 'nan'"):
        build_word_vectors(WordVectorsConfig(oov="nan"), ["a"], [["a"]])


def test_default_vectors_are_trained_and_deterministic() -> None:
    sents = [
        ["a", "person", "opens", "the", "door"],
        ["the", "person", "sits", "on", "a", "chair"],
    ] * 20
    kv1, info1 = train_default_vectors(sents, dim=16, seed=3, epochs=5)
    kv2, _ = train_default_vectors(sents, dim=16, seed=3, epochs=5)
    assert info1["kind"] == "word2vec-on-dataset" and info1["comparable_to_published"] is False
    assert sorted(kv1.index_to_key) == sorted({w for s in sents for w in s})
    np.testing.assert_array_equal(kv1["door"], kv2["door"])
    wv = build_word_vectors(
        WordVectorsConfig(default_dim=16, default_epochs=5, identity_fraction=0.0), ["door", "new"], sents
    )
    assert wv.source["kind"] == "word2vec-on-dataset" and wv.oov_words == ["new"]
    with pytest.raises(ValueError, match="no training sentences"):
        train_default_vectors([])


def test_default_vectors_keep_every_word_distinguishable() -> None:
    """Word2vec on templated sentences puts the words of one slot on nearly one vector
    (cosine 0.96 for left/right on the synthetic benchmark); the default's identity half is
    a per-word code, near-orthogonal between words and the same on every run."""
    sents = [["the", c, "ball", "moves", d] for c in ("red", "blue") for d in ("left", "right")] * 30

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    kv_w2v, _ = train_default_vectors(sents, dim=16, seed=0, epochs=20)
    kv, info = train_default_vectors(sents, dim=32, seed=0, epochs=20, identity_dim=16)
    kv2, _ = train_default_vectors(sents, dim=32, seed=0, epochs=20, identity_dim=16)
    assert info["kind"] == "word2vec-on-dataset+identity"
    assert (info["word2vec_dim"], info["identity_dim"]) == (16, 16)
    np.testing.assert_array_equal(kv["left"], kv2["left"])
    for w in ("left", "right", "red", "blue"):
        np.testing.assert_allclose(kv[w][:16], kv_w2v[w], rtol=1e-6)  # the word2vec half
        assert cos(kv[w][16:], identity_vector(w, 16)) == pytest.approx(1.0, abs=1e-5)
    ident = [kv[w][16:] for w in ("left", "right", "red", "blue")]
    assert all(abs(cos(a, b)) < 0.6 for i, a in enumerate(ident) for b in ident[i + 1:])
    cfg = WordVectorsConfig(default_dim=32, default_epochs=20)
    assert cfg.identity_dim == 16
    assert build_word_vectors(cfg, ["left"], sents).source["identity_dim"] == 16
    with pytest.raises(ValueError, match="identity_fraction"):
        _ = WordVectorsConfig(identity_fraction=1.0).identity_dim


def test_truncated_binary_and_gzip_text(tmp_path: Path) -> None:
    vecs = _vectors(WORDS)
    src = KeyedVectors(vector_size=DIM)
    src.add_vectors(list(vecs), np.stack(list(vecs.values())))
    full = tmp_path / "full.bin"
    src.save_word2vec_format(str(full), binary=True)
    cut = tmp_path / "cut.bin"
    cut.write_bytes(full.read_bytes()[:-10])
    with pytest.raises(
        GloveFormatError, match=rf"cut\.bin: record {len(WORDS)} of {len(WORDS)} is truncated"
    ):
        stream_subset(cut, ["door"], progress=False)

    plain = _write_glove(tmp_path / "g.txt", vecs)
    gz = tmp_path / "g.txt.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    kv, stats = stream_subset(gz, ["door", "chair"], progress=False)
    assert stats.fmt == "glove" and stats.found == 2
    np.testing.assert_array_equal(kv["chair"], vecs["chair"])
    _, info = load_subset(gz, ["door"], cache_dir=tmp_path / "c", progress=False)
    assert info["sha256"] == file_digest(gz)  # .gz: hashed in its own read, of the raw bytes
