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


# --- a full disk and a read-only store location (issue 13 item 8) --------------------------------


@pytest.fixture(scope="module")
def two_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_video import make_video

    d = tmp_path_factory.mktemp("videos")
    make_video(d / "a.mp4", n=16, fps=8)
    make_video(d / "b.mp4", n=16, fps=8)
    return d


def _one_line(err: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err


def test_disk_full_while_writing_the_normalisation_says_so_and_the_rerun_finishes(
    two_videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from zarr.core.attributes import Attributes

    from pipeline.extract import ExtractionConfig
    from storage.features import NORMALIZATION_ATTR, FeatureStore

    store = tmp_path / "s.zarr"
    real_update = Attributes.update

    def full_disk(self: Attributes, *args: object, **kwargs: object) -> None:
        if args and isinstance(args[0], dict) and NORMALIZATION_ATTR in args[0]:
            raise OSError(errno.ENOSPC, "No space left on device", str(store / "features" / "zarr.json"))
        real_update(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Attributes, "update", full_disk)
    argv = ["extract", "--videos", str(two_videos), "--store", str(store), "--no-progress"]
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2 and "2 done" in out
    _one_line(err)
    assert err.startswith("mktn extract: error: disk full while writing the normalisation statistics to "
                          f"the feature store {str(store)!r}; free space"), err
    assert "the rerun skips them and only writes the statistics" in err
    group = FeatureStore(store).extractor("default", ExtractionConfig().resolved_extractor_id(), create=False)
    assert group.list_videos() == ["a", "b"] and group.normalization() is None

    monkeypatch.setattr(Attributes, "update", real_update)
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0 and "0 done" in out and "2 skipped" in out and "normalisation statistics over 2 videos" in out
    reopened = FeatureStore(store).extractor("default", ExtractionConfig().resolved_extractor_id(), create=False)
    assert reopened.normalization() is not None


def _make_read_only(monkeypatch: pytest.MonkeyPatch, ro: Path) -> None:
    """``ro`` and everything under it refuse writes: chmod 0o500, or (root ignores permissions)
    the calls a write goes through raise ``PermissionError`` as the kernel would."""
    import errno
    import os

    if os.geteuid() != 0:
        for p in [ro, *ro.rglob("*")]:
            if p.is_dir():
                p.chmod(0o500)
        return
    import zarr.storage._local as zlocal

    def under(p: object) -> bool:
        return os.path.abspath(os.fspath(p)).startswith(str(ro))  # type: ignore[arg-type]

    def denied(p: object) -> PermissionError:
        return PermissionError(errno.EACCES, "Permission denied", os.fspath(p))  # type: ignore[arg-type]

    real_mkdir, real_put, real_open = Path.mkdir, zlocal._put, os.open

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if under(self) and not self.exists():
            raise denied(self)
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    def put(path: Path, *args: object, **kwargs: object) -> int:
        if under(path):
            raise denied(path)
        return real_put(path, *args, **kwargs)  # type: ignore[arg-type]

    def os_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise denied(path)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(zlocal, "_put", put)
    monkeypatch.setattr(os, "open", os_open)


def test_a_read_only_store_location_is_one_line(
    two_videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    existing = ro / "old.zarr"
    assert main(["extract", "--videos", str(two_videos / "a.mp4"), "--store", str(existing),
                 "--no-progress"]) == 0
    capsys.readouterr()
    annotations = tmp_path / "train.jsonl"
    annotations.write_text('{"qid": "q1", "query": "a person opens a door", "vid": "a", '
                           '"duration": 2.0, "relevant_windows": [[0.0, 1.0]]}\n', encoding="utf-8")
    _make_read_only(monkeypatch, ro)
    try:
        # a new store in a read-only folder; an existing store that became read-only
        for store, extra in [(ro / "new.zarr", []), (existing, ["--force"])]:
            rc = main(["extract", "--videos", str(two_videos), "--store", str(store), "--no-progress", *extra])
            out, err = capsys.readouterr()
            assert rc == 2, (out, err)
            _one_line(err)
            assert err.startswith(f"mktn extract: error: cannot write the feature store {str(store)!r}: "
                                  "permission denied"), err
            assert "choose a writable location with --store" in err
        for store in (ro / "q.zarr", existing):
            rc = main(["embed", "-a", f"train={annotations}", "--store", str(store), "--no-progress"])
            err = capsys.readouterr().err
            assert rc == 2
            _one_line(err)
            assert err.startswith(f"mktn embed: error: cannot write the query store {str(store)!r}: "
                                  "permission denied"), err
    finally:
        monkeypatch.undo()
        for p in [ro, *ro.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
    assert sorted(p.name for p in ro.iterdir()) == ["old.zarr"]
    assert not list(existing.rglob(".write-probe*")) and not list(existing.rglob("*.writing"))
