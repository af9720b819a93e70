"""Issue 13, item 8: one line, exit 2, and nothing created, for a store that does not exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main


def test_train_on_missing_stores_says_so_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.jsonl").write_text("{}\n", encoding="utf-8")
    (tmp_path / "f.zarr").mkdir()
    for features, queries, want in [
        ("nope.zarr", "typo.zarr", "feature store 'nope.zarr' does not exist"),
        ("f.zarr", "typo.zarr", "query store 'typo.zarr' does not exist"),
    ]:
        rc = main(["train", "--features", features, "--queries", queries,
                   "--annotations", "train=a.jsonl", "--out", "run"])
        err = capsys.readouterr().err
        assert rc == 2 and want in err and "mktn " in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "f.zarr"]
    assert not any((tmp_path / "f.zarr").iterdir())


def test_a_video_name_the_store_cannot_hold_says_rename_the_file() -> None:
    from pipeline.extract import video_id_for

    with pytest.raises(ValueError, match=r"rename the file \(its name becomes the video id\)"):
        video_id_for("/data/videos/clip #3?.mp4")
    assert video_id_for("/data/videos/v_ZNVhz7ctTq0.mp4") == "v_ZNVhz7ctTq0"
