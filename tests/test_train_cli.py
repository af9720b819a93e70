"""`mktn train`, `evaluate`, `ablate`, `sweep-alignment` end to end on real Zarr stores."""

from __future__ import annotations

import json

import pytest
import torch
from model_fixtures import planted_data, write_stores

from model.ablation import CONTROL_ROWS
from pipeline.cli import main

TINY = ["--set", "model.num_clips=16", "--set", "model.d_model=32", "--set", "model.num_heads=2",
        "--batch-videos", "3", "--no-progress", "--threads", "1"]


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    data = planted_data(num_videos=20, queries_per_video=2, clips=16, dim=12, sentence_dim=16)
    root = tmp_path_factory.mktemp("stores")
    return write_stores(data, root, skip=("vid000",))  # one video's extraction "failed"


def _data_args(stores):
    features, queries, ann = stores
    return ["--features", str(features), "--queries", str(queries), "--annotations", str(ann)]


def test_train_then_evaluate(stores, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *_data_args(stores), *TINY, "--epochs", "2", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epochs_run"] == 2 and result["skipped"] == {"video features missing": 1}
    assert (out / "best.pt").is_file() and (out / "metrics_test.json").is_file()
    ckpt = torch.load(out / "best.pt", weights_only=True)
    assert ckpt["meta"]["features"]["extractor_id"] == "tiny3d@test" and len(ckpt["norm"]["frame_mean"]) == 12
    assert main(["train", *_data_args(stores), *TINY, "--epochs", "2", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), *_data_args(stores), "--no-progress",
                 "--out", str(tmp_path / "ev"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    controls = metrics.pop("controls")
    assert set(controls) == {"prior", "order_prior", "video_swapped", "order_shuffled"}
    assert metrics.pop("controls_summary").startswith("Of MKTN's R1@0.5")
    assert metrics == result["test"] and result["controls"] == controls
    assert (tmp_path / "ev" / "predictions_test.jsonl").is_file()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), *_data_args(stores), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_ablate_and_sweep(stores, tmp_path, capsys):
    out = tmp_path / "abl"
    args = ["ablate", *_data_args(stores), *TINY, "--epochs", "1", "--out", str(out), "--variants", "w/o CSM"]
    assert main(args) == 0
    table = (out / "ablation.md").read_text()
    assert "| w/o CSM |" in table and "| Full |" in table and "Prior only" in table
    summary = json.loads((out / "ablation.json").read_text())
    assert set(summary["rows"]) == {"Prior only (no video, no query)", "w/o CSM", "Full",
                                    *CONTROL_ROWS.values()}
    assert set(summary["controls"]["variants"]["Full"]) == {"video_swapped", "order_shuffled"}
    assert "points need the video" in table
    mtime = (out / "Full" / "seed0" / "result.json").stat().st_mtime_ns
    assert main(args) == 0  # a second call reuses the finished runs
    assert (out / "Full" / "seed0" / "result.json").stat().st_mtime_ns == mtime
    capsys.readouterr()
    sw = tmp_path / "sweep"
    assert main(["sweep-alignment", *_data_args(stores), *TINY, "--epochs", "1", "--out", str(sw),
                 "--strengths", "0", "2"]) == 0
    points = json.loads((sw / "sweep.json").read_text())["points"]
    assert [p["strength"] for p in points] == [0.0, 2.0]
    assert all(0.0 <= p["alignment"]["mutual_knn"] <= 1.0 for p in points)
    assert (sw / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_alignment_redundancy_grid_builds_its_data_and_resumes(tmp_path, capsys):
    """``--redundancy``: one synthetic video set, sentences per level, the grid with the best
    strength per level; a second call reuses every finished run."""
    out = tmp_path / "grid"
    args = ["sweep-alignment", "--out", str(out), "--redundancy", "1", "0.5", "--strengths", "0", "1",
            "--seeds", "0", "--synth-size", "quick", "--synth-videos", "20", "--epochs", "1", *TINY]
    assert main(args) == 0
    grid = json.loads((out / "grid.json").read_text())
    assert [lv["redundancy"] for lv in grid["levels"]] == [1.0, 0.5]
    for lv in grid["levels"]:
        assert [row["strength"] for row in lv["rows"]] == [0.0, 1.0]
        assert lv["best_strength"] in (0.0, 1.0)
        assert all(0.0 <= row["mutual_knn"] <= 1.0 and "swapped_R1@0.5" in row for row in lv["rows"])
    assert grid["data"]["1"]["visible_word_share"] == 1.0
    assert 0.4 <= grid["data"]["0.5"]["visible_word_share"] <= 0.6
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "best strength at redundancy 0.5" in capsys.readouterr().out
    result = out / "redundancy-0.5" / "seed-0" / "strength-1" / "result.json"
    mtime = result.stat().st_mtime_ns
    assert main(args) == 0
    assert result.stat().st_mtime_ns == mtime
    bad = main(["sweep-alignment", "--out", str(tmp_path / "x"), "--redundancy", "0"])
    assert bad == 2 and "(0, 1]" in capsys.readouterr().err
    assert main(["sweep-alignment", "--out", str(tmp_path / "y")]) == 2
    assert "--redundancy" in capsys.readouterr().err
    assert main(["sweep-alignment", "--out", str(tmp_path / "z"), "--redundancy", "1",
                 "--features", "f.zarr", "--queries", "q.zarr"]) == 2
    assert "builds its own synthetic data; drop --features, --queries" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()  # refused before anything was written


def test_grid_summary_takes_seed_spread_and_picks_the_best_strength():
    from model.sweep import grid_markdown, summarise_grid

    def sweep(vals):
        return {"points": [{"strength": s, "metrics": {"R1@0.5": v, "R1@0.7": v / 2, "mIoU": v},
                            "alignment": {"mutual_knn": s / 10, "retrieval_r1": 0.1},
                            "controls": {"video_swapped": {"R1@0.5": 5.0}}} for s, v in vals]}

    grid = summarise_grid({1.0: {0: sweep([(0, 30), (1, 40)]), 1: sweep([(0, 34), (1, 44)])},
                           0.25: {0: sweep([(0, 20), (1, 10)]), 1: sweep([(0, 22), (1, 12)])}})
    hi, lo = grid["levels"]
    assert hi["redundancy"] == 1.0 and hi["best_strength"] == 1 and hi["margin_over_next"] == 10.0
    assert lo["best_strength"] == 0 and lo["best_R1@0.5"] == 21.0
    row = hi["rows"][1]
    assert row["R1@0.5"] == 42.0 and abs(row["R1@0.5_std"] - 2.8284271) < 1e-6 and row["seeds"] == 2
    assert "**1**" in grid_markdown(grid)
