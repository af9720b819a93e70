"""Content-keyed caching for the flows' tasks: cache policies, config hashes, result storage.

A task's cache key is built from small, stable values only: the task's own
source (Prefect's ``TASK_SOURCE``), the values of the parameters the task
declares as its *content* (source-video sha256, annotation digests, store
locations, configuration hashes), the package version (``code_version()``)
and a digest of the project packages the task's work runs through
(``source_digest(packages)``; ``TASK_SOURCE`` alone would miss an edit in
``pipeline/extract.py`` because the task only *calls* it). Parameters that do
not change the result (a log prefix, a device string) stay out of the key.

Keys never hash tensors or arrays: a key parameter must be a JSON scalar or a
list/dict of them, and anything else is refused with a ``TypeError`` naming
the parameter, so a 2 GB array can never be hashed by accident.

Results are persisted as small JSON-able summaries (paths, digests, counts) to
``<work>/prefect-results`` by default (:func:`result_storage`), so a cache hit
in a later process reloads them without touching the data.

No result file can run code. Prefect picks the deserializer a result file names in its
own metadata (``"serializer": {"type": "pickle"}`` would unpickle it; even ``"json"``
names an importable ``object_decoder``), so a crafted file in a work directory could run
code on the next cache lookup. Results are therefore written by :class:`PlainJSONSerializer`
(``json.dumps``/``json.loads``, no object hooks, no imports), and every content policy is a
:class:`VettedCachePolicy`: once it has computed a task's cache key, and before Prefect
looks the key up, it checks the result file of that key and removes it unless its metadata
names exactly that serializer and its payload parses as plain JSON. Any other file
(tampered, truncated, foreign, unreadable, or written by the pickle serializer of an older
version) is therefore a cache miss: the task recomputes and writes a clean file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from prefect.cache_policies import TASK_SOURCE, CacheKeyFnPolicy, CachePolicy, CompoundCachePolicy
from prefect.context import TaskRunContext
from prefect.serializers import Serializer
from pydantic import Field

from pipeline.provenance import code_version, source_digest
from storage.fingerprint import digest_strings

RESULTS_DIRNAME = "prefect-results"

T = TypeVar("T")

_SCALARS = (str, int, float, bool, type(None))


def _check_small(value: Any, where: str) -> Any:
    """Return ``value`` if it is JSON-able plain data; refuse arrays, tensors and objects."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _check_small(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_check_small(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"cache key parameter {where} has type {type(value).__name__}; keys are built from "
        "small JSON values only (digests, paths, config hashes), never arrays or tensors. "
        "Pass a digest of the content instead."
    )


def config_hash(config: Any) -> str:
    """A 16-hex-digit digest of a configuration: a (frozen) dataclass, a mapping or plain data.

    The hash is over sorted-key JSON, so field order does not matter:

    >>> config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    True
    >>> config_hash({"a": 1}) == config_hash({"a": 2})
    False
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    data = _check_small(config, "config")
    return digest_strings(json.dumps(data, sort_keys=True, separators=(",", ":")))


def content_key(
    task_name: str, inputs: Mapping[str, Any], key_params: Sequence[str], packages: Sequence[str]
) -> str:
    """The content part of a cache key: task name, the named inputs, code version, source digest.

    A key parameter is a parameter's name or ``param.attr``: an attribute of a parameter (a
    task taking a ``flows.dataset.DatasetSpec`` keys on ``spec.annotations_sha``, ``spec.fmt``,
    ``spec.durations``, not on the whole spec). Raises ``KeyError`` naming a key parameter the
    task was not called with.
    """
    picked: dict[str, Any] = {}
    for name in key_params:
        head, _, attr = name.partition(".")
        if head not in inputs or (attr and not hasattr(inputs[head], attr)):
            raise KeyError(
                f"cache key parameter {name!r} is not a parameter of task {task_name!r} "
                f"(it has {sorted(inputs)}); fix the task's content_policy(...)"
            )
        value = getattr(inputs[head], attr) if attr else inputs[head]
        picked[name] = _check_small(value, f"{task_name}.{name}")
    return digest_strings(
        task_name,
        json.dumps(picked, sort_keys=True, separators=(",", ":")),
        code_version(),
        source_digest(packages),
    )


@dataclasses.dataclass
class VettedCachePolicy(CompoundCachePolicy):
    """A compound policy (the same key) that vets the key's result file before the lookup."""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        key = super().compute_key(task_ctx, inputs, flow_parameters, **kwargs)
        storage = getattr(task_ctx.task, "result_storage", None)
        if key is not None and isinstance(storage, (str, os.PathLike)):
            drop_unvetted_result(Path(storage) / key)
        return key


