"""The adapters on the real annotation files of ../shared/data: the counts of its README, exactly.

"pairs read" counts every entry of a file; "pairs kept" the records returned after
the rejections. Both are asserted.
"""

from __future__ import annotations

import doctest
import importlib
import math
from collections import Counter
from pathlib import Path

import pytest

from pipeline.datasets import FORMATS, LoadResult, load_annotations, load_splits, sniff_format


@pytest.fixture(scope="module")
def charades(shared_data: Path) -> dict[str, LoadResult]:
    d = shared_data / "charades-sta"
    return {
        s: load_annotations("charades-sta", d / f"charades_sta_{s}.txt") for s in ("train", "test")
    }


@pytest.fixture(scope="module")
def anet(shared_data: Path) -> dict[str, LoadResult]:
    d = shared_data / "activitynet-captions"
    return {
        s: load_annotations("activitynet", d / f"{s}.json") for s in ("train", "val_1", "val_2")
    }


def _videos(res: LoadResult) -> int:
    return len({r.video_id for r in res.records})


def test_charades_sta_counts(charades: dict[str, LoadResult]) -> None:
    train, test = charades["train"], charades["test"]
    assert (train.report.pairs_read, len(train.report.videos_read)) == (12408, 5338)
    assert (test.report.pairs_read, len(test.report.videos_read)) == (3720, 1334)
    # the 4 broken lines are dropped by default; LEOL6 and AKKWU have no other pair
    assert len(train.records) == train.report.pairs_kept == 12404
    assert _videos(train) == 5336
    assert (len(test.records), _videos(test)) == (3720, 1334)
    assert train.report.count("end_past_duration") == 1805
    assert test.report.count("end_past_duration") == 562
    assert test.report.rejected == 0
    assert train.report.rejections == {"end_before_start": 4}
    assert train.report.pairs_read == train.report.pairs_kept + train.report.rejected


def test_charades_sta_broken_lines_named_by_video_and_line(
    charades: dict[str, LoadResult], shared_data: Path
) -> None:
    broken = charades["train"].report.find("end_before_start")
    assert Counter(i.video_id for i in broken) == {"LEOL6": 1, "IOL8Q": 1, "AKKWU": 2}
    path = str(shared_data / "charades-sta" / "charades_sta_train.txt")
    assert [i.where for i in broken] == [f"{path}:{n}" for n in (8252, 8440, 9623, 9624)]
    assert all(i.kind == "rejection" for i in broken)


def test_charades_sta_clipping_and_records(
    charades: dict[str, LoadResult], shared_data: Path
) -> None:
    train = charades["train"]
    assert train.report.durations_sources == [
        str(shared_data / "charades-sta" / "Charades_v1_train.csv")
    ]
    excess = [
        float(i.detail.split("(by ")[1].split(" s)")[0])
        for i in train.report.find("end_past_duration")
    ]
    assert 0 < max(excess) <= 1.54 + 1e-9
    for r in train.records:
        assert 0 <= r.start < r.end <= r.duration
        assert r.split == "train"
    first = train.records[0]
    assert (first.query_id, first.video_id, first.start, first.end) == (
        "train.AO8RW.0",
        "AO8RW",
        0.0,
        6.9,
    )
    assert first.sentence == "a person is putting a book on a shelf."
    assert first.source.endswith("charades_sta_train.txt:1")
    # Y6R7T line 2 ends at 30.0 in a 29.42 s video: clipped
    y = next(r for r in train.records if r.source.endswith(":2"))
    assert (y.video_id, y.end, y.duration) == ("Y6R7T", 29.42, 29.42)
    ids = [r.query_id for r in train.records + charades["test"].records]
    assert len(set(ids)) == len(ids)


