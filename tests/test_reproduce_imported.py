"""`mktn reproduce --features-from FORMAT:PATH`: the whole chain on published features (no videos).

A tiny Moment-DETR-style npz-dir (one ``<vid>.npz`` with ``features`` per video) and a JSONL
annotation set the test writes; the run imports, embeds, trains (tiny model, 2 epochs),
evaluates and reports, then a rerun reuses every step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.cli import main

pytestmark = pytest.mark.slow

TINY = ["--set", "model.num_clips=16", "--set", "model.d_model=32", "--set", "model.num_heads=2",
        "--epochs", "2", "--no-controls", "--quick"]


def _published(tmp_path: Path) -> tuple[Path, list[str], list[str]]:
    """An npz-dir of 8 videos (one annotated video absent) and its train/val/test JSONL files."""
    from model_fixtures import planted_data, write_stores

    data = planted_data(num_videos=8, queries_per_video=2, clips=12, dim=12, sentence_dim=16)
    _, _, ann = write_stores(data, tmp_path / "made")
    src = tmp_path / "published" / "features"
    src.mkdir(parents=True)
    for vid, v in sorted(data.videos.items())[1:]:  # the first train video is not published
        np.savez(src / f"{vid}.npz", features=v.frames)
    specs = [f"{s}={ann / f'{s}.jsonl'}" for s in ("train", "val", "test")]
    return src, specs, sorted(data.videos)


def _count_test_evaluations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each evaluation pass of a checkpoint on the test split (``train()``'s and
    ``evaluate_split``'s; the controls' extra passes are not counted): the caller's module each."""
    import model.evaluate
    import model.train

    calls: list[str] = []
    for module in (model.train, model.evaluate):
        real = module.evaluate_model

        def counting(*args: Any, _real: Any = real, _name: str = module.__name__, **kwargs: Any) -> Any:
            records = args[2] if len(args) > 2 else kwargs["records"]
            if records and all(r.split == "test" for r in records):
                calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, "evaluate_model", counting)
    return calls


def test_reproduce_on_imported_npz_features_then_cached_rerun(
    tmp_path: Path, capsys, one_thread, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, specs, videos = _published(tmp_path)
    work = tmp_path / "work"
    argv = ["reproduce", "--work", str(work), "--features-from", f"npz-dir:{src}",
            "--annotations", *specs, "--json", *TINY]
    evaluations = _count_test_evaluations(monkeypatch)
    assert main(argv) == 0, capsys.readouterr().err[-3000:]
    cold = json.loads(capsys.readouterr().out)
    # the test split is evaluated once, by train(); the evaluate step reuses that evaluation
    assert evaluations == ["model.train"], evaluations
    run_dir = Path(cold["training"]["run_dir"])
    assert cold["evaluation"]["reused_from"] == str(run_dir / "metrics_test.json")
    reused = json.loads((run_dir / "eval-published" / "metrics_test.json").read_text())
    assert reused["metrics"] == cold["metrics"] == json.loads((run_dir / "result.json").read_text())["test"]
    # the report's history is result.json's, the same per-epoch means as log.jsonl's steps
    from flows.report import history_from_log, run_history

    rows, from_log = run_history(run_dir), history_from_log(run_dir / "log.jsonl")
    assert [r["epoch"] for r in rows] == [1.0, 2.0] and "loss/total" in rows[0] and "val_R1@0.5" in rows[0]
    for row, logged in zip(rows, from_log, strict=True):
        assert {k: v for k, v in row.items() if k.startswith("loss")} == pytest.approx(
            {k: v for k, v in logged.items() if k in row and k.startswith("loss")}, abs=1e-5)
    # the dataset is named after the folder holding the features; the group after the source
    assert cold["dataset"] == "published"
    ext = cold["extraction"]
    assert ext["imported"] and ext["extractor_id"].startswith("npz-dir@")
    assert ext["counts"]["done"] == len(videos) - 1 and list(ext["failed"]) == [videos[0]]
    assert cold["embedding"]["embedded"] and cold["training"]["trained"]
    assert cold["metrics"]["num_queries"] > 0 and 0.0 <= cold["metrics"]["mAP"] <= 100.0
    text = Path(cold["report"]).read_text()
    assert f"npz-dir:{src}" in text and "could not be imported" in text and videos[0] in text
    assert "| mIoU | mAP@0.5 | mAP@0.75 | mAP |" in text and "![loss curves](loss_curves.png)" in text
    page = Path(cold["report_html"]).read_text()  # stored features only: timelines, no players
    assert "<video" not in page and 'class="span pred rank-1"' in page
    assert "No player: video file not available (this report was made from stored features)" in page

    from storage.features import FeatureStore

    group = FeatureStore(work / "stores" / "features.zarr").extractor("published", ext["extractor_id"],
                                                                    create=False)
    assert group.list_videos() == videos[1:] and group.attrs["num_patches"] == 1

    # nothing changed: nothing imported, embedded or trained again; the same numbers
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["extraction"]["counts"]["cached"] == len(videos) - 1
    assert again["extraction"]["counts"]["done"] == 0
    assert not again["embedding"]["embedded"] and not again["training"]["trained"]
    assert again["metrics"] == cold["metrics"]

    # the store is gone: the cached import is not trusted, the videos are imported again (the same
    # features, so the trained run is still the same one)
    import shutil

    shutil.rmtree(work / "stores" / "features.zarr")
    assert main(argv) == 0
    redone = json.loads(capsys.readouterr().out)
    assert redone["extraction"]["counts"]["done"] == len(videos) - 1
    assert redone["training"]["run_key"] == cold["training"]["run_key"]


def test_reproduce_features_from_bad_arguments(tmp_path: Path, capsys) -> None:
    src, specs, _ = _published(tmp_path)
    work = ["--work", str(tmp_path / "w")]
    assert main(["reproduce", *work, "--features-from", f"npz:{src}", "--annotations", *specs]) == 2
    assert "FORMAT:PATH" in capsys.readouterr().err
    assert main(["reproduce", *work, "--features-from", f"npz-dir:{src}"]) == 2
    assert "needs --annotations" in capsys.readouterr().err
    assert main(["reproduce", *work, "--features-from", f"npz-dir:{src}", "--dataset-videos", str(src),
                 "--annotations", *specs]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["reproduce", *work, "--features-from", f"npz-dir:{tmp_path / 'nope'}",
                 "--annotations", *specs]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["reproduce", *work, "--features-from", f"npz-dir:{src}", "--annotations", *specs,
                 "--backbone", "r3d_18"]) == 2
    assert "--backbone set(s) how videos are extracted" in capsys.readouterr().err
    assert main(["reproduce", *work, "--clip-seconds", "1", "--quick"]) == 2
    assert "apply to --features-from only" in capsys.readouterr().err