def drop_unvetted_result(path: Path) -> bool:
    """Remove ``path`` if it is not a result record this project wrote; True if removed."""
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return False
    except OSError as exc:
        why: str | None = f"unreadable ({exc.__class__.__name__})"
    else:
        why = vet_result_record(content)
    if why is None:
        return False
    import logging

    logging.getLogger(__name__).warning(
        "ignoring result file %s (%s): a cache miss, the task runs again", path, why
    )
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return True


def content_policy(key_params: Sequence[str], packages: Sequence[str]) -> CachePolicy:
    """A cache policy keyed on the task's source plus :func:`content_key` of ``key_params``.

    ``packages`` are the project packages whose code the task's work runs through,
    e.g. ``("pipeline", "storage")`` for extraction: an edit there changes the key,
    an edit in ``model/`` does not.
    """
    params = tuple(key_params)
    pkgs = tuple(packages)

    def key_fn(ctx: TaskRunContext, inputs: dict[str, Any]) -> str:
        return content_key(ctx.task.name, inputs, params, pkgs)

    key_fn.__name__ = f"content_key[{','.join(params)}]"
    return VettedCachePolicy(policies=[TASK_SOURCE, CacheKeyFnPolicy(cache_key_fn=key_fn)])


RESULT_SERIALIZER_TYPE = "mktn-json"


def _plain(value: Any) -> Any:
    """``json.dumps`` fallback: paths as strings, numpy scalars as numbers; nothing else."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", None) == 0:
        return item()
    raise TypeError(f"task result of type {type(value).__name__} is not plain JSON")


class PlainJSONSerializer(Serializer):  # type: ignore[type-arg]  # Serializer[Any] breaks dispatch
    """Task results as plain JSON: no pickles, no object hooks, no names to import."""

    type: str = Field(default=RESULT_SERIALIZER_TYPE, frozen=True)

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(obj, default=_plain, allow_nan=True).encode("utf-8")

    def loads(self, blob: bytes) -> Any:
        return json.loads(blob.decode("utf-8"))


def vet_result_record(content: bytes) -> str | None:
    """Why ``content`` is not a result record this project wrote (None when it is one)."""
    try:
        record = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return f"not JSON ({exc.__class__.__name__})"
    if not isinstance(record, dict) or not isinstance(record.get("metadata"), dict):
        return "not a result record"
    serializer = record["metadata"].get("serializer")
    if serializer != {"type": RESULT_SERIALIZER_TYPE}:
        return f"serializer {serializer!r} is not {{'type': {RESULT_SERIALIZER_TYPE!r}}}"
    payload = record.get("result")
    if not isinstance(payload, str):
        return "result payload is not a JSON string"
    try:
        json.loads(payload)
    except ValueError:
        return "result payload does not parse as JSON"
    return None


def result_storage(work_dir: str | os.PathLike[str]) -> Path:
    """The local folder where task results (small summaries) persist: ``<work>/prefect-results``."""
    path = Path(work_dir).resolve() / RESULTS_DIRNAME
    path.mkdir(parents=True, exist_ok=True)
    return path


def persisted(task_obj: T, work_dir: str | os.PathLike[str], *, refresh: bool = False) -> T:
    """``task_obj`` with its result persisted under ``work_dir`` and, with ``refresh``, its cache ignored.

    Flows pass ``refresh=True`` when the output a cached result points to is gone
    (a deleted store, a missing checkpoint), so a stale cache entry is never trusted.
    """
    with_options: Callable[..., T] = task_obj.with_options  # type: ignore[attr-defined]
    return with_options(
        persist_result=True,
        result_storage=result_storage(work_dir),
        result_serializer=PlainJSONSerializer(),
        refresh_cache=refresh,
    )