def test_charades_sta_swap(shared_data: Path) -> None:
    res = load_annotations(
        "charades-sta", shared_data / "charades-sta" / "charades_sta_train.txt", inverted="swap"
    )
    rep = res.report
    assert rep.count("end_before_start", "fixup") == 4
    # swapped, LEOL6 [7, 8] and AKKWU [13, 38] still start after their 6.25 s / 12.17 s videos end
    assert Counter(i.video_id for i in rep.find("start_past_duration")) == {"LEOL6": 1, "AKKWU": 2}
    assert rep.count("end_past_duration") == 1805
    iol = [r for r in res.records if r.video_id == "IOL8Q" and r.source.endswith(":8440")]
    assert [(r.start, r.end) for r in iol] == [(12.0, 20.9)]
    assert len(res.records) == 12405


def test_charades_sta_explicit_durations(shared_data: Path, tmp_path: Path) -> None:
    # the annotation file alone, elsewhere: no CSV beside it, so durations must be named
    src = shared_data / "charades-sta" / "charades_sta_test.txt"
    lines = src.read_text().splitlines()[:50]
    ann = tmp_path / "charades_sta_test.txt"
    ann.write_text("\n".join(lines) + "\n")
    from pipeline.datasets import DatasetError

    with pytest.raises(DatasetError, match="durations"):
        load_annotations("charades-sta", ann)
    res = load_annotations(
        "charades-sta", ann, durations=shared_data / "charades-sta" / "Charades_v1_test.csv"
    )
    assert res.report.pairs_read == 50 and len(res.records) == 50
    # the train CSV does not know test videos: every pair is rejected as unknown_video
    res = load_annotations(
        "charades-sta", ann, durations=shared_data / "charades-sta" / "Charades_v1_train.csv"
    )
    assert res.records == [] and res.report.rejections == {"unknown_video": 50}


def test_activitynet_counts(anet: dict[str, LoadResult]) -> None:
    expect = {"train": (10009, 37421, 33), "val_1": (4917, 17505, 5), "val_2": (4885, 17031, 1)}
    for split, (videos, pairs, bad) in expect.items():
        rep = anet[split].report
        assert (len(rep.videos_read), rep.pairs_read) == (videos, pairs), split
        # "bad timestamps": start >= end or end past the duration (beyond float noise)
        n_bad = (
            rep.count("end_past_duration")
            + rep.count("end_before_start")
            + rep.count("zero_length")
        )
        assert n_bad == bad, split
        assert all(r.split == split for r in anet[split].records)
    train = anet["train"].report
    assert train.count("end_past_duration") == 29
    assert train.rejections == {"end_before_start": 2, "zero_length": 2}
    assert len(anet["train"].records) == 37417
    assert (len(anet["val_1"].records), len(anet["val_2"].records)) == (17505, 17031)


def test_activitynet_known_video(anet: dict[str, LoadResult]) -> None:
    recs = [r for r in anet["train"].records if r.video_id == "v_ZNVhz7ctTq0"]
    assert len(recs) == 2
    assert all(r.duration == 14.05 for r in recs)
    assert [(r.start, r.end) for r in recs] == [(0.0, 1.97), (1.9, 14.05)]
    assert recs[0].sentence == "A fluffy dog is standing on a sidewalk with a child behind it."
    assert recs[1].sentence.startswith("The dog begins walking on the sidewalk")
    assert [r.query_id for r in recs] == ["train.v_ZNVhz7ctTq0.0", "train.v_ZNVhz7ctTq0.1"]
    assert recs[1].source.endswith("train.json#v_ZNVhz7ctTq0[1]")
    # sentences are stripped of the leading space ActivityNet often has
    assert all(r.sentence == r.sentence.strip() for r in anet["val_2"].records)


def test_activitynet_swap_keeps_strictly_inverted(shared_data: Path) -> None:
    res = load_annotations(
        "activitynet", shared_data / "activitynet-captions" / "train.json", inverted="swap"
    )
    assert res.report.count("end_before_start", "fixup") == 2
    assert res.report.rejections == {"zero_length": 2}
    rec = next(r for r in res.records if r.query_id == "train.v_0bosp4-pyTM.3")
    assert (rec.start, rec.end) == (60.71, 61.29)


