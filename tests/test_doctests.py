"""Run the doctests of the small pure modules whose examples are their documentation."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["model.spans", "model.metrics", "model.controls", "model.evaluate", "storage.keys", "storage.errors", "storage.remote", "pipeline.synth.writer",
           "flows.report", "flows.import_features", "pipeline.datasets.registry", "pipeline.overrides",
           "model.config", "pipeline.scaleout", "flows.retry", "flows.progress",
           "model.html_report"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no doctests"
    assert result.failed == 0, f"{result.failed} doctest(s) of {name} failed (run python -m doctest -v)"
