"""What the flows call a dataset: a videos folder, annotation files per split, their format.

A *dataset directory* (what ``mktn synth`` writes, and what ``re-evaluate``
scans a root for) looks like::

    <name>/videos/<video_id>.mp4 ...
    <name>/annotations/{train,val,test}.jsonl      (or .json / .txt)
    <name>/dataset.json                            (optional)

``dataset.json`` may name the ``format`` (default ``jsonl``), the
``annotations`` per split (paths relative to the directory), a
``durations`` file (Charades CSV / JSON) and ``videos`` (a relative folder).
Without it, each file's split comes from its name (``pipeline.datasets.infer_split``).

Inside the flows a dataset travels as one :class:`DatasetSpec`, never as the loose
``(annotations, format, durations)`` triple: the flows' public parameters (what
deployments and ``prefect deployment run`` pass) are converted at the flow boundary
(:meth:`DatasetSpec.from_flow_params`), the flow stamps the annotation files' digest on it
(:meth:`DatasetSpec.with_digests`) and every task takes the spec. :meth:`DatasetSpec.load`
parses the annotations once per process and content (a run's validate, embed, train,
evaluate, baseline and report tasks share one parse).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.datasets import infer_split, parse_split_args
from pipeline.datasets.registry import ANNOTATION_SUFFIXES
from storage.keys import safe_component

MANIFEST = "dataset.json"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: ``name`` (a store key), its videos folder (or published ``features``) and
    annotation files by split, their ``format`` (``"auto"``/``""``: sniffed per file) and an
    optional ``durations`` file.

    ``videos_dir`` is empty for a dataset known only by its annotations (the embed, train and
    evaluate flows). ``annotations_sha`` is set by the flows (:meth:`with_digests`), not by users:
    the content digest of the annotation files, which keys the tasks' caches and the one parse
    per run (:meth:`load`); it is not part of :meth:`to_dict`.
    """

    name: str
    videos_dir: str = ""
    annotations: dict[str, str] = field(default_factory=dict)  # split -> file
    format: str = "jsonl"
    durations: str | None = None
    # published features instead of videos (``mktn reproduce --features-from``): ``format``,
    # ``path`` and the import options ``clip_seconds``, ``fps``, ``feature_type``
    features: dict[str, Any] | None = None
    annotations_sha: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        safe_component(self.name, what="dataset name")
        for split in self.annotations:
            safe_component(split, what=f"split name of dataset {self.name!r}")

    def eval_split(self) -> str:
        """The split to report on: ``test``, else ``val``/``val_2``/``val_1``; error if none."""
        for split in ("test", "val_2", "val", "val_1"):
            if split in self.annotations:
                return split
        raise ValueError(
            f"dataset {self.name!r} has no test or val annotations (it has {sorted(self.annotations)}); "
            "give test=PATH to --annotations"
        )

    @property
    def fmt(self) -> str | None:
        """The annotation format for ``pipeline.datasets`` (``None``: sniff each file)."""
        return None if self.format in ("auto", "") else self.format

    def files(self) -> list[str]:
        """The annotation files, sorted, each once."""
        return sorted(set(self.annotations.values()))

    @classmethod
    def from_flow_params(cls, annotations: dict[str, str], dataset: str, format: str | None = None,
                         durations: str | None = None) -> DatasetSpec:
        """The spec of a flow's public parameters (``annotations``, ``dataset``, ``format``,
        ``durations``): the one conversion at the flow boundary."""
        return cls(name=dataset, annotations={str(k): str(v) for k, v in dict(annotations).items()},
                   format=format or "auto", durations=durations)

    def flow_params(self) -> dict[str, Any]:
        """The inverse of :meth:`from_flow_params`: the parameters a sub-flow is called with."""
        return {"annotations": dict(self.annotations), "dataset": self.name, "format": self.fmt,
                "durations": self.durations}

    def with_digests(self, digests: dict[str, str]) -> DatasetSpec:
        """This spec with ``annotations_sha`` set from the files' sha256 (``{path: sha256}``, the
        flow's fingerprint index): :func:`annotations_digest`."""
        return replace(self, annotations_sha=annotations_digest(digests, self.annotations))

    def load(self) -> Any:
        """``pipeline.datasets.load_splits`` of the annotations (a malformed line is counted, not
        fatal), parsed once per process for the same content (:func:`load_annotations`)."""
        return load_annotations(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "videos_dir": self.videos_dir,
            "annotations": dict(self.annotations),
            "format": self.format,
            "durations": self.durations,
            "features": None if self.features is None else dict(self.features),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetSpec:
        return cls(
            name=str(d["name"]),
            videos_dir=str(d.get("videos_dir") or ""),
            annotations={str(k): str(v) for k, v in dict(d.get("annotations", {})).items()},
            format=str(d.get("format", "jsonl")),
            durations=None if d.get("durations") is None else str(d["durations"]),
            features=None if d.get("features") is None else dict(d["features"]),
        )


def annotations_digest(digests: dict[str, str], annotations: dict[str, str]) -> str:
    """One digest over ``split:sha256`` of every annotation file (names of files do not matter)."""
    from storage.fingerprint import digest_strings

    return digest_strings(*sorted(f"{split}:{digests[path]}" for split, path in annotations.items()))


# parsed annotations of this process, by content: the tasks of one run (validate, embed, train,
# evaluate, the baseline, the report) share one parse; a few datasets at most (re-evaluate)
_PARSED: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_PARSED_MAX = 4
_PARSE_LOCK = threading.Lock()


def _parse_key(spec: DatasetSpec) -> tuple[Any, ...] | None:
    """What a parse depends on: the files' content digest, their paths and splits, the format and
    the durations file (by path and stat: it is not in the digest). ``None`` without a digest."""
    if spec.annotations_sha is None:
        return None
    dur: tuple[Any, ...] = ()
    if spec.durations is not None:
        try:
            st = os.stat(spec.durations)
            dur = (spec.durations, st.st_size, st.st_mtime_ns)
        except OSError:
            dur = (spec.durations,)
    return (spec.annotations_sha, tuple(sorted(spec.annotations.items())), spec.fmt, dur)


def load_annotations(spec: DatasetSpec) -> Any:
    """The ``LoadResult`` of ``spec``'s annotations: parsed on the first call, then, while the
    files' digest (``spec.annotations_sha``) and the durations file are the same, the same parse
    (a fresh list of the frozen records each call). A spec without a digest is parsed every call."""
    from pipeline.datasets import LoadResult, load_splits

    key = _parse_key(spec)
    if key is None:
        return load_splits(spec.fmt, spec.annotations, durations=spec.durations)
    with _PARSE_LOCK:  # concurrent tasks of one run wait for the first parse, not parse again
        res = _PARSED.get(key)
        if res is None:
            res = load_splits(spec.fmt, spec.annotations, durations=spec.durations)
            _PARSED[key] = res
            while len(_PARSED) > _PARSED_MAX:
                _PARSED.popitem(last=False)
        else:
            _PARSED.move_to_end(key)
            logger.debug("annotations of %s: parsed once this run, reused", spec.name)
    return LoadResult(list(res.records), res.report)


def parse_annotation_args(values: list[str]) -> dict[str, str]:
    """``["train=a.txt", "b_test.txt"]`` -> ``{"train": ".../a.txt", "test": ".../b_test.txt"}``.

    Parsed by ``pipeline.datasets.parse_split_args`` (a bare path's split comes from its name;
    a missing file or a split named twice is a one-line ``DatasetError``, a ``ValueError``);
    the paths are made absolute.
    """
    return {split: str(path.resolve()) for split, path in parse_split_args(values).items()}


def discover(directory: str | os.PathLike[str], name: str | None = None) -> DatasetSpec:
    """Read a dataset directory (see module docstring) into a :class:`DatasetSpec`."""
    root = Path(directory).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {str(root)!r} does not exist")
    manifest: dict[str, Any] = {}
    mpath = root / MANIFEST
    if mpath.is_file():
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{mpath}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    videos = root / str(manifest.get("videos", "videos"))
    annotations: dict[str, str] = {}
    if "annotations" in manifest:
        for split, rel in dict(manifest["annotations"]).items():
            annotations[str(split)] = str((root / str(rel)).resolve())
    else:
        adir = root / "annotations"
        files = sorted(p for p in adir.iterdir() if p.suffix in ANNOTATION_SUFFIXES) if adir.is_dir() else []
        for p in files:
            split = infer_split(p)
            if split in annotations:
                raise ValueError(
                    f"dataset {str(root)!r}: two annotation files for split {split!r} "
                    f"({annotations[split]!r}, {str(p)!r}); name them in {MANIFEST}"
                )
            annotations[split] = str(p)
    durations = manifest.get("durations")
    return DatasetSpec(
        name=name or str(manifest.get("name", root.name)),
        videos_dir=str(videos),
        annotations=annotations,
        format=str(manifest.get("format", "jsonl")),
        durations=None if durations is None else str((root / str(durations)).resolve()),
    )


def scan_root(root: str | os.PathLike[str]) -> list[DatasetSpec]:
    """Every dataset directory directly under ``root`` (those with a ``videos`` folder or manifest)."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"datasets root {str(base)!r} does not exist")
    specs = []
    for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (d / MANIFEST).is_file() or (d / "videos").is_dir():
            specs.append(discover(d))
    return specs