def test_activitynet_load_splits_val1_val2_share_videos(shared_data: Path) -> None:
    d = shared_data / "activitynet-captions"
    res = load_splits("activitynet", {"val": d / "val_1.json", "test": d / "val_2.json"})
    assert len(res.records) == 17505 + 17031
    ids = [r.query_id for r in res.records]
    assert len(set(ids)) == len(ids)  # same videos, distinct query ids
    assert {k: len(v) for k, v in res.by_split().items()} == {"val": 17505, "test": 17031}
    assert res.report.pairs_read == 17505 + 17031 and len(res.report.files) == 2
    assert res.report.count("end_past_duration") == 6


def test_tacos_counts_and_seconds(shared_data: Path) -> None:
    expect = {"train": (75, 9790), "val": (27, 4436), "test": (25, 4001)}
    res = load_splits("tacos", {s: shared_data / "tacos" / f"{s}.json" for s in expect})
    for split, (videos, pairs) in expect.items():
        recs = res.by_split()[split]
        assert (len({r.video_id for r in recs}), len(recs)) == (videos, pairs), split
    assert res.report.rejected == 0
    ends = Counter(
        i.where.split("#")[0].rsplit("/", 1)[-1] for i in res.report.find("end_past_duration")
    )
    assert ends == {"train.json": 43, "test.json": 5}
    r = next(r for r in res.records if r.video_id == "s30-d52.avi")
    assert r.extra["fps"] == 29.4
    assert (r.extra["start_frame"], r.extra["end_frame"]) == (141, 354)
    assert math.isclose(r.start, 141 / 29.4) and math.isclose(r.end, 354 / 29.4)
    assert math.isclose(r.duration, r.extra["num_frames"] / 29.4)


def test_jsonl_lighthouse_file(shared_data: Path, charades: dict[str, LoadResult]) -> None:
    path = shared_data / "jsonl" / "charades_test_release.jsonl"
    assert not path.read_bytes().endswith(b"\n")
    res = load_annotations("jsonl", path)
    assert (res.report.pairs_read, len(res.records), _videos(res)) == (3720, 3720, 1334)
    assert res.report.issues == []
    first = res.records[0]
    assert (first.query_id, first.video_id, first.sentence) == (
        "12404",
        "3MSZA",
        "person turn a light on.",
    )
    assert (first.start, first.end, first.duration, first.split) == (24.3, 30.4, 30.96, "test")
    assert first.extra["windows"] == [[24.3, 30.4]]
    last = res.records[-1]
    assert last.source.endswith(":3720") and (last.start, last.end) == (3.1, 8.3)
    # the same pairs as the Charades-STA test file (whose ends were clipped to the CSV lengths)
    sta = charades["test"].records
    assert [r.sentence for r in res.records] == [r.sentence for r in sta]
    assert all(
        abs(a.end - b.end) < 1e-6 and a.start == b.start
        for a, b in zip(res.records, sta, strict=True)
    )


def test_sniff_format(shared_data: Path) -> None:
    assert sniff_format(shared_data / "charades-sta" / "charades_sta_test.txt") == "charades-sta"
    assert sniff_format(shared_data / "activitynet-captions" / "val_2.json") == "activitynet"
    assert sniff_format(shared_data / "tacos" / "test.json") == "tacos"
    assert sniff_format(shared_data / "jsonl" / "charades_test_release.jsonl") == "jsonl"
    assert len(load_annotations(None, shared_data / "tacos" / "test.json")) == 4001
    assert sorted(FORMATS) == ["activitynet", "charades-sta", "jsonl", "tacos"]


@pytest.mark.parametrize("name", ["pipeline.datasets.registry", "pipeline.datasets.validator"])
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
