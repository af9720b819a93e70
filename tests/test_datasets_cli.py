"""``mktn data stats`` through the dispatcher ``pipeline.cli.main``: JSON, table, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main


def test_stats_json_charades_train(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = shared_data / "charades-sta" / "charades_sta_train.txt"
    rc = main(["data", "stats", "--format", "charades-sta", "--annotations", str(path), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "charades-sta"
    assert out["pairs"] == {"read": 12408, "kept": 12404, "rejected": 4}
    assert out["videos"] == {"read": 5338, "kept": 5336}
    assert out["fixups"] == {"end_past_duration": 1805}
    assert out["rejections"] == {"end_before_start": 4}
    assert out["splits"] == {"train": {"pairs": 12404, "videos": 5336}}
    assert out["durations"] == [str(shared_data / "charades-sta" / "Charades_v1_train.csv")]
    broken = [i for i in out["issues"] if i["kind"] == "rejection"]
    assert [i["video_id"] for i in broken] == ["LEOL6", "IOL8Q", "AKKWU", "AKKWU"]
    assert broken[0]["where"] == f"{path}:8252"
    # fix-up issues are capped at --max-issues (20) per reason, the total is still given
    assert out["issues_listed"] == 24 and out["issues_total"] == 1809


def test_stats_swap_and_several_files_table(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = shared_data / "activitynet-captions"
    rc = main(
        ["data", "stats", "-a", str(d / "val_1.json"), str(d / "val_2.json"), "--inverted", "swap"]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "format     activitynet" in text  # sniffed
    assert "split val_1" in text and "17505" in text and "split val_2" in text
    rc = main(
        ["data", "stats", "-a", f"val={d / 'val_1.json'}", f"test={d / 'val_2.json'}", "--json"]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["splits"] == {
        "val": {"pairs": 17505, "videos": 4917},
        "test": {"pairs": 17031, "videos": 4885},
    }
    assert list(out["splits"]) == ["val", "test"]
    assert "end_past_duration" in text and "rejections (dropped): 0" in text


def test_stats_explicit_durations_and_max_issues(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = shared_data / "charades-sta"
    argv = ["data", "stats", "-f", "charades-sta", "-a", str(d / "charades_sta_test.txt")]
    rc = main(
        [*argv, "--durations", str(d / "Charades_v1_test.csv"), "--json", "--max-issues", "0"]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pairs"]["kept"] == 3720 and out["fixups"] == {"end_past_duration": 562}
    assert out["issues"] == [] and out["issues_total"] == 562


@pytest.mark.parametrize(
    ("content", "fmt", "message"),
    [
        (None, "jsonl", "does not exist"),
        ("{not json", "activitynet", "not valid JSON"),
        ("not an annotation\n", "jsonl", "no entry could be parsed"),
        ("hello world\n", "auto", "cannot tell the annotation format"),
    ],
)
def test_stats_bad_file_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, fmt: str, message: str
) -> None:
    p = tmp_path / "train.json"
    if content is not None:
        p.write_text(content)
    rc = main(["data", "stats", "--format", fmt, "--annotations", str(p), "--json"])
    assert rc == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err and str(p) in captured.err


def test_stats_unknown_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["data", "stats", "--format", "didemo", "--annotations", "x.json"])
    assert info.value.code == 2
    assert "invalid choice: 'didemo'" in capsys.readouterr().err


def test_data_formats_lists_formats_and_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "formats"]) == 0
    out = capsys.readouterr().out
    for word in (
        "charades-sta",
        "activitynet",
        "tacos",
        "jsonl",
        "end_past_duration",
        "unknown_video",
    ):
        assert word in out
    assert main(["data"]) == 2
