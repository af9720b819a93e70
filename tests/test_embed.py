"""embed_queries and `mktn embed`: records -> a complete, reusable query store group."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_skipthought import BI, UNI, write_release

from pipeline.cli import main
from pipeline.datasets.records import QueryMoment
from pipeline.embed import EmbedConfig, embed_queries, ordered_documents
from pipeline.glove import WordVectorsConfig
from pipeline.skipthought import SkipThoughtConfig
from pipeline.text import TextConfig, Tokenizer, tokenize_queries
from storage.queries import QueryStore

DIM = 8
SCRIPTS = [
    ["a person opens the door.", "the person walks into the room.", "the person sits on a chair."],
    ["someone takes a book.", "they read the book for a long time.", "then they close it."],
]
GLOVE_WORDS = [
    "a",
    "person",
    "opens",
    "the",
    "door",
    "walks",
    "into",
    "room",
    "sits",
    "on",
    "chair",
]



def _records() -> list[QueryMoment]:
    out = []
    for v in range(8):
        split = "train" if v < 6 else "test"
        script = SCRIPTS[v % 2]
        for i in reversed(range(len(script))):  # file order differs from time order
            out.append(
                QueryMoment(
                    query_id=f"{split}.vid{v}.{i}",
                    video_id=f"vid{v}",
                    sentence=script[i] if v != 7 else script[i].replace("book", "zeppelin"),
                    start=5.0 * i,
                    end=5.0 * i + 4.0,
                    duration=20.0,
                    split=split,
                )
            )
    out.append(QueryMoment("test.vid7.9", "vid7", " ... ", 0.0, 1.0, 20.0, "test"))
    return out


def _glove(path: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = [w + " " + " ".join(f"{x:.4f}" for x in rng.standard_normal(DIM)) for w in GLOVE_WORDS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _config(tmp_path: Path, **kw: object) -> EmbedConfig:
    base: dict[str, object] = dict(
        dataset="toy",
        text=TextConfig(max_len=5),
        vectors=WordVectorsConfig(
            path=str(_glove(tmp_path / "glove.txt")), cache_dir=str(tmp_path / "c")
        ),
        skipthought_config=SkipThoughtConfig(
            mode="combine", word_dim=DIM, uni_dim=12, bi_dim=6, epochs=2, batch_size=8
        ),
        checkpoint_dir=str(tmp_path / "ckpt"),
        progress=False,
        device="cpu",
    )
    base.update(kw)
    return EmbedConfig(**base)  # type: ignore[arg-type]


def test_embed_writes_a_complete_group_and_reuses_it(tmp_path: Path, one_thread: None) -> None:
    store = QueryStore(tmp_path / "q.zarr")
    records = _records()
    cfg = _config(tmp_path)
    s = embed_queries(records, store, cfg)
    assert s.num_queries == len(records) - 1 and s.skipped == 1 and "test.vid7.9" in s.errors[0]
    assert s.truncated == 12  # 6- and 8-token sentences in all 8 videos
    assert s.word_dim == DIM and s.sentence_dim == 12 + 12
    assert s.word_vectors == "file" and s.sentence_encoder == "trained"
    assert s.encoder_id.startswith("glove-") and store.latest_encoder("toy") == s.encoder_id

    group = store.encoder("toy", s.encoder_id)
    q = group.read_query("train.vid0.0")
    assert q.tokens == ["a", "person", "opens", "the", "door"]
    glove_rows = {
        ln.split(" ")[0]: np.array(ln.split(" ")[1:], dtype=np.float32)
        for ln in (tmp_path / "glove.txt").read_text().splitlines()
    }
    np.testing.assert_allclose(q.words[1], glove_rows["person"], atol=1e-6)
    assert q.sentence.shape == (24,) and np.isfinite(q.sentence).all()
    np.testing.assert_allclose(np.linalg.norm(q.sentence[:12]), 1.0, atol=1e-5)
    long = group.read_query("train.vid1.1")
    assert long.full_length == 8 and len(long.tokens) == 5
    attrs = group.attrs
    assert attrs["word_vectors"]["sha256"] and attrs["word_vectors"]["format"] == "glove"
    assert attrs["sentence_encoder"]["run_id"] and attrs["sentence_encoder"]["epochs"] == 2
    assert attrs["oov"]["words"] == s.oov_words > 0 and attrs["comparable_to_published"] is False
    assert "zeppelin" not in GLOVE_WORDS and s.oov_tokens >= 1

    again = embed_queries(records, store, cfg)
    assert again.cached and again.encoder_id == s.encoder_id
    changed = embed_queries(records[:-2], store, cfg)  # other queries -> another group
    assert not changed.cached and changed.encoder_id != s.encoder_id
    assert sorted(store.list_encoders("toy")) == sorted([s.encoder_id, changed.encoder_id])


def test_documents_follow_start_time_or_file_order() -> None:
    records = _records()[:3]  # vid0 in reversed file order
    corpus = tokenize_queries([(r.query_id, r.sentence) for r in records], Tokenizer(), max_len=50)
    by_time = ordered_documents(records, corpus, "start")
    assert by_time[0][0][:3] == ["a", "person", "opens"]
    by_file = ordered_documents(records, corpus, "file")
    assert by_file[0][0][:3] == ["the", "person", "sits"]


def test_default_vectors_are_recorded(tmp_path: Path, one_thread: None) -> None:
    store = QueryStore(tmp_path / "q.zarr")
    cfg = _config(
        tmp_path,
        vectors=WordVectorsConfig(cache_dir=str(tmp_path / "c"), default_dim=DIM, default_epochs=2),
    )
    s = embed_queries(_records(), store, cfg)
    attrs = store.encoder("toy", s.encoder_id).attrs
    assert s.encoder_id.startswith("w2v4+id4-")  # half word2vec, half identity code (default)
    assert attrs["word_vectors"]["kind"] == "word2vec-on-dataset+identity"
    assert attrs["word_vectors"]["identity_dim"] == 4
    assert attrs["word_vectors"]["comparable_to_published"] is False
    assert "zeppelin" in store.encoder("toy", s.encoder_id).read_query("test.vid7.1").tokens


def _write_jsonl(path: Path, records: list[QueryMoment]) -> Path:
    rows = [
        {
            "qid": r.query_id,
            "query": r.sentence,
            "vid": r.video_id,
            "duration": r.duration,
            "relevant_windows": [[r.start, r.end]],
        }
        for r in records
    ]
    path.write_text("\n".join(json.dumps(x) for x in rows) + "\n", encoding="utf-8")
    return path


def test_cli_embed(tmp_path: Path, one_thread: None, capsys: pytest.CaptureFixture[str]) -> None:
    recs = _records()[:-1]
    train = _write_jsonl(tmp_path / "train.jsonl", [r for r in recs if r.split == "train"])
    test = _write_jsonl(tmp_path / "test.jsonl", [r for r in recs if r.split == "test"])
    with open(test, "a", encoding="utf-8") as fh:  # two bad lines: dropped, and reported
        fh.write("{not json\n" + json.dumps({"video_id": "v9"}) + "\n")
    _glove(tmp_path / "glove.txt")
    args = [
        "embed",
        "-a",
        f"train={train}",
        f"test={test}",
        "--store",
        str(tmp_path / "q.zarr"),
        "--dataset",
        "toy",
        "--glove",
        str(tmp_path / "glove.txt"),
        "--cache-dir",
        str(tmp_path / "c"),
        "--checkpoint-dir",
        str(tmp_path / "ck"),
        "--skipthought-mode",
        "uni",
        "--skipthought-epochs",
        "1",
        "--max-len",
        "6",
        "--json",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_queries"] == len(recs) and out["sentence_dim"] == 256 and out["word_dim"] == DIM
    assert out["annotations_rejected"] == 2, out  # issue 13 item 9
    assert sum(out["annotations_rejected_by_reason"].values()) == 2
    assert QueryStore(tmp_path / "q.zarr").latest_encoder("toy") == out["encoder_id"]
    assert main([*args[:-4], "--no-progress"]) == 0  # the rerun reuses the group
    assert "already complete: reused" in capsys.readouterr().out

    assert (
        main(
            [
                "embed",
                "-a",
                str(train),
                "--store",
                str(tmp_path / "q.zarr"),
                "--glove",
                str(tmp_path / "missing.txt"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "missing.txt" in capsys.readouterr().err


def test_embed_with_the_original_release(tmp_path: Path) -> None:
    (tmp_path / "release").mkdir()
    release_dir, *_ = write_release(tmp_path / "release")
    rng = np.random.default_rng(1)
    # GloVe with the release's width (5) so the expansion map can be fitted; "chair" and
    # "walks" are not in the release dictionary and get mapped rows
    words = ["the", "person", "opens", "door", "a", "chair", "walks", "into", "room"]
    glove = tmp_path / "glove5.txt"
    glove.write_text(
        "\n".join(w + " " + " ".join(f"{x:.4f}" for x in rng.standard_normal(5)) for w in words)
        + "\n",
        encoding="utf-8",
    )
    cfg = _config(
        tmp_path,
        vectors=WordVectorsConfig(path=str(glove), cache_dir=str(tmp_path / "c")),
        skipthought=str(release_dir),
    )
    records = _records()[:3]
    s = embed_queries(records, QueryStore(tmp_path / "q.zarr"), cfg)
    assert s.sentence_encoder == "theano-release" and s.sentence_dim == UNI + 2 * BI
    assert "+st-combine-" in s.encoder_id
    group = QueryStore(tmp_path / "q.zarr").encoder("toy", s.encoder_id)
    st = group.attrs["sentence_encoder"]
    assert set(st["files"]) == {
        "uni_skip.npz",
        "bi_skip.npz",
        "utable.npy",
        "btable.npy",
        "dictionary.txt",
    }
    assert st["vocab_expansion"]["added_words"] >= 2  # chair, walks (+ into, room, sits...)
    assert group.attrs["comparable_to_published"] is True

    from pipeline.skipthought import load_theano_skipthoughts

    enc, _ = load_theano_skipthoughts(release_dir)
    q = group.read_query(records[2].query_id)  # "a person opens the door": all in the release
    np.testing.assert_allclose(q.sentence, enc.encode([q.tokens])[0], atol=1e-5)


def test_query_embedder_inverts_the_group_attrs_and_reads_old_stores(
    tmp_path: Path, one_thread: None
) -> None:
    """pipeline.embed.QueryEmbedder (what `mktn predict` embeds new sentences with) rebuilds the
    tokenizer, word vectors and skip-thought encoder from a group's attributes and reproduces
    its stored vectors; a group written before "oov_words" was recorded still reads (its OOV
    words recognised by value)."""
    from model.loader import word_table
    from pipeline.embed import QueryEmbedder

    store = QueryStore(tmp_path / "q.zarr")
    records = _records()
    s = embed_queries(records, store, _config(tmp_path))
    group = store.encoder("toy", s.encoder_id)
    attrs = group.attrs
    arrays = group.read_all()
    words, vectors = word_table(arrays.tokens, arrays.words)
    assert "zeppelin" in attrs["word_vectors"]["oov_words"]
    legacy_attrs = {**attrs, "word_vectors": {k: v for k, v in attrs["word_vectors"].items()
                                              if k != "oov_words"}}
    qid = "test.vid7.0"  # "someone takes a zeppelin.": an OOV word
    sentence = next(r.sentence for r in records if r.query_id == qid)
    stored = group.read_query(qid)
    for a in (attrs, legacy_attrs):
        emb = QueryEmbedder(a, words, vectors)
        assert emb.vectors.oov_words == sorted(attrs["word_vectors"]["oov_words"])
        assert "zeppelin" not in emb.vectors.kv.key_to_index and "person" in emb.vectors.kv.key_to_index
        toks, w, sent = emb.embed([sentence])[0]
        assert toks == stored.tokens
        np.testing.assert_array_equal(w, stored.words)
        np.testing.assert_allclose(sent, stored.sentence, atol=1e-5)
    # a word outside the table: from the recorded vector file while it is there, else seeded OOV
    glove = tmp_path / "glove.txt"
    lamp = np.arange(DIM, dtype=np.float32) / 10
    glove.write_text(glove.read_text() + "lamp " + " ".join(f"{x:.4f}" for x in lamp) + "\n")
    emb = QueryEmbedder(attrs, words, vectors)
    np.testing.assert_allclose(emb.word_vectors(["lamp"])[0], lamp, atol=1e-6)
    glove.unlink()
    gone = QueryEmbedder(attrs, words, vectors)
    np.testing.assert_array_equal(gone.word_vectors(["lamp"])[0], gone.vectors.vector("lamp"))
    assert "lamp" not in gone.vectors.kv.key_to_index
