"""The synthetic benchmark: real mp4 files that decode, exact event times, the language phenomena,
determinism for a seed, atomic and resumable generation, and the CLI."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import decord
import numpy as np
import pytest

from pipeline.cli import main
from pipeline.datasets import load_annotations
from pipeline.synth import benchmark as bench_mod
from pipeline.synth import build_synth_config, dataset_stats, generate_benchmark, is_complete
from pipeline.synth.benchmark import (
    FORMAT_VERSION,
    annotation_records,
    assign_splits,
    order_start_correlation,
    plan_videos,
)
from pipeline.synth.config import SynthConfig
from pipeline.synth.render import render_frames
from pipeline.synth.script import EventSpec, ObjectSpec, VideoScript

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth_quick")
    generate_benchmark(out, build_synth_config("quick"), seed=0, workers=1, progress=False)
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for s in SPLITS for line in (out / "annotations" / f"{s}.jsonl").open()]


def test_videos_decode_with_the_annotated_geometry(quick: Path) -> None:
    recs = _records(quick)
    durations = {r["vid"]: r["duration"] for r in recs}
    videos = sorted((quick / "videos").glob("*.mp4"))
    assert len(videos) == 12 and {p.stem for p in videos} == set(durations)
    for path in videos:
        vr = decord.VideoReader(str(path))
        assert vr.get_avg_fps() == pytest.approx(15.0)
        assert len(vr) == round(durations[path.stem] * 15.0)
        frame = vr[len(vr) // 2].asnumpy()
        assert frame.shape == (112, 112, 3)
        assert frame.std() > 5  # a textured frame, not a blank one


def test_event_times_and_query_ids(quick: Path) -> None:
    recs = _records(quick)
    assert len({r["qid"] for r in recs}) == len(recs)
    per_video: dict[str, int] = {}
    for r in recs:
        (s, e), = r["relevant_windows"]
        assert 0.0 <= s < e <= r["duration"] + 1e-9, r
        assert e - s >= 1.5 - 1e-9, r
        assert r["query"].strip() and r["split"] in SPLITS
        per_video[r["vid"]] = per_video.get(r["vid"], 0) + 1
    assert all(3 <= n <= 6 for n in per_video.values())
    split_of = {r["vid"]: r["split"] for r in recs}
    assert all(split_of[r["vid"]] == r["split"] for r in recs)  # split by video, never by query
    assert Counter(split_of.values()) == {"train": 8, "val": 2, "test": 2}  # 70/15/15 of 12 videos


def test_annotations_load_with_the_jsonl_adapter(quick: Path) -> None:
    for split in SPLITS:
        res = load_annotations("jsonl", quick / "annotations" / f"{split}.jsonl")
        assert res.records and all(r.split == split for r in res.records)
        assert res.report.issues == [] and res.report.pairs_kept == len(res.records)
        first = res.records[0]
        assert first.extra["event"]["kind"] and first.extra["relation"]
    manifest = json.loads((quick / "synth.json").read_text())
    assert manifest["seed"] == 0 and manifest["config"]["num_videos"] == 12
    assert manifest["domain"] == manifest["config"]["domain"] == "shapes"
    assert manifest["format_version"] == FORMAT_VERSION
    assert len(manifest["files"]) == 12 + 3 and is_complete(quick)


def test_relation_phenomena_exist(quick: Path) -> None:
    stats = dataset_stats(_records(quick))
    assert stats["videos_with_shared_noun_fraction"] >= 0.5
    assert stats["relations"].get("then", 0) > 0
    assert stats["relations"].get("after", 0) + stats["relations"].get("before", 0) > 0
    assert stats["queries_overlapping_another_fraction"] > 0.2
    # at the default size (plans only: no pixels) every phenomenon is present, incl. repeated sentences
    cfg = build_synth_config("default", num_videos=120)
    splits = assign_splits(cfg, 0)
    recs = [r for (s, q), sp in zip(plan_videos(cfg, 0), splits, strict=True) for r in annotation_records(s, q, sp)]
    big = dataset_stats(recs)
    per_video: dict[str, list[str]] = {}
    for r in recs:
        per_video.setdefault(r["vid"], []).append(r["query"])
    assert all(len(set(qs)) == len(qs) for qs in per_video.values())  # no sentence means two moments
    assert any(" again" in q for qs in per_video.values() for q in qs)
    assert set(big["relations"]) == {"plain", "after", "before", "while", "then"}
    assert big["sentences_in_several_videos"] >= 3
    assert set(big["event_kinds"]) == {"appear", "disappear", "move", "grow", "shrink", "spin", "recolor", "blink"}
    assert big["normalised_length_quantiles"][2] > 2 * big["normalised_length_quantiles"][0]


def _default_records(domain: str, num_videos: int = 200) -> list[dict]:
    """The default dataset's annotation records, from its plans alone (no pixels: a fraction of a second)."""
    cfg = build_synth_config("default", domain, num_videos=num_videos)
    planned = plan_videos(cfg, 0)
    splits = assign_splits(cfg, 0)
    return [r for (s, q), sp in zip(planned, splits, strict=True) for r in annotation_records(s, q, sp, domain)]


