"""The config sections after issue 15: evaluation settings in ``EvalConfig``, the criterion's
switches in ``LossConfig``, the logits' initial temperature in ``ModelConfig``.

Moved keys keep working under their old names: in ``--set`` and in stored config dicts
(checkpoints, result.json), and a run written before the move still matches its config digest.
"""

from __future__ import annotations

import pytest

from model.config import (
    ADDED_KEYS,
    MOVED_KEYS,
    SECTIONS,
    EvalConfig,
    MKTNConfig,
    migrate_dict,
    override,
    preset,
)

# A config dict as code before the move stored it (checkpoints, result.json): the synthetic preset
# with train.nms_iou=0.3, model.apa_aa=false, loss.temperature=0.05, model.max_span_clips=8.
OLD_OVERRIDES = ["train.nms_iou=0.3", "model.apa_aa=false", "loss.temperature=0.05", "model.max_span_clips=8"]
OLD_DIGEST = "0838d1b0368b1fa2"  # what that code's MKTNConfig.digest() gave for it
OLD_SYNTHETIC_DIGEST = "6df24d53ed968573"  # and for the plain synthetic preset
# keys added later, at the values that do what that code did (a default may differ since)
AS_BEFORE = [f"{k}={str(v).lower()}" for k, v in ADDED_KEYS.items()]


def old_layout(cfg: MKTNConfig) -> dict:
    d = cfg.to_dict()
    for old, new in MOVED_KEYS.items():
        (os_, ok), (ns, nk) = old.split("."), new.split(".")
        d[os_][ok] = d[ns].pop(nk)
    assert d.pop("eval") == {}
    for key in ADDED_KEYS:
        section, name = key.split(".")
        d[section].pop(name)
    return d


def test_every_moved_key_lands_in_an_existing_field() -> None:
    cfg = preset("synthetic")
    for old, new in MOVED_KEYS.items():
        section, key = new.split(".")
        assert section in SECTIONS and hasattr(getattr(cfg, section), key), new
        old_section, old_key = old.split(".")
        assert not hasattr(getattr(cfg, old_section), old_key), f"{old} still exists"


def test_old_set_keys_are_aliases() -> None:
    cfg = override(preset("synthetic"), OLD_OVERRIDES + ["train.eval_top_k=3", "model.opm_oca=false",
                                                         "model.contrast_video_negatives=false",
                                                         "model.contrast_query_negatives=false"])
    assert cfg.eval == EvalConfig(top_k=3, nms_iou=0.3, max_span_clips=8)
    assert (cfg.loss.apa_aa, cfg.loss.opm_oca) == (False, False)
    assert (cfg.loss.contrast_video_negatives, cfg.loss.contrast_query_negatives) == (False, False)
    assert cfg.model.logit_temperature == 0.05
    new = override(preset("synthetic"), ["eval.nms_iou=0.3", "loss.apa_aa=false", "model.logit_temperature=0.05",
                                         "eval.max_span_clips=8"])
    assert new == override(preset("synthetic"), OLD_OVERRIDES)
    with pytest.raises(ValueError, match="unknown key 'nope' in eval"):
        override(cfg, ["eval.nope=1"])
    with pytest.raises(ValueError, match="unknown section 'evaluation'; use model, loss, train, eval"):
        override(cfg, ["evaluation.top_k=1"])


def test_a_stored_dict_of_the_old_layout_loads_and_keeps_its_digest() -> None:
    from model.checkpoint import config_with_defaults_of_its_time

    cfg = override(preset("synthetic"), OLD_OVERRIDES + AS_BEFORE)
    stored = old_layout(cfg)
    assert stored["train"]["nms_iou"] == 0.3 and stored["loss"]["temperature"] == 0.05
    assert MKTNConfig.from_dict(config_with_defaults_of_its_time(stored)) == cfg
    assert MKTNConfig.from_dict(cfg.to_dict()) == cfg
    # --resume and a reused ablation run compare the stored digest: the old one still matches
    assert cfg.matches_digest(OLD_DIGEST) and cfg.matches_digest(cfg.digest())
    assert override(preset("synthetic"), AS_BEFORE).matches_digest(OLD_SYNTHETIC_DIGEST)
    assert not preset("synthetic").matches_digest(OLD_DIGEST) and not cfg.matches_digest(None)
    # today's defaults differ from that code where an added key's default changed: no match
    changed = [k for k, v in ADDED_KEYS.items()
               if getattr(getattr(preset("synthetic"), k.split(".")[0]), k.split(".")[1]) != v]
    assert preset("synthetic").matches_digest(OLD_SYNTHETIC_DIGEST) is (not changed)


def test_a_dict_naming_a_key_twice_with_two_values_is_refused() -> None:
    assert migrate_dict({"train": {"nms_iou": 0.3}, "eval": {"nms_iou": 0.3}}) == {"train": {}, "eval": {"nms_iou": 0.3}}
    with pytest.raises(ValueError, match="both train.nms_iou"):
        migrate_dict({"train": {"nms_iou": 0.3}, "eval": {"nms_iou": 0.4}})
    with pytest.raises(ValueError, match="unknown eval config keys"):
        MKTNConfig.from_dict({"eval": {"topk": 1}})
    with pytest.raises(ValueError, match="unknown config sections"):
        MKTNConfig.from_dict({"evaluation": {}})


def test_ablation_variants_switch_the_loss_terms_in_the_loss_section() -> None:
    from model.config import VARIANTS, variant

    base = preset("synthetic")
    assert variant(base, "w/o AA").loss.apa_aa is False
    assert variant(base, "w/o OCA").loss.opm_oca is False
    assert variant(base, "CC w/o visual feature").loss.contrast_video_negatives is False
    assert variant(base, "CC w/o textual feature").loss.contrast_query_negatives is False
    for name in VARIANTS:
        variant(base, name)  # every variant still applies
