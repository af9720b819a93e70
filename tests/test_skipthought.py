"""Skip-thought: the Theano-release loader against hand-written GRU steps, training, resume."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors

from pipeline.skipthought import (
    SPECIALS,
    SkipThoughtConfig,
    SkipThoughtEncoder,
    build_skipthought_config,
    load_checkpoint,
    load_theano_skipthoughts,
    train_skipthought,
)

DIM_WORD, UNI, BI = 5, 7, 4
DICTIONARY = ["UNK", "<eos>", "the", "person", "opens", "door", "a", "chair"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _theano_gru(x: np.ndarray, p: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    """The release's gru_layer, one step at a time: returns the final state."""
    dim = p[f"{prefix}_Ux"].shape[0]
    h = np.zeros(dim)
    for x_t in x:
        preact = h @ p[f"{prefix}_U"] + x_t @ p[f"{prefix}_W"] + p[f"{prefix}_b"]
        r = _sigmoid(preact[:dim])
        u = _sigmoid(preact[dim:])
        h_tilde = np.tanh((h @ p[f"{prefix}_Ux"]) * r + x_t @ p[f"{prefix}_Wx"] + p[f"{prefix}_bx"])
        h = u * h + (1.0 - u) * h_tilde
    return h


def _gru_params(rng: np.random.Generator, prefix: str, dim: int) -> dict[str, np.ndarray]:
    def r(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    return {
        f"{prefix}_W": r(DIM_WORD, 2 * dim),
        f"{prefix}_b": r(2 * dim),
        f"{prefix}_U": r(dim, 2 * dim),
        f"{prefix}_Wx": r(DIM_WORD, dim),
        f"{prefix}_Ux": r(dim, dim),
        f"{prefix}_bx": r(dim),
    }


@pytest.fixture
def release(
    tmp_path: Path,
) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    return write_release(tmp_path)


def write_release(
    tmp_path: Path,
) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A miniature of the original release, in its file layout and parameter names."""
    rng = np.random.default_rng(0)
    uni = _gru_params(rng, "encoder", UNI)
    bi = {**_gru_params(rng, "encoder", BI), **_gru_params(rng, "encoder_r", BI)}
    np.savez(tmp_path / "uni_skip.npz", Wemb=rng.standard_normal((3, DIM_WORD)), **uni)
    np.savez(tmp_path / "bi_skip.npz", **bi)
    for name, dim in (("uni_skip.npz.pkl", UNI), ("bi_skip.npz.pkl", BI)):
        with (tmp_path / name).open("wb") as fh:
            pickle.dump(
                {"dim_word": DIM_WORD, "dim": dim, "n_words": 20000, "encoder": "gru"},
                fh,
                protocol=2,
            )
    utable = rng.standard_normal((len(DICTIONARY), DIM_WORD)).astype(np.float32)
    btable = rng.standard_normal((len(DICTIONARY), DIM_WORD)).astype(np.float32)
    np.save(tmp_path / "utable.npy", utable)
    np.save(tmp_path / "btable.npy", btable)
    (tmp_path / "dictionary.txt").write_text("\n".join(DICTIONARY) + "\n", encoding="utf-8")
    return tmp_path, uni, bi, utable, btable


def test_loader_reproduces_theano_gru_steps(release) -> None:
    d, uni, bi, utable, btable = release
    enc, prov = load_theano_skipthoughts(d, mode="combine")
    assert enc.sentence_dim == UNI + 2 * BI and prov["sentence_dim"] == UNI + 2 * BI
    assert set(prov["files"]) == {
        "uni_skip.npz",
        "bi_skip.npz",
        "utable.npy",
        "btable.npy",
        "dictionary.txt",
    }
    sentences = [["the", "person", "opens", "door"], ["a", "zebra"]]  # "zebra" -> UNK
    got = enc.encode(sentences)

    row = {w: i for i, w in enumerate(DICTIONARY)}
    for k, sent in enumerate(sentences):
        ids = [row.get(w, row["UNK"]) for w in sent] + [row["<eos>"]]
        u = _theano_gru(utable[ids].astype(np.float64), uni, "encoder")
        fwd = _theano_gru(btable[ids].astype(np.float64), bi, "encoder")
        bwd = _theano_gru(btable[ids][::-1].astype(np.float64), bi, "encoder_r")
        b = np.concatenate([fwd, bwd])
        want = np.concatenate([u / np.linalg.norm(u), b / np.linalg.norm(b)])
        np.testing.assert_allclose(got[k], want, rtol=1e-4, atol=1e-5)

    # a padded batch gives the same vectors as one sentence at a time
    np.testing.assert_allclose(enc.encode(sentences[1:]), got[1:], atol=1e-6)
    # keeping only the dataset's vocabulary gives the same vectors
    small, _ = load_theano_skipthoughts(d, mode="uni", vocab=["person", "door", "the", "opens"])
    assert small.words == [*SPECIALS, "the", "person", "opens", "door"]
    np.testing.assert_allclose(small.encode(sentences[:1])[0], got[0, :UNI], atol=1e-5)


def test_loader_errors_name_the_file(release) -> None:
    d, uni, *_ = release
    bad = dict(uni)
    bad["encoder_Ux"] = np.zeros((UNI + 1, UNI), dtype=np.float32)
    np.savez(d / "uni_skip.npz", **bad)
    with pytest.raises(
        ValueError, match=r"uni_skip\.npz: encoder_Ux has shape \(8, 7\), expected \(7, 7\)"
    ):
        load_theano_skipthoughts(d, mode="uni")
    (d / "btable.npy").unlink()
    with pytest.raises(FileNotFoundError, match="btable.npy"):
        load_theano_skipthoughts(d, mode="bi")
    with pytest.raises(FileNotFoundError, match="uni_skip.npz"):
        load_theano_skipthoughts(d / "nowhere")


def _tiny_corpus() -> list[list[list[str]]]:
    """Videos whose ordered queries follow a script, so neighbours are predictable."""
    script = [
        ["a", "person", "opens", "the", "door"],
        ["the", "person", "walks", "in"],
        ["the", "person", "sits", "on", "a", "chair"],
        ["then", "reads", "a", "book"],
    ]
    other = [["someone", "cooks", "food"], ["they", "eat", "it"], ["then", "wash", "dishes"]]
    return [script if i % 2 == 0 else other for i in range(12)]



def test_training_lowers_the_loss_and_resumes(tmp_path: Path, one_thread: None) -> None:
    docs = _tiny_corpus()
    cfg = SkipThoughtConfig(
        mode="combine", word_dim=8, uni_dim=16, bi_dim=8, epochs=3, batch_size=8, lr=1e-2
    )
    vectors = KeyedVectors(vector_size=8)
    vectors.add_vectors(["person", "door"], np.ones((2, 8), dtype=np.float32))
    enc, rec = train_skipthought(
        docs,
        cfg,
        checkpoint_dir=tmp_path,
        init_vectors=vectors,
        init_vectors_id="v1",
        progress=False,
        device="cpu",
    )
    assert (
        rec["resumed_from_epoch"] == 0 and len(rec["losses"]) == 3 and rec["init_table_rows"] == 2
    )
    assert Path(rec["checkpoint"]).is_file()
    # a longer run with the same settings resumes from the checkpoint instead of restarting
    more = SkipThoughtConfig(**{**cfg.__dict__, "epochs": 8})
    enc2, rec2 = train_skipthought(
        docs,
        more,
        checkpoint_dir=tmp_path,
        init_vectors=vectors,
        init_vectors_id="v1",
        progress=False,
        device="cpu",
    )
    assert rec2["run_id"] == rec["run_id"] and rec2["resumed_from_epoch"] == 3
    losses = rec2["losses"]
    assert len(losses) == 8 and losses[:3] == rec["losses"]
    assert losses[-1] < 0.6 * losses[0], losses

    vecs = enc2.encode([["a", "person", "opens", "the", "door"], ["someone", "cooks", "food"]])
    assert vecs.shape == (2, 16 + 16) and np.isfinite(vecs).all()
    loaded, info = load_checkpoint(rec2["checkpoint"])
    assert info["epochs_trained"] == 8
    np.testing.assert_allclose(loaded.encode([["someone", "cooks", "food"]])[0], vecs[1], atol=1e-6)


def test_training_needs_neighbours(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no document has two or more sentences"):
        train_skipthought(
            [[["one", "query"]]], SkipThoughtConfig(), checkpoint_dir=tmp_path, progress=False
        )


def test_vocabulary_expansion_maps_new_words() -> None:
    torch.manual_seed(0)
    words = [*SPECIALS] + [f"w{i}" for i in range(20)]
    enc = SkipThoughtEncoder(words, mode="uni", word_dim=4, uni_dim=6)
    rng = np.random.default_rng(0)
    true_map = rng.standard_normal((3, 4))
    g = {w: rng.standard_normal(3) for w in words[3:] + ["new1", "new2"]}
    with torch.no_grad():  # make the table an exact linear image of the word vectors
        for w in words[3:]:
            enc.uni.embed.weight[enc.index[w]] = torch.tensor(g[w] @ true_map, dtype=torch.float32)
    kv = KeyedVectors(vector_size=3)
    kv.add_vectors(list(g), np.stack(list(g.values())).astype(np.float32))
    info = enc.expand_vocabulary(kv, ["new1", "new2", "w0", "absent"])
    assert info["added_words"] == 2 and info["fit_words"] == 20
    row = enc.uni.embed.weight[enc.index["new2"]].detach().numpy()
    np.testing.assert_allclose(row, g["new2"] @ true_map, atol=1e-4)
    assert enc.encode([["new1", "absent"]]).shape == (1, 6)


def test_presets_and_unknown_keys() -> None:
    assert build_skipthought_config("paper").sentence_dim == 4800
    assert build_skipthought_config("demo", mode="uni").sentence_dim == 256
    with pytest.raises(ValueError, match="unknown skip-thought config keys"):
        build_skipthought_config("demo", hidden=3)
    with pytest.raises(ValueError, match="mode 'tri'"):
        SkipThoughtConfig(mode="tri")


def test_interrupted_training_resumes_to_the_same_result(
    tmp_path: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = _tiny_corpus()
    cfg = SkipThoughtConfig(mode="uni", word_dim=8, uni_dim=8, epochs=3, batch_size=8, lr=1e-2)
    _, straight = train_skipthought(
        docs, cfg, checkpoint_dir=tmp_path / "a", progress=False, device="cpu"
    )

    calls = {"n": 0}
    real_step = torch.optim.Adam.step

    def crash_in_epoch_two(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 8:  # 6 batches per epoch: the 2nd batch of epoch 2
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_skipthought(docs, cfg, checkpoint_dir=tmp_path / "b", progress=False, device="cpu")
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "b").iterdir()] == [Path(straight["checkpoint"]).name]
    _, resumed = train_skipthought(
        docs, cfg, checkpoint_dir=tmp_path / "b", progress=False, device="cpu"
    )
    assert resumed["resumed_from_epoch"] == 1
    np.testing.assert_allclose(resumed["losses"], straight["losses"], rtol=1e-5)
