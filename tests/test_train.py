"""The trainer: overfits a tiny batch, deterministic for a seed, resume equals uninterrupted,
non-finite losses skipped then aborting, the train/evaluate CLI on real stores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_fixtures import planted_data

from model.checkpoint import load_checkpoint
from model.config import override, preset
from model.data import NormStats, collate, make_groups, prepare
from model.evaluate import evaluate_checkpoint
from model.losses import build_criterion
from model.train import TrainingAborted, build_training, train

SMALL = ["model.num_clips=16", "model.d_model=32", "model.num_heads=2", "train.batch_videos=3",
         "train.epochs=3", "train.patience=10", "model.head=span"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return planted_data(num_videos=12, queries_per_video=3, clips=16, dim=12, sentence_dim=16)


def test_overfits_a_tiny_batch():
    cfg = override(preset("synthetic"), ["model.num_clips=16", "model.d_model=64", "model.dropout=0", "model.head=span"])
    d = planted_data(num_videos=4, queries_per_video=3, clips=16, dim=12, sentence_dim=16)
    prepared, _ = prepare(d, 16, 32)
    b = collate(prepared, make_groups(prepared, d.records, multi_pair=True, max_queries=16))
    torch.manual_seed(0)
    model, opt, sched = build_training(cfg, {"frame": 12, "patch": 12, "word": 300, "sentence": 16}, 100,
                                       torch.device("cpu"))
    crit = build_criterion(cfg.loss, cfg.model)
    first = None
    for _ in range(60):
        out = model(b, 0.5)
        loss, logs = crit(out, b)
        first = first if first is not None else logs["span"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        out = model(b, 1.0)
    assert logs["span"] < 0.1 * first
    assert bool((out["start_logits"].argmax(1) == b.start_idx).all())
    assert bool((out["end_logits"].argmax(1) == b.end_idx).all())


def _log(path):
    return [json.loads(line) for line in (path / "log.jsonl").read_text().splitlines()]


def test_deterministic_and_resume_equals_uninterrupted(tmp_path, data):
    cfg = override(preset("synthetic"), SMALL)
    seen: list[dict] = []
    full = train(cfg, data, tmp_path / "a", show_progress=False, on_epoch=seen.append)
    again = train(cfg, data, tmp_path / "b", show_progress=False)
    assert full.best_val == again.best_val and full.test == again.test
    assert [r.get("total") for r in _log(tmp_path / "a")] == [r.get("total") for r in _log(tmp_path / "b")]

    class Crash(Exception):
        pass

    def crash(step, logs):
        if step == 5:  # mid-epoch, after the step-4 checkpoint
            raise Crash

    with pytest.raises(Crash):
        train(cfg, data, tmp_path / "c", checkpoint_every=2, on_step=crash, show_progress=False)
    assert load_checkpoint(tmp_path / "c" / "last.pt")["state"]["global_step"] == 4
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, data, tmp_path / "c", show_progress=False)
    after: list[dict] = []
    resumed = train(cfg, data, tmp_path / "c", resume=True, checkpoint_every=2, show_progress=False,
                    on_epoch=after.append)
    assert resumed.best_val == full.best_val and resumed.test == full.test and resumed.steps == full.steps
    # on_epoch: one plain-JSON record per epoch; a resumed run reports the epochs it ran, with the
    # whole history (the interrupted run's epochs too)
    assert [r["epoch"] for r in seen] == [1, 2, 3] and all(r["epochs"] == 3 for r in seen)
    assert json.loads(json.dumps(seen)) == seen and seen[-1]["history"] == full.history
    assert [len(r["history"]) for r in seen] == [1, 2, 3] and seen[-1]["best_epoch"] == full.best_epoch
    assert {r["val"]["R1@0.5"] for r in seen} == {h["val"]["R1@0.5"] for h in full.history}
    assert all(r["train"]["total"] == h["train"]["total"] for r, h in zip(seen, full.history, strict=True))
    first = -(-4 // seen[0]["steps_per_epoch"])  # the epoch the step-4 checkpoint was in (1-based)
    assert [r["epoch"] for r in after] == list(range(first, 4))
    assert after[-1]["history"] == full.history
    assert [r.get("total") for r in _log(tmp_path / "c")] == [r.get("total") for r in _log(tmp_path / "a")]
    # the per-epoch history (loss means, embedding diagnostics) survives the interruption exactly
    assert resumed.history == full.history and len(full.history) == 3
    for h in full.history:
        assert {"ans_kept", "video_cos", "query_cos", "sim_pos", "sim_neg"} <= set(h["diag"])
        assert 0.0 <= h["diag"]["ans_kept"] <= 1.0 and {"span", "rince", "total"} <= set(h["train"])
    epochs = [r for r in _log(tmp_path / "a") if r["kind"] == "epoch"]
    assert [e["diag"] for e in epochs] == [h["diag"] for h in full.history]
    assert json.loads((tmp_path / "a" / "result.json").read_text())["history"] == full.history
    wa = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    wc = load_checkpoint(tmp_path / "c" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    other = override(cfg, ["train.lr=0.001"])
    with pytest.raises(ValueError, match="same preset"):
        train(other, data, tmp_path / "c", resume=True, show_progress=False)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_non_finite_losses_are_skipped_then_abort(tmp_path, data):
    # statistics with a vanishing std overflow the standardised features to inf -> NaN losses
    d = data.dims[0]
    bad = NormStats(np.zeros(d, np.float32), np.full(d, 1e-38, np.float32), np.zeros(d, np.float32),
                    np.ones(d, np.float32))
    broken = type(data)(data.videos, data.queries, data.records, bad)
    cfg = override(preset("synthetic"), SMALL + ["train.max_bad_steps=2"])
    with pytest.raises(TrainingAborted, match="NaN/inf.*train.max_bad_steps=2"):
        train(cfg, broken, tmp_path / "nan", show_progress=False)


def test_evaluate_checkpoint_writes_predictions(tmp_path, data):
    cfg = override(preset("synthetic"), SMALL + ["train.epochs=1"])
    result = train(cfg, data, tmp_path / "run", show_progress=False)
    metrics = evaluate_checkpoint(result.best_checkpoint, data, split="test", out_dir=tmp_path / "ev",
                                  device="cpu")
    assert metrics == result.test
    lines = (tmp_path / "ev" / "predictions_test.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    assert len(recs) == metrics["num_queries"] == len(data.split("test"))
    assert all(1 <= len(r["spans"]) <= 5 and r["scores"] == sorted(r["scores"], reverse=True) for r in recs)
    with pytest.raises(ValueError, match="no records in split 'nope'"):
        evaluate_checkpoint(result.best_checkpoint, data, split="nope")
