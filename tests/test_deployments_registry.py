"""One registration point for deployable flows: flows.deployments.FLOWS makes both
`mktn serve`'s deployments and prefect.yaml (docs/flows.md "Adding a flow")."""

from __future__ import annotations

import inspect
from pathlib import Path

import yaml

from flows.deployments import FLOWS, ServeConfig, build_deployments, render_prefect_yaml

ROOT = Path(__file__).resolve().parents[1]


def test_prefect_yaml_is_generated_from_the_registry() -> None:
    text = (ROOT / "prefect.yaml").read_text(encoding="utf-8")
    version = yaml.safe_load(text)["prefect-version"]
    assert text == render_prefect_yaml(version), (
        "prefect.yaml differs from flows.deployments.FLOWS: run "
        "`python -m flows.deployments --write-prefect-yaml`")
    declared = yaml.safe_load(text)["deployments"]
    assert [d["entrypoint"] for d in declared] == [e.entrypoint for e in FLOWS]
    for entry, d in zip(FLOWS, declared, strict=True):
        accepted = set(inspect.signature(entry.load().fn).parameters)
        assert set(d["parameters"]) <= accepted, entry.name
        assert ("schedules" in d) == entry.scheduled


def test_serve_builds_one_deployment_per_registered_flow(tmp_path: Path) -> None:
    cfg = ServeConfig(work_dir=str(tmp_path), datasets_root=str(tmp_path / "data"), dask="local")
    deployments = build_deployments(cfg)
    assert [d.flow_name for d in deployments] == [e.name for e in FLOWS]
    assert [d.description for d in deployments] == [e.description for e in FLOWS]
    by_flow = {d.flow_name: d for d in deployments}
    assert by_flow["re-evaluate"].parameters["datasets_root"] == str(tmp_path / "data")
    assert by_flow["extract-features"].parameters["dask"] == "local"
    assert "query_store" not in by_flow["reproduce"].parameters
    assert [e.name for e in FLOWS if e.scheduled] == ["re-evaluate"]
    assert by_flow["re-evaluate"].schedules and not by_flow["train"].schedules
