"""Small annotation files with one bad entry each: the report names the file, line and video,
and every other entry still loads. Whole-file problems raise ``DatasetError``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.datasets import (
    AnnotationFileNotFoundError,
    DatasetError,
    load_annotations,
    load_splits,
)

DURATIONS = {"VIDA": 30.0, "VIDB": 20.0}


def _charades(tmp_path: Path, lines: list[str], name: str = "charades_sta_train.txt") -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("VIDA 1.0 5.0 a person opens a door.", "malformed"),  # no '##'
        ("VIDA 1.0##a person opens a door.", "malformed"),  # missing the end
        ("VIDA one 5.0##a person opens a door.", "malformed"),
        ("VIDA nan 5.0##a person opens a door.", "non_finite_time"),
        ("VIDA 2.0 inf##a person opens a door.", "non_finite_time"),
        ("VIDA -1.0 5.0##a person opens a door.", "negative_time"),
        ("VIDA 1.0 5.0##   ", "empty_sentence"),
        ("NOPE1 1.0 5.0##a person opens a door.", "unknown_video"),
        ("VIDA 5.0 1.0##a person opens a door.", "end_before_start"),
        ("VIDA 5.0 5.0##a person opens a door.", "zero_length"),
        ("VIDB 25.0 28.0##a person opens a door.", "start_past_duration"),
    ],
)
def test_charades_bad_line_is_rejected_with_file_and_line(
    tmp_path: Path, bad_line: str, reason: str
) -> None:
    p = _charades(
        tmp_path,
        ["VIDA 0.0 4.5##a person sits down.", bad_line, "VIDB 2.0 25.0##someone laughs."],
    )
    res = load_annotations("charades-sta", p, durations=DURATIONS)
    rep = res.report
    assert rep.rejections == {reason: 1}
    (issue,) = rep.find(reason)
    assert issue.where == f"{p}:2"
    assert issue.video_id == bad_line.split()[0]
    assert str(p) in str(issue) and ":2" in str(issue)
    # the other lines load; the last one's end (25 s in a 20 s video) is clipped
    assert [(r.video_id, r.start, r.end) for r in res.records] == [
        ("VIDA", 0.0, 4.5),
        ("VIDB", 2.0, 20.0),
    ]
    # a start past the end implies an end past it too: counted, though the line is dropped
    assert rep.fixups == {"end_past_duration": 2 if reason == "start_past_duration" else 1}
    assert (rep.pairs_read, rep.pairs_kept) == (3, 2)
    # query ids count the parsed lines, rejected ones included: dropping a line renumbers nothing
    vidb = 1 if reason == "start_past_duration" else 0
    assert [r.query_id for r in res.records] == ["train.VIDA.0", f"train.VIDB.{vidb}"]


def test_charades_strict_raises_on_malformed_line(tmp_path: Path) -> None:
    p = _charades(tmp_path, ["VIDA 0.0 4.5##a person sits down.", "garbage line"])
    with pytest.raises(DatasetError, match=r"charades_sta_train\.txt:2"):
        load_annotations("charades-sta", p, durations=DURATIONS, strict=True)


def test_wrong_format_raises_naming_the_first_line(tmp_path: Path) -> None:
    p = tmp_path / "train.jsonl"
    p.write_text(
        '{"qid": 1, "query": "x", "vid": "VIDA", "duration": 9, "relevant_windows": [[0, 1]]}\n'
    )
    with pytest.raises(DatasetError, match=r"train\.jsonl:1: .*format"):
        load_annotations("charades-sta", p, durations=DURATIONS)


def test_missing_file_unknown_format_empty_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(AnnotationFileNotFoundError, match="nope.txt") as info:
        load_annotations("charades-sta", missing, durations=DURATIONS)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    with pytest.raises(DatasetError, match=r"unknown annotation format 'didemo'.*charades-sta"):
        load_annotations("didemo", missing)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match="no annotation entries"):
        load_annotations("jsonl", empty)
    with pytest.raises(DatasetError, match="inverted"):
        load_annotations("jsonl", empty, inverted="flip")  # type: ignore[arg-type]


def test_durations_csv_bad_row_names_the_csv_line(tmp_path: Path) -> None:
    csv = tmp_path / "Charades_v1_train.csv"
    csv.write_text("id,subject,length\nVIDA,S1,30.0\nVIDB,S2,n/a\n")
    p = _charades(tmp_path, ["VIDA 0.0 4.5##a person sits.", "VIDB 1.0 2.0##a person stands."])
    res = load_annotations("charades-sta", p)  # finds the CSV beside the file
    assert res.report.durations_sources == [str(csv)]
    (issue,) = res.report.find("bad_duration")
    assert issue.video_id == "VIDB" and f"{csv}:3" in issue.detail
    assert [r.video_id for r in res.records] == ["VIDA"]
    bad_header = tmp_path / "other.csv"
    bad_header.write_text("video,seconds\nVIDA,3\n")
    with pytest.raises(DatasetError, match=r"other\.csv:1: .*length"):
        load_annotations("charades-sta", p, durations=bad_header)


def _anet(tmp_path: Path, data: object, name: str = "val_1.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def test_activitynet_bad_entries(tmp_path: Path) -> None:
    good = {
        "duration": 10.0,
        "timestamps": [[0, 2.5], [2, 10.5]],
        "sentences": [" A man runs.", " He stops."],
    }
    data = {
        "v_good": good,
        "v_mismatch": {"duration": 5.0, "timestamps": [[0, 1]], "sentences": ["a", "b"]},
        "v_nan": {"duration": 5.0, "timestamps": [[float("nan"), 1]], "sentences": ["a dog."]},
        "v_neg": {"duration": 5.0, "timestamps": [[-1, 1]], "sentences": ["a dog."]},
        "v_shape": {
            "duration": 5.0,
            "timestamps": [[1, 2, 3], [0, 1]],
            "sentences": ["x", "a cat."],
        },
        "v_nodur": {"timestamps": [[0, 1]], "sentences": ["a cat."]},
        "v_list": [1, 2],
        "v_empty": {"duration": 5.0, "timestamps": [[0, 1]], "sentences": [" "]},
    }
    p = _anet(tmp_path, data)
    res = load_annotations("activitynet", p)
    rep = res.report
    assert rep.rejections == {
        "malformed": 2 + 1 + 1,
        "non_finite_time": 1,
        "negative_time": 1,
        "bad_duration": 1,
        "empty_sentence": 1,
    }
    wheres = {i.where for i in rep.find("malformed")}
    assert wheres == {f"{p}#v_mismatch[0]", f"{p}#v_mismatch[1]", f"{p}#v_shape[0]", f"{p}#v_list"}
    assert rep.find("non_finite_time")[0].where == f"{p}#v_nan[0]"
    assert [(r.query_id, r.sentence) for r in res.records] == [
        ("val_1.v_good.0", "A man runs."),
        ("val_1.v_good.1", "He stops."),
        ("val_1.v_shape.1", "a cat."),
    ]
    assert res.records[1].end == 10.0 and rep.fixups == {"end_past_duration": 1}
    assert rep.pairs_read == rep.pairs_kept + rep.rejected == 11


def test_activitynet_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "train.json"
    p.write_text('{"v_a": {"duration": 3.0,\n "timestamps": [[0, 1]] "sentences": ["x"]}}')
    with pytest.raises(DatasetError, match=r"train\.json:2:\d+: not valid JSON"):
        load_annotations("activitynet", p)
    p.write_text("[1, 2]")
    with pytest.raises(DatasetError, match="top level is a JSON list"):
        load_annotations("activitynet", p)


def test_tacos_missing_fps_is_malformed_per_entry(tmp_path: Path) -> None:
    data = {
        "s1.avi": {
            "timestamps": [[0, 30], [30, 90]],
            "sentences": ["cut.", "wash."],
            "fps": 30.0,
            "num_frames": 60,
        },
        "s2.avi": {"timestamps": [[0, 30]], "sentences": ["peel."], "num_frames": 300},
    }
    p = _anet(tmp_path, data, "test.json")
    res = load_annotations("tacos", p)
    assert res.report.rejections == {"malformed": 1}
    assert res.report.find("malformed")[0].where == f"{p}#s2.avi[0]"
    assert "'fps'" in res.report.find("malformed")[0].detail
    assert [(r.start, r.end, r.duration) for r in res.records] == [(0.0, 1.0, 2.0), (1.0, 2.0, 2.0)]
    assert res.records[1].extra == {
        "fps": 30.0,
        "start_frame": 30.0,
        "end_frame": 90.0,
        "num_frames": 60,
    }
    assert res.report.fixups == {"end_past_duration": 1}


def _jsonl(
    tmp_path: Path, rows: list[object | str], name: str = "val.jsonl", newline: str = "\n"
) -> Path:
    p = tmp_path / name
    p.write_text(
        newline.join(r if isinstance(r, str) else json.dumps(r) for r in rows)
    )  # no trailing newline
    return p


def test_jsonl_bad_lines_windows_and_split(tmp_path: Path) -> None:
    rows: list[object | str] = [
        {
            "qid": 1,
            "query": "a ball rolls.",
            "vid": "v1",
            "duration": 10,
            "relevant_windows": [[1, 3]],
        },
        '{"qid": 2, "query": "broken", ',
        {"qid": 3, "vid": "v1", "duration": 10, "relevant_windows": [[1, 3]]},
        {
            "qid": 4,
            "query": "two windows.",
            "vid": "v1",
            "duration": 10,
            "relevant_windows": [[2, 4], [6, 12], [9, 8]],
            "relevant_clip_ids": [1, 2],
        },
        {"qid": 5, "query": "no window.", "vid": "v2", "duration": 8, "relevant_windows": []},
        {"qid": 1, "query": "again.", "vid": "v2", "duration": 8, "relevant_windows": [[0, 1]]},
        {"qid": 6, "query": "escape.", "vid": "../x", "duration": 8, "relevant_windows": [[0, 1]]},
        {
            "qid": 7,
            "query": "in train.",
            "vid": "v2",
            "duration": 8,
            "relevant_windows": [[0, 2]],
            "split": "train",
        },
        {"query": "no qid.", "vid": "v2", "duration": 8, "relevant_windows": [[3, 5]]},
    ]
    p = _jsonl(tmp_path, rows, newline="\r\n")
    res = load_annotations("jsonl", p)
    rep = res.report
    assert rep.rejections == {
        "malformed": 2,
        "no_window": 1,
        "duplicate_query_id": 1,
        "bad_video_id": 1,
    }
    assert [i.where for i in rep.find("malformed")] == [f"{p}:2", f"{p}:3"]
    assert "'query'" in rep.find("malformed")[1].detail
    assert rep.find("duplicate_query_id")[0].where == f"{p}:6"
    assert rep.find("no_window")[0].video_id == "v2"
    assert rep.fixups == {"multiple_windows": 1, "window_dropped": 1}
    by_id = {r.query_id: r for r in res.records}
    assert sorted(by_id) == ["1", "4", "7", "val.v2.3"]
    two = by_id["4"]
    assert (two.start, two.end) == (2.0, 4.0)
    assert two.extra["windows"] == [[2.0, 4.0], [6.0, 10.0]]  # second clipped, third dropped
    assert two.extra["relevant_clip_ids"] == [1, 2]
    assert by_id["7"].split == "train" and by_id["1"].split == "val"
    # an explicit split wins over the lines' own field
    res2 = load_annotations("jsonl", p, split="test")
    assert {r.split for r in res2.records} == {"test"}


def test_load_splits_rejects_query_ids_repeated_across_files(tmp_path: Path) -> None:
    row = {
        "qid": 1,
        "query": "a ball rolls.",
        "vid": "v1",
        "duration": 10,
        "relevant_windows": [[1, 3]],
    }
    a = _jsonl(tmp_path, [row], "train.jsonl")
    b = _jsonl(tmp_path, [row, {**row, "qid": 2}], "test.jsonl")
    res = load_splits("jsonl", {"train": a, "test": b})
    assert [(r.query_id, r.split) for r in res.records] == [("1", "train"), ("2", "test")]
    (dup,) = res.report.find("duplicate_query_id")
    assert dup.where == f"{b}:1"
    assert res.report.files == [str(a), str(b)]


def test_byte_order_mark_and_crlf_are_tolerated(tmp_path: Path) -> None:
    p = tmp_path / "charades_sta_test.txt"
    p.write_bytes(b"\xef\xbb\xbfVIDA 0.0 4.5##a person sits.\r\nVIDB 1.0 2.0##a person \xff.\r\n")
    res = load_annotations("charades-sta", p, durations=DURATIONS)
    assert [(r.query_id, r.sentence) for r in res.records] == [("test.VIDA.0", "a person sits.")]
    (bad,) = res.report.find("malformed")
    assert bad.where == f"{p}:2" and "UTF-8" in bad.detail
    j = tmp_path / "val.json"
    j.write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps({"v_a": {"duration": 3, "timestamps": [[0, 1]], "sentences": ["x"]}}).encode()
    )
    assert len(load_annotations("activitynet", j)) == 1


def test_durations_sources_and_split_names(tmp_path: Path) -> None:
    from pipeline.datasets import load_durations

    a = tmp_path / "a.csv"
    a.write_text("video_id,duration\nVIDA,30\n")
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"VIDB": {"duration": 20}}))
    table = load_durations([a, b])
    assert table.lookup("VIDA") == (30.0, f"{a}:2") and table.lookup("VIDB") == (20.0, f"{b}#VIDB")
    p = _charades(tmp_path, ["VIDA 0.0 4.5##a person sits.", "VIDB 1.0 2.0##a person stands."])
    res = load_annotations("charades-sta", p, durations=[str(a), str(b)])
    assert len(res.records) == 2 and res.report.durations_sources == [str(a), str(b)]
    with pytest.raises(DatasetError, match="split name 'a/b'"):
        load_annotations("charades-sta", p, durations=DURATIONS, split="a/b")
    row = {"qid": 1, "query": "q.", "vid": "v", "duration": 3, "relevant_windows": [[0, 1]]}
    j = _jsonl(tmp_path, [row, {**row, "qid": 2, "split": "../x"}])
    res = load_annotations("jsonl", j)
    (bad,) = res.report.find("malformed")
    assert bad.where == f"{j}:2" and "'split'" in bad.detail
    assert [r.query_id for r in res.records] == ["1"]
