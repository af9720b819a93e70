"""The real chain on a tiny synthetic dataset: synth -> extract -> embed -> train -> predict,
and `mktn predict`'s sentence embedding reproduces the query store's exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.cli import main


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
def test_synth_extract_embed_train_predict(tmp_path, monkeypatch, capsys):
    from model.checkpoint import load_checkpoint
    from model.predict import SentenceEmbedder
    from storage.queries import QueryStore

    monkeypatch.setenv("MKTN_CACHE_DIR", str(tmp_path / "cache"))
    synth, store, run = tmp_path / "synth", tmp_path / "store", tmp_path / "run"
    assert main(["synth", "--out", str(synth), "--size", "quick", "--videos", "6", "--no-progress"]) == 0
    assert main(["extract", "--videos", str(synth / "videos"), "--store", str(store), "--dataset", "synthetic",
                 "--threads", "1", "--no-progress"]) == 0
    ann = sorted(str(p) for p in (synth / "annotations").glob("*.jsonl"))
    assert main(["embed", "--annotations", *ann, "--store", str(store), "--dataset", "synthetic"]) == 0
    assert main(["train", "--features", str(store), "--queries", str(store), "--annotations",
                 str(synth / "annotations"), "--out", str(run), "--epochs", "2", "--threads", "1",
                 "--set", "model.d_model=32", "--set", "model.num_heads=2", "--no-progress"]) == 0
    capsys.readouterr()
    test = [json.loads(line) for line in (synth / "annotations" / "test.jsonl").read_text().splitlines()]
    video = synth / "videos" / f"{test[0]['vid']}.mp4"
    plot, page = tmp_path / "pred.png", tmp_path / "pages" / "pred.html"
    assert main(["predict", "--video", str(video), "--query", test[0]["query"], "--query", "a dog barks",
                 "--checkpoint", str(run / "best.pt"), "--plot", str(plot), "--html", str(page),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    text = page.read_text()  # the player (relative path) and one span per predicted span
    assert f'src="../synth/videos/{test[0]["vid"]}.mp4"' in text
    assert text.count('class="span pred') == sum(len(p["spans"]) for p in out["predictions"])
    assert [p["query"] for p in out["predictions"]] == [test[0]["query"], "a dog barks"]
    for p in out["predictions"]:
        assert 1 <= len(p["spans"]) <= 5
        assert all(0.0 <= s <= e <= out["duration"] + 1e-6 for s, e in p["spans"])
    assert abs(out["duration"] - test[0]["duration"]) < 0.2
    assert plot.read_bytes()[:4] == b"\x89PNG"
    # the embedding of a known sentence equals the store's (same tokens, vectors, skip-thought)
    ckpt = load_checkpoint(run / "best.pt")
    emb = SentenceEmbedder(ckpt["meta"]["queries"]["attrs"], ckpt["text"])
    qs = QueryStore(store)
    stored = qs.encoder("synthetic", qs.latest_encoder("synthetic")).read_query(test[0]["qid"])
    mine = emb.embed([test[0]["query"]])[0]
    assert np.allclose(mine.words, stored.words, atol=1e-2)  # the table is float16
    assert np.allclose(mine.sentence, stored.sentence, atol=1e-5)
    assert main(["predict", "--video", str(tmp_path / "missing.mp4"), "--query", "x",
                 "--checkpoint", str(run / "best.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["predict", "--video", str(video), "--query", "x", "--checkpoint", str(run / "best.pt"),
                 "--html", str(tmp_path)]) == 2  # a folder, not a file: said before any work
    assert "is a folder; give a file name" in capsys.readouterr().err
