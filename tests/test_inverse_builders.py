"""The writers of provenance attributes have inverse builders: weights tags and extractor
configs are read back by the layer that wrote them (what `mktn predict` rebuilds from)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.backbones import parse_weights_tag, weights_tag
from pipeline.extract import ExtractionConfig


def test_weights_tag_round_trip(tmp_path: Path) -> None:
    assert parse_weights_tag(weights_tag(None, 7)[1]) == (7, None)
    w = tmp_path / "w.pt"
    torch.save({"x": torch.zeros(2)}, w)
    _, tag = weights_tag(w, 0)
    assert parse_weights_tag(tag) == (None, tag.removeprefix("sha256:"))
    assert parse_weights_tag("random3") == (3, None) and parse_weights_tag("random") == (0, None)
    with pytest.raises(ValueError, match="unknown weights tag"):
        parse_weights_tag("pretrained")


@pytest.mark.parametrize("config", [
    ExtractionConfig(),
    ExtractionConfig(backbone="tiny3d", grid=2, seed=5, fps=4.0, stride=4, dtype="float32"),
    ExtractionConfig(backbone="tiny3d", layer="layer3", geometry="crop", clip_len=16, resize=96, crop=80),
])
def test_extraction_config_from_its_feature_config(config: ExtractionConfig) -> None:
    back = ExtractionConfig.from_feature_config(config.feature_config(), dataset="predict", device="cpu")
    assert back.feature_config() == config.feature_config()
    assert back.resolved_extractor_id() == config.resolved_extractor_id()
    assert (back.dataset, back.device) == ("predict", "cpu")


def test_extraction_config_from_old_or_foreign_attrs(tmp_path: Path) -> None:
    attrs = ExtractionConfig(backbone="tiny3d", seed=2).feature_config()
    old = {**attrs, "sampling": {k: v for k, v in attrs["sampling"].items() if k != "geometry"}}
    del old["dtype"]
    back = ExtractionConfig.from_feature_config(old)
    assert (back.geometry, back.dtype, back.seed) == ("crop", "float16", 2)  # what such stores used
    with pytest.raises(ValueError, match="do not pass --weights"):
        ExtractionConfig.from_feature_config(attrs, weights=tmp_path / "w.pt")
    with pytest.raises(ValueError, match="lacks"):
        ExtractionConfig.from_feature_config({"feature_dim": 500})  # imported features
    w = tmp_path / "w.pt"
    torch.save({"x": torch.zeros(2)}, w)
    local = {**attrs, "weights": weights_tag(w, 0)[1]}
    with pytest.raises(FileNotFoundError, match="--weights PATH"):
        ExtractionConfig.from_feature_config(local)
    assert ExtractionConfig.from_feature_config(local, weights=w).weights == str(w)
    other = tmp_path / "other.pt"
    torch.save({"x": torch.ones(2)}, other)
    with pytest.raises(ValueError, match="the features used sha256:"):
        ExtractionConfig.from_feature_config(local, weights=other)
