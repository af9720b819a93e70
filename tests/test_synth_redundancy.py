"""The synthetic generator's redundancy control (issue 16): what a lower ``redundancy`` writes,
and what it leaves alone."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline.synth import SynthConfig, build_synth_config, write_annotations_only
from pipeline.synth.benchmark import plan_videos
from pipeline.synth.redundancy import content_words, dilute, text_only_words, visible_share

DOMAINS = ("shapes", "street")


def _sentences(cfg: SynthConfig, seed: int = 0) -> list[list[str]]:
    return [[q.sentence for q in queries] for _, queries in plan_videos(cfg, seed)]


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_text_only_lexicon_names_nothing_either_domain_says(domain: str) -> None:
    words = {w for video in _sentences(build_synth_config("default", domain)) for s in video
             for w in content_words(s)}
    assert len(words) > 40  # the domain's own vocabulary was read
    assert not words & text_only_words()


@pytest.mark.parametrize("domain", DOMAINS)
def test_redundancy_one_is_the_generator_as_it_was(domain: str) -> None:
    cfg = build_synth_config("default", domain, num_videos=30)
    assert "redundancy" not in cfg.to_dict()  # datasets written before the key keep their identity
    same = dataclasses.replace(cfg, redundancy=1.0)
    assert _sentences(same) == _sentences(cfg)
    assert visible_share([s for v in _sentences(cfg) for s in v]) == 1.0


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("r", [0.75, 0.5, 0.25])
def test_lower_redundancy_adds_text_only_facts_and_keeps_the_rest(domain: str, r: float) -> None:
    cfg = build_synth_config("default", domain, num_videos=40)
    low = dataclasses.replace(cfg, redundancy=r)
    base_plan, low_plan = plan_videos(cfg, 0), plan_videos(low, 0)
    for (s0, q0), (s1, q1) in zip(base_plan, low_plan, strict=True):
        assert s0 == s1  # the same scripts: the same pixels
        assert [(q.event, q.relation, q.anchor) for q in q0] == [(q.event, q.relation, q.anchor) for q in q1]
        for a, b in zip(q0, q1, strict=True):
            assert b.sentence.startswith(a.sentence + ", ")  # the visible facts, then text-only clauses
            added = content_words(b.sentence[len(a.sentence):])
            assert added and set(added) <= text_only_words()
    share = visible_share([q.sentence for _, qs in low_plan for q in qs])
    # about r: clauses come in 2-3 words, so short sentences overshoot a little at 0.75
    assert r - 0.08 <= share <= r + 0.08 if r < 0.75 else 0.6 <= share <= 0.8
    assert share < visible_share([q.sentence for _, qs in plan_videos(dataclasses.replace(low, redundancy=min(1.0, r + 0.25)), 0) for q in qs])


def test_dilution_is_seeded_and_rejects_levels_outside_the_range() -> None:
    import numpy as np

    a = dilute("the red ball moves left", 0.5, np.random.default_rng(3))
    assert a == dilute("the red ball moves left", 0.5, np.random.default_rng(3))
    assert len(content_words(a)) == 8  # 4 visible + 4 text-only
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="redundancy"):
            build_synth_config("quick", redundancy=bad)
    cfg = SynthConfig.from_dict(build_synth_config("quick", redundancy=0.5).to_dict())
    assert cfg.redundancy == 0.5


def test_annotations_only_match_the_rendered_dataset_but_for_the_sentences(tmp_path: Path) -> None:
    cfg = build_synth_config("quick", num_videos=6)
    base = write_annotations_only(tmp_path / "r1", cfg, seed=2)
    low = write_annotations_only(tmp_path / "r05", dataclasses.replace(cfg, redundancy=0.5), seed=2)
    assert base["visible_word_share"] == 1.0 and 0.4 <= low["visible_word_share"] <= 0.6
    for split in ("train", "val", "test"):
        r1 = [json.loads(x) for x in (tmp_path / "r1" / f"{split}.jsonl").read_text().splitlines()]
        r05 = [json.loads(x) for x in (tmp_path / "r05" / f"{split}.jsonl").read_text().splitlines()]
        strip = [{k: v for k, v in rec.items() if k != "query"} for rec in r1]
        assert strip == [{k: v for k, v in rec.items() if k != "query"} for rec in r05]
        assert all(b["query"].startswith(a["query"]) for a, b in zip(r1, r05, strict=True))
