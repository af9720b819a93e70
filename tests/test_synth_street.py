"""The second synthetic domain, ``street``: real 4:3 mp4 files, its own vocabulary, visible events,
unambiguous sentences, the jsonl adapter, determinism, and ``mktn synth --domain street``."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import decord
import numpy as np
import pytest

from pipeline.cli import main
from pipeline.datasets import load_annotations
from pipeline.synth import build_synth_config, dataset_stats, generate_benchmark, is_complete
from pipeline.synth.benchmark import annotation_records, assign_splits, plan_videos
from pipeline.synth.domains import get_domain
from pipeline.synth.street.render import render_frames
from pipeline.synth.street.script import EVENT_KINDS

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def street(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("street_quick")
    generate_benchmark(out, build_synth_config("quick", "street", num_videos=4), seed=0, workers=1, progress=False)
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for s in SPLITS for line in (out / "annotations" / f"{s}.jsonl").open()]


def _plans(num_videos: int = 200) -> list[tuple[Any, list[dict]]]:
    cfg = build_synth_config("default", "street", num_videos=num_videos)
    splits = assign_splits(cfg, 0)
    return [(s, annotation_records(s, q, sp, "street")) for (s, q), sp in zip(plan_videos(cfg, 0), splits, strict=True)]


def test_quick_street_videos_decode_at_4_3(street: Path) -> None:
    recs = _records(street)
    durations = {r["vid"]: r["duration"] for r in recs}
    videos = sorted((street / "videos").glob("*.mp4"))
    assert [p.stem for p in videos] == [f"street_{i:04d}" for i in range(4)] and set(durations) == {p.stem for p in videos}
    for path in videos:
        vr = decord.VideoReader(str(path))
        assert vr.get_avg_fps() == pytest.approx(15.0)
        assert len(vr) == round(durations[path.stem] * 15.0)
        frame = vr[len(vr) // 2].asnumpy()
        assert frame.shape == (120, 160, 3) and frame.std() > 5
    manifest = json.loads((street / "synth.json").read_text())
    assert manifest["domain"] == manifest["config"]["domain"] == "street"
    assert (manifest["config"]["size"], manifest["config"]["height"]) == (160, 120)
    assert is_complete(street) and len(manifest["files"]) == 4 + 3


def test_street_annotations_load_with_the_jsonl_adapter(street: Path) -> None:
    per_video = Counter()  # type: Counter[str]
    for split in SPLITS:
        res = load_annotations("jsonl", street / "annotations" / f"{split}.jsonl")
        assert res.report.issues == [] and res.report.pairs_kept == len(res.records)
        for r in res.records:
            assert r.split == split and r.sentence.strip()
            assert r.end - r.start >= 1.5 - 1e-9 and 0 <= r.start < r.end <= r.duration + 1e-9
            assert r.extra["event"]["category"] and r.extra["relation"]
            per_video[r.video_id] += 1
        lines = [json.loads(line)["qid"] for line in (street / "annotations" / f"{split}.jsonl").open()]
        assert [r.query_id for r in res.records] == lines  # the adapter keeps the written (shuffled) order
    assert sum(per_video.values()) > 0 and all(3 <= n <= 6 for n in per_video.values())  # quick: 3-6


def test_street_default_plan_language_and_stats() -> None:
    plans = _plans()
    recs = [r for _, rs in plans for r in rs]
    per_video = Counter(r["vid"] for r in recs)
    assert len(per_video) == 200 and min(per_video.values()) >= 3 and max(per_video.values()) <= 8
    assert max(per_video.values()) >= 7
    for _, rs in plans:  # no sentence can mean two moments of its video
        assert len({r["query"] for r in rs}) == len(rs)
    stats = dataset_stats(recs)
    assert 3000 < stats["total_seconds"] < 5000  # about the shapes default's ~3,900 s
    assert set(stats["relations"]) == {"plain", "once", "as_soon_as", "until", "as", "then"}
    assert set(stats["event_kinds"]) == {k for kinds in EVENT_KINDS.values() for k in kinds}
    assert stats["sentences_in_several_videos"] >= 3 and stats["videos_with_shared_noun_fraction"] > 0.5
    # its own words: no noun of the shapes domain, and connectives the shapes domain never uses
    assert not get_domain("street").noun_words & get_domain("shapes").noun_words
    text = " ".join(r["query"] for r in recs)
    for phrase in ("as soon as ", " until ", "once ", " and then "):
        assert phrase in text
    for r in recs:  # relations hold in time
        if r["relation"] == "as_soon_as":
            anchor = next(a for a in recs if a["qid"] == r["anchor_qid"])
            assert 0 <= r["relevant_windows"][0][0] - anchor["relevant_windows"][0][1] <= 1.0 + 1e-9


def test_every_street_event_changes_pixels_and_nothing_else_does() -> None:
    """Render each actor alone without noise or shake: its events change pixels, its pauses do not."""
    seen = Counter()  # type: Counter[str]
    for script, _ in _plans(6):
        for obj in script.objects:
            evs = script.events_of(obj.index)
            if not evs:
                continue
            alone = dataclasses.replace(script, objects=(obj,), events=tuple(evs))
            frames = np.stack(list(render_frames(alone, clean=True))).astype(np.int16)
            busy = np.zeros(len(frames), bool)
            for ev in evs:
                a, b = round(ev.start * script.fps), min(round(ev.end * script.fps), len(frames) - 1)
                busy[a:b + 1] = True
                changed = (np.abs(frames[a:b + 1] - frames[a]).max(axis=3) > 30).sum(axis=(1, 2)).max()
                assert changed >= 8, (script.video_id, ev)
                seen[ev.kind] += 1
            still = np.abs(np.diff(frames, axis=0)).max(axis=(1, 2, 3))  # frame f -> f + 1
            assert (still[~(busy[:-1] | busy[1:])] == 0).all()  # between events the actor stands still
    assert len(seen) >= 8


def test_street_is_deterministic_whatever_the_workers(tmp_path: Path) -> None:
    cfg = build_synth_config("quick", "street", num_videos=2, min_duration=6.0, max_duration=6.0)
    generate_benchmark(tmp_path / "a", cfg, seed=5, workers=1, progress=False)
    generate_benchmark(tmp_path / "b", cfg, seed=5, workers=2, progress=False)
    a, b = (json.loads((tmp_path / d / "synth.json").read_text()) for d in ("a", "b"))
    assert a["files"] == b["files"]  # every annotation file and mp4, byte for byte
    plans = [[r["query"] for _, rs in _plans(3) for r in rs] for _ in range(2)]
    assert plans[0] == plans[1]
    other = build_synth_config("default", "street", num_videos=3)
    assert [s.to_dict() for s, _ in plan_videos(other, 1)] != [s.to_dict() for s, _ in plan_videos(other, 0)]


def test_cli_synth_domain_street(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = main(["synth", "--out", str(out), "--domain", "street", "--quick", "--videos", "1", "--workers", "1",
               "--min-duration", "5", "--max-duration", "5", "--resolution", "96", "--no-progress", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["domain"] == "street" and summary["videos"] == 1
    frame = decord.VideoReader(str(out / "videos" / "street_0000.mp4"))[0].asnumpy()
    assert frame.shape == (72, 96, 3)  # --resolution sets the width; the height keeps 4:3
    assert main(["synth", "--out", str(tmp_path / "bad"), "--domain", "street", "--size", "large"]) == 1
    assert "street" in capsys.readouterr().err


def test_reproduce_synth_domain_plumbing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows import tasks

    out = tmp_path / "data" / "synthetic" / "street" / "quick"
    summary = tasks.generate_synthetic.fn(str(out), "quick", 0, 1, domain="street")
    assert summary["num_videos"] == 12 and is_complete(out)
    assert json.loads((out / "synth.json").read_text())["domain"] == "street"
    # --synth-domain chooses the synthetic benchmark; with a dataset of one's own it is refused
    rc = main(["reproduce", "--work", str(tmp_path / "w"), "--synth-domain", "street",
               "--dataset-videos", str(out / "videos"), "--annotations", f"train={out}/annotations/train.jsonl"])
    assert rc == 2 and "--synth-domain" in capsys.readouterr().err