@pytest.mark.parametrize("domain", ["shapes", "street"])
def test_query_order_and_ids_do_not_leak_the_answer(domain: str) -> None:
    recs = _default_records(domain)
    by_video: dict[str, list[dict]] = {}
    for r in recs:
        by_video.setdefault(r["vid"], []).append(r)
    # listed order (and the qid numbering, which follows it) vs start time: no correlation left
    assert abs(order_start_correlation(recs)) < 0.1
    event_ordered = [r for recs_v in by_video.values()
                     for r in sorted(recs_v, key=lambda r: r["relevant_windows"][0][0])]
    assert order_start_correlation(event_ordered) == pytest.approx(1.0)  # the statistic sees a leak
    firsts = Counter()  # type: Counter[int]
    for vid, rs in by_video.items():
        assert [r["qid"] for r in rs] == [f"{vid}_q{k}" for k in range(len(rs))]  # numbered as listed
        starts = [r["relevant_windows"][0][0] for r in rs]
        firsts[int(np.argmin(starts))] += 1
        qids = {r["qid"]: r for r in rs}
        for r in rs:  # anchors follow the renumbering and still mean what the relation says
            if r["anchor_qid"] is None:
                assert r["relation"] == "plain"
                continue
            anchor = qids[r["anchor_qid"]]["relevant_windows"][0]
            target = r["relevant_windows"][0]
            if r["relation"] in ("after", "then", "once", "as_soon_as"):
                assert anchor[1] <= target[0] + 1e-9, r
            elif r["relation"] == "before":
                assert anchor[0] >= target[1] - 1e-9, r
        # nothing but the window itself holds a time
        assert all(not ({"start", "end", "index", "time"} & set(r["event"])) for r in rs)
    # the earliest moment is listed first in about 1 / (queries per video) of the videos, not always
    assert firsts[0] < 0.4 * len(by_video)
    shuffled = sum(1 for rs in by_video.values()
                   if [r["relevant_windows"][0][0] for r in rs] != sorted(r["relevant_windows"][0][0] for r in rs))
    assert shuffled > 0.7 * len(by_video)


def test_an_older_format_is_rewritten_without_reencoding(tmp_path: Path) -> None:
    cfg = build_synth_config("quick", num_videos=2)
    out = tmp_path / "old"
    generate_benchmark(out, cfg, seed=3, workers=1, progress=False)
    digests = json.loads((out / "synth.json").read_text())["files"]
    # what format 1 left: event-ordered queries, a plan and manifest without the newer fields
    plan = json.loads((out / ".synth-plan.json").read_text())
    old_cfg = {k: v for k, v in plan["config"].items() if k not in ("domain", "height")}
    (out / ".synth-plan.json").write_text(json.dumps({"format_version": 1, "seed": 3, "config": old_cfg}))
    manifest = json.loads((out / "synth.json").read_text())
    (out / "synth.json").write_text(json.dumps({**manifest, "format_version": 1}))
    assert not is_complete(out)  # an older format is not a finished dataset of this one
    result = generate_benchmark(out, cfg, seed=3, workers=1, progress=False)
    assert result.encoded == 0 and is_complete(out)
    new = json.loads((out / "synth.json").read_text())
    assert new["format_version"] == FORMAT_VERSION and new["files"] == digests
    # another seed is still refused
    with pytest.raises(ValueError, match="--overwrite"):
        generate_benchmark(out, cfg, seed=4, workers=1, progress=False)


