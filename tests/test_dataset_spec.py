"""Issue 15, item 2: one DatasetSpec through the flows' tasks, the annotations parsed once per run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from flows.dataset import DatasetSpec


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _rows(split: str, n: int) -> list[dict]:
    return [{"qid": f"{split}{i}", "vid": f"v{i}", "query": "a person opens the door", "duration": 10.0,
             "relevant_windows": [[1.0, 4.0]]} for i in range(n)]


@pytest.fixture()
def spec(tmp_path: Path) -> DatasetSpec:
    ann = {"train": _write(tmp_path / "train.jsonl", _rows("train", 3)),
           "test": _write(tmp_path / "test.jsonl", _rows("test", 2))}
    return DatasetSpec.from_flow_params(ann, "tiny", "jsonl", None)


def test_flow_parameters_round_trip(spec: DatasetSpec) -> None:
    assert spec.flow_params() == {"annotations": spec.annotations, "dataset": "tiny", "format": "jsonl",
                                  "durations": None}
    auto = DatasetSpec.from_flow_params(spec.annotations, "tiny", None, None)
    assert auto.format == "auto" and auto.fmt is None and auto.flow_params()["format"] is None
    assert DatasetSpec.from_dict(spec.to_dict()) == spec
    assert "annotations_sha" not in spec.to_dict()


def test_annotations_are_parsed_once_per_content(spec: DatasetSpec, caplog: pytest.LogCaptureFixture) -> None:
    from storage.fingerprint import file_digest

    def parses() -> int:
        return sum("pairs kept" in r.getMessage() for r in caplog.records) // 2  # 2 files per parse

    caplog.set_level(logging.INFO, logger="pipeline.datasets.registry")
    assert spec.annotations_sha is None
    spec.load()
    spec.load()
    assert parses() == 2  # no digest: nothing to key a shared parse on
    digests = {p: file_digest(p) for p in spec.files()}
    stamped = spec.with_digests(digests)
    first = stamped.load()
    again = stamped.with_digests(digests).load()
    assert parses() == 3 and len(first.records) == len(again.records) == 5
    assert first.records is not again.records  # a fresh list each call: callers may filter or sort it
    # new content, new digest: parsed again
    _write(Path(spec.annotations["test"]), _rows("test", 4))
    changed = spec.with_digests({p: file_digest(p) for p in spec.files()})
    assert changed.annotations_sha != stamped.annotations_sha
    assert len(changed.load().records) == 7 and parses() == 4


def test_cache_keys_read_the_spec_fields() -> None:
    from flows.caching import content_key

    spec = DatasetSpec(name="tiny", annotations={"train": "/a.jsonl"}, annotations_sha="abc")
    key = content_key("t", {"spec": spec, "split": "test"}, ["spec.annotations_sha", "split"], ())
    other = DatasetSpec(name="tiny", annotations={"train": "/b.jsonl"}, annotations_sha="abc")
    assert content_key("t", {"spec": other, "split": "test"}, ["spec.annotations_sha", "split"], ()) == key
    moved = DatasetSpec(name="tiny", annotations={"train": "/a.jsonl"}, annotations_sha="abd")
    assert content_key("t", {"spec": moved, "split": "test"}, ["spec.annotations_sha", "split"], ()) != key
    with pytest.raises(KeyError, match="spec.nope"):
        content_key("t", {"spec": spec}, ["spec.nope"], ())
