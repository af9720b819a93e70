"""Issue 13, item 3: a crafted Prefect result file in a work directory never runs code.

Prefect chooses the deserializer a result file names in its own metadata, so a file saying
``"serializer": {"type": "pickle"}`` is unpickled on the next cache lookup. The flows write
plain JSON, and their cache policy (:class:`flows.caching.VettedCachePolicy`) removes any
other file at the computed key before Prefect looks it up: a cache miss, and the task
recomputes. These tests drive the policy and Prefect's own ``ResultStore`` (what the task
engine asks), so they need no server; test_flows.py runs the drill through a real flow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


def _record(key: str, serializer: dict[str, object], result: str) -> str:
    meta = {"storage_key": key, "expiration": None, "serializer": serializer,
            "prefect_version": "3.8.8", "storage_block_id": None}
    return json.dumps({"metadata": meta, "result": result})


def _fs(work: Path) -> object:
    """The block Prefect resolves a task's ``result_storage`` path to."""
    from prefect.filesystems import LocalFileSystem

    from flows.caching import result_storage

    return LocalFileSystem(basepath=str(result_storage(work)))


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    return tmp_path / "work"


def test_results_are_plain_json_and_round_trip(work: Path) -> None:
    from prefect.results import ResultStore

    from flows.caching import PlainJSONSerializer, drop_unvetted_result

    store = ResultStore(result_storage=_fs(work), serializer=PlainJSONSerializer())
    store.persist_result_record(
        store.create_result_record({"n": 3, "path": Path("/x"), "m": [1.5, None]}, key="k")
    )
    path = work / "prefect-results" / "k"
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["metadata"]["serializer"] == {"type": "mktn-json"}
    assert json.loads(raw["result"]) == {"n": 3, "path": "/x", "m": [1.5, None]}
    assert not drop_unvetted_result(path)  # our own record is kept ...
    fresh = ResultStore(result_storage=_fs(work), serializer=PlainJSONSerializer())
    assert fresh.exists("k") and fresh.read("k").result == {"n": 3, "path": "/x", "m": [1.5, None]}


def test_crafted_result_files_are_cache_misses_not_code(work: Path) -> None:
    from types import SimpleNamespace

    from prefect import task
    from prefect.results import ResultStore
    from prefect.serializers import PickleSerializer

    from flows.caching import PlainJSONSerializer, content_policy, persisted

    @task(cache_policy=content_policy(["x"], ("flows",)))
    def double(x: int) -> int:
        return 2 * x

    t = persisted(double, work)
    ctx = SimpleNamespace(task=t)
    key = t.cache_policy.compute_key(ctx, {"x": 1}, {})
    assert key is not None
    marker = work.parent / "PWNED"
    folder = work / "prefect-results"
    pickled = PickleSerializer().dumps(_Payload(marker)).decode()
    crafted = {
        "pickle": _record(key, {"type": "pickle", "picklelib": "cloudpickle"}, pickled),
        "compressed": _record(key, {"type": "compressed/pickle"}, pickled),
        # prefect's own "json" names an importable object_decoder: also refused
        "json-hook": _record(key, {"type": "json", "object_decoder": "os.system"}, '{"a": 1}'),
        "bare-pickle": pickled,  # no record at all: Prefect would fall back to its serializer
        "truncated": _record(key, {"type": "mktn-json"}, "2")[:40],
        "bad-payload": _record(key, {"type": "mktn-json"}, "{not json"),
        "binary": "\udcff",
    }
    plain = ResultStore(result_storage=_fs(work))  # Prefect's reader, unvetted
    for name, text in crafted.items():
        (folder / key).write_bytes(text.encode("utf-8", "surrogateescape"))
        assert t.cache_policy.compute_key(ctx, {"x": 1}, {}) == key  # the lookup's first step
        assert not (folder / key).exists(), name
        assert not plain.exists(key), name  # so the task engine's lookup is a miss
    assert not marker.exists()
    # control: without the vetting step Prefect itself would have run the payload
    (folder / key).write_text(crafted["pickle"], encoding="utf-8")
    assert plain.exists(key) and marker.exists()  # (the marker is this test's own file)
    marker.unlink()
    # the recomputed result is written as plain JSON and kept
    store = ResultStore(result_storage=_fs(work), serializer=PlainJSONSerializer())
    store.persist_result_record(store.create_result_record(2, key=key))
    assert t.cache_policy.compute_key(ctx, {"x": 1}, {}) == key
    assert ResultStore(result_storage=_fs(work)).read(key).result == 2


def test_every_persisted_task_uses_the_json_serializer(tmp_path: Path) -> None:
    from flows import tasks
    from flows.caching import PlainJSONSerializer, VettedCachePolicy, persisted

    for task_obj in (tasks.extract_video_group, tasks.train_model, tasks.write_report):
        t = persisted(task_obj, tmp_path)
        assert isinstance(t.result_serializer, PlainJSONSerializer)
        assert isinstance(t.cache_policy, VettedCachePolicy)
        assert t.persist_result is True


def test_overlapping_reevaluations_never_lose_rows(tmp_path: Path) -> None:
    """Issue 13, item 7: results.csv is updated read-modify-write under a lock file."""
    from concurrent.futures import ThreadPoolExecutor

    from flows.reevaluate import append_results, read_results

    def run(i: int) -> None:
        rows = [{"time": "t", "dataset": f"d{i}", "dataset_sha": f"s{i}", "split": "test",
                 "checkpoint": "c", "checkpoint_sha": "k", "status": "ok"}]
        append_results(tmp_path, rows)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(run, range(24)))
    run(3)  # a pair scored twice is written once
    rows = read_results(tmp_path / "results.csv")
    assert sorted(r["dataset"] for r in rows) == sorted(f"d{i}" for i in range(24))
    assert not (tmp_path / ".results.csv.lock").exists()