def _decode_all(path: Path) -> np.ndarray:
    return decord.VideoReader(str(path)).get_batch(list(range(len(decord.VideoReader(str(path)))))).asnumpy()


def test_deterministic_for_a_seed_whatever_the_workers(tmp_path: Path) -> None:
    cfg = build_synth_config("quick", num_videos=3)
    generate_benchmark(tmp_path / "a", cfg, seed=7, workers=1, progress=False)
    generate_benchmark(tmp_path / "b", cfg, seed=7, workers=2, progress=False)
    generate_benchmark(tmp_path / "c", cfg, seed=8, workers=1, progress=False)
    for split in SPLITS:
        a = (tmp_path / "a" / "annotations" / f"{split}.jsonl").read_bytes()
        assert a == (tmp_path / "b" / "annotations" / f"{split}.jsonl").read_bytes()
    assert _records(tmp_path / "a") != _records(tmp_path / "c")
    for p in sorted((tmp_path / "a" / "videos").glob("*.mp4")):
        assert np.array_equal(_decode_all(p), _decode_all(tmp_path / "b" / "videos" / p.name))


def test_rerun_skips_finished_videos_and_failures_leave_no_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = build_synth_config("quick", num_videos=4)
    out = tmp_path / "ds"
    real = bench_mod._render_one

    def flaky(script, path, c):  # type: ignore[no-untyped-def]
        if script.video_id == "synth_0002":
            raise OSError("disk full (simulated)")
        return real(script, path, c)

    monkeypatch.setattr(bench_mod, "_render_one", flaky)
    with pytest.raises(RuntimeError, match="synth_0002"):
        generate_benchmark(out, cfg, seed=1, workers=1, progress=False)
    assert not (out / "synth.json").exists() and not is_complete(out)
    assert sorted(p.stem for p in (out / "videos").glob("*.mp4")) == ["synth_0000", "synth_0001", "synth_0003"]
    assert not list((out / "videos").glob(".*.tmp"))  # the failed encode left no temporary file
    (out / "videos" / ".synth_0002.mp4.abc123.tmp").write_bytes(b"half a video")  # as a killed run leaves
    monkeypatch.setattr(bench_mod, "_render_one", real)
    result = generate_benchmark(out, cfg, seed=1, workers=1, progress=False)
    assert (result.encoded, result.skipped) == (1, 3) and is_complete(out)
    assert not list((out / "videos").glob(".*.tmp"))
    # another config in the same directory is refused unless asked
    with pytest.raises(ValueError, match="--overwrite"):
        generate_benchmark(out, build_synth_config("quick", num_videos=5), seed=1, progress=False)


def _script(events: tuple[EventSpec, ...], objects: tuple[ObjectSpec, ...], frames: int = 45) -> VideoScript:
    return VideoScript("t", frames, 15.0, 112, objects, events, background_seed=3)


