"""The one parser of ``--annotations [SPLIT=]PATH`` values and the commands and flows that call it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.datasets import (
    AnnotationFileNotFoundError,
    DatasetError,
    parse_split_arg,
    parse_split_args,
)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    for name in ("train.jsonl", "val.jsonl", "test.jsonl"):
        (tmp_path / name).write_text("")
    return tmp_path


def test_split_and_bare_path(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_split_arg(f"dev={files}/val.jsonl") == ("dev", files / "val.jsonl")
    assert parse_split_arg(str(files / "val.jsonl")) == (None, files / "val.jsonl")
    assert parse_split_arg(f"={files}/val.jsonl") == (None, files / "val.jsonl")
    # an "=" inside the path (a "/" before it) is part of the path
    (files / "lr=0.1").mkdir()
    (files / "lr=0.1" / "a.jsonl").write_text("")
    assert parse_split_arg(f"{files}/lr=0.1/a.jsonl") == (None, files / "lr=0.1" / "a.jsonl")
    assert parse_split_arg(f"test={files}/lr=0.1/a.jsonl") == ("test", files / "lr=0.1" / "a.jsonl")
    # a file whose name holds "=" and exists as written is a bare path
    monkeypatch.chdir(files)
    Path("x=y.jsonl").write_text("")
    assert parse_split_arg("x=y.jsonl") == (None, Path("x=y.jsonl"))


def test_missing_file_or_directory_is_one_line(files: Path) -> None:
    with pytest.raises(AnnotationFileNotFoundError) as info:
        parse_split_arg(f"dev={files}/nope.jsonl")
    message = str(info.value)
    assert "\n" not in message and f"{files}/nope.jsonl" in message and "does not exist" in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    with pytest.raises(AnnotationFileNotFoundError, match="is a directory; name the annotation file"):
        parse_split_arg(str(files))
    assert parse_split_arg(str(files), allow_dir=True) == (None, files)
    with pytest.raises(AnnotationFileNotFoundError, match="file or directory .* does not exist"):
        parse_split_arg(str(files / "nope"), allow_dir=True)


def test_many_values(files: Path) -> None:
    got = parse_split_args([f"dev={files}/val.jsonl", str(files / "test.jsonl")])
    assert got == {"dev": files / "val.jsonl", "test": files / "test.jsonl"}
    assert parse_split_args([str(files)], expand_dirs=True) == {
        s: files / f"{s}.jsonl" for s in ("train", "val", "test")}
    assert parse_split_args([str(files / "val.jsonl")] * 2) == {"val": files / "val.jsonl"}
    (files / "val.txt").write_text("")
    with pytest.raises(DatasetError, match=r"two annotation files for split 'val'.*SPLIT=PATH"):
        parse_split_args([str(files / "val.jsonl"), str(files / "val.txt")])
    with pytest.raises(AnnotationFileNotFoundError, match="holds no .jsonl"):
        (files / "empty").mkdir()
        parse_split_args([str(files / "empty")], expand_dirs=True)


def test_every_caller_reads_the_same_syntax(files: Path) -> None:
    from flows.dataset import parse_annotation_args
    from model.loader import annotation_paths
    from pipeline.importers import annotation_durations

    values = [f"dev={files}/val.jsonl", str(files / "test.jsonl")]
    assert annotation_paths(values) == {"dev": files / "val.jsonl", "test": files / "test.jsonl"}
    assert parse_annotation_args(values) == {"dev": str(files / "val.jsonl"), "test": str(files / "test.jsonl")}
    for call in (annotation_paths, parse_annotation_args, annotation_durations):
        with pytest.raises(AnnotationFileNotFoundError, match="nope.jsonl"):
            call([f"dev={files}/nope.jsonl"])


@pytest.mark.parametrize("command", [["data", "stats"], ["embed", "--store", "s.zarr"]])
def test_commands_name_a_missing_file_in_one_line(files: Path, capsys: pytest.CaptureFixture[str],
                                                  command: list[str]) -> None:
    from pipeline.cli import main

    missing = files / "nope.jsonl"
    rc = main([*command, "--annotations", f"val={missing}", str(files / "train.jsonl")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and str(missing) in err and "does not exist" in err
