"""The config builders beside their dataclasses, and their one strict-override helper.

``pipeline.overrides`` is the only place an unknown key is refused; every builder names
what it builds and the valid keys.
"""

from __future__ import annotations

import pytest

from pipeline.overrides import check_keys, strict_build, strict_replace


def test_strict_helpers_name_the_unknown_and_the_valid_keys() -> None:
    from pipeline.text import TextConfig

    base = TextConfig()
    assert strict_replace(base, {"max_len": 7}, "text setting(s)").max_len == 7
    assert strict_replace(base, None, "text setting(s)") == base
    with pytest.raises(ValueError, match=r"unknown text setting\(s\) \['max_lne'\]; valid: \[.*'max_len'"):
        strict_replace(base, {"max_lne": 7}, "text setting(s)")
    with pytest.raises(ValueError, match=r"unknown x \['max_len'\]"):
        check_keys(TextConfig, ["max_len"], "x", exclude={"max_len"})
    assert strict_build(TextConfig, {"max_len": 9}, "text setting(s)").max_len == 9


def test_extraction_builder_flow_defaults_overrides_and_dataset() -> None:
    from pipeline.extract import build_extraction_config

    defaults = {"video_timeout_s": 3600.0, "threads": 2}
    cfg = build_extraction_config({"fps": 4, "dataset": "other"}, dataset="tiny", defaults=defaults)
    assert (cfg.fps, cfg.dataset, cfg.video_timeout_s, cfg.threads) == (4, "tiny", 3600.0, 2)
    cfg = build_extraction_config({"video_timeout_s": 2, "threads": 1}, dataset="tiny", defaults=defaults)
    assert (cfg.video_timeout_s, cfg.threads) == (2, 1)
    with pytest.raises(ValueError, match=r"unknown extractor setting\(s\) \['fsp'\]"):
        build_extraction_config({"fsp": 4}, dataset="tiny")
    with pytest.raises(ValueError, match="video timeout must be > 0"):
        build_extraction_config({"video_timeout_s": 0}, dataset="tiny")


def test_embed_builder_nested_sections() -> None:
    from pipeline.embed import build_embed_config

    cfg = build_embed_config({"vectors": {"path": "g.txt"}, "train_split": "val", "text": {"max_len": 20}},
                             dataset="d", defaults={"progress": False})
    assert (cfg.dataset, cfg.vectors.path, cfg.train_split, cfg.text.max_len, cfg.progress) == (
        "d", "g.txt", "val", 20, False)
    with pytest.raises(ValueError, match=r"unknown encoder setting\(s\) \['dataset'\]"):
        build_embed_config({"dataset": "x"}, dataset="d")
    with pytest.raises(ValueError, match=r"unknown vectors setting\(s\) \['pth'\]"):
        build_embed_config({"vectors": {"pth": "g.txt"}}, dataset="d")


def test_skipthought_and_synth_builders_use_the_same_check() -> None:
    from pipeline.skipthought import build_skipthought_config
    from pipeline.synth import SynthConfig, build_synth_config

    assert build_skipthought_config("demo", epochs=2).epochs == 2
    with pytest.raises(ValueError, match=r"unknown skip-thought config keys \['epoch'\]; valid:"):
        build_skipthought_config("demo", epoch=2)
    assert build_synth_config("quick", fps=10).fps == 10
    with pytest.raises(ValueError, match=r"unknown synthetic config keys \['colours'\]"):
        build_synth_config("quick", colours=3)
    with pytest.raises(ValueError, match=r"unknown synthetic config keys \['nope'\]"):
        SynthConfig.from_dict({**SynthConfig().to_dict(), "nope": 1})