def _mask(frame: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> np.ndarray:
    return (np.abs(frame.astype(int) - np.array(rgb)).max(axis=2) < tol)


def test_rendered_events_are_visible() -> None:
    red, blue = (225, 35, 35), (35, 75, 235)
    square = ObjectSpec(0, "square", "red", 12.0, 80.0, 56.0, 0.0, True)
    ring = ObjectSpec(1, "ring", "blue", 12.0, 30.0, 30.0, 0.0, False)
    events = (
        EventSpec(0, 0, "move", 0.5, 2.5, "red", 12.0, direction="left", distance=40.0),
        EventSpec(1, 1, "appear", 0.5, 2.0, "blue", 12.0),
    )
    frames = list(render_frames(_script(events, (square, ring))))
    first, last = frames[0], frames[-1]
    xs0 = np.nonzero(_mask(first, red))[1].mean()
    xs1 = np.nonzero(_mask(last, red))[1].mean()
    assert xs0 - xs1 == pytest.approx(40.0, abs=2.0)  # moved 40 px to the left
    assert _mask(first, blue).sum() == 0 and _mask(last, blue).sum() > 100  # the ring appeared
    recolor = (EventSpec(0, 0, "recolor", 0.5, 2.0, "red", 12.0, new_colour="blue"),)
    frames = list(render_frames(_script(recolor, (square,))))
    assert _mask(frames[0], red).sum() > 300 and _mask(frames[-1], blue).sum() > 300
    assert _mask(frames[-1], red).sum() == 0


def test_size_rotation_blink_and_disappear_are_visible() -> None:
    green = (35, 185, 60)
    square = ObjectSpec(0, "square", "green", 12.0, 56.0, 56.0, 0.0, True)

    def area(frame: np.ndarray) -> int:
        return int(_mask(frame, green).sum())

    grow = (EventSpec(0, 0, "grow", 0.5, 2.0, "green", 12.0, factor=1.8),)
    frames = list(render_frames(_script(grow, (square,))))
    assert area(frames[-1]) / area(frames[0]) == pytest.approx(1.8**2, rel=0.12)  # area ~ radius^2
    shrink = (EventSpec(0, 0, "shrink", 0.5, 2.0, "green", 12.0, factor=0.5),)
    frames = list(render_frames(_script(shrink, (square,))))
    assert area(frames[-1]) / area(frames[0]) == pytest.approx(0.25, rel=0.2)
    spin = (EventSpec(0, 0, "spin", 0.0, 2.0, "green", 12.0, rotation=math.pi / 4),)  # 45 degrees
    frames = list(render_frames(_script(spin, (square,), frames=31)))
    a, b = _mask(frames[0], green), _mask(frames[30], green)
    assert (a & b).sum() / (a | b).sum() < 0.85  # a square turned by 45 degrees is a diamond
    assert abs(int(a.sum()) - int(b.sum())) < 0.1 * a.sum()  # same size
    blink = (EventSpec(0, 0, "blink", 1.0, 2.5, "green", 12.0, blink_hz=2.0),)
    areas = [area(f) for f in render_frames(_script(blink, (square,)))]
    during = areas[15:37]  # 1.0-2.4 s: off for 0.25 s of every 0.5 s
    assert min(during) == 0 and max(during) > 300 and min(areas[:15]) > 300 and min(areas[38:]) > 300
    gone = (EventSpec(0, 0, "disappear", 0.5, 2.0, "green", 12.0),)
    frames = list(render_frames(_script(gone, (square,))))
    assert area(frames[0]) > 300 and area(frames[-1]) == 0


def test_config_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="even"):
        SynthConfig(size=111)
    with pytest.raises(ValueError, match="unknown synthetic size preset"):
        build_synth_config("huge")
    with pytest.raises(ValueError, match="unknown synthetic config keys"):
        build_synth_config("quick", colour_depth=3)
    with pytest.raises(ValueError, match="unknown synthetic domain"):
        build_synth_config("quick", "kitchen")
    with pytest.raises(ValueError, match="unknown domain"):
        SynthConfig(domain="kitchen")
    with pytest.raises(ValueError, match="street"):
        build_synth_config("large", "street")


def test_cli_synth_and_evaluate_predictions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = main(["synth", "--out", str(out), "--quick", "--videos", "3", "--workers", "1", "--no-progress", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["videos"] == 3 and summary["encoded"] == 3
    ann = out / "annotations" / "train.jsonl"
    recs = [json.loads(line) for line in ann.open()]
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(
        json.dumps({"query_id": r["qid"], "video_id": r["vid"], "spans": r["relevant_windows"], "scores": [1.0]}) + "\n"
        for r in recs
    ))
    assert main(["evaluate-predictions", "--annotations", str(ann), "--predictions", str(pred), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["R1@0.7"] == 100.0 and metrics["num_queries"] == len(recs)
    assert main(["evaluate-predictions", "--annotations", str(ann), "--predictions", str(pred)]) == 0
    assert "R1@0.5" in capsys.readouterr().out
    pred.write_text("".join(pred.read_text().splitlines(keepends=True)[1:]))  # drop the first query
    assert main(["evaluate-predictions", "--annotations", str(ann), "--predictions", str(pred)]) == 2
    assert recs[0]["qid"] in capsys.readouterr().err
