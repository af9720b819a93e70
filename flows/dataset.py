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
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.datasets import infer_split, parse_split_args
from pipeline.datasets.registry import ANNOTATION_SUFFIXES
from storage.keys import safe_component

MANIFEST = "dataset.json"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: ``name`` (a store key), its videos folder (or published ``features``) and
    annotation files by split."""

    name: str
    videos_dir: str
    annotations: dict[str, str] = field(default_factory=dict)  # split -> file
    format: str = "jsonl"
    durations: str | None = None
    # published features instead of videos (``mktn reproduce --features-from``): ``format``,
    # ``path`` and the import options ``clip_seconds``, ``fps``, ``feature_type``
    features: dict[str, Any] | None = None

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
            videos_dir=str(d["videos_dir"]),
            annotations={str(k): str(v) for k, v in dict(d.get("annotations", {})).items()},
            format=str(d.get("format", "jsonl")),
            durations=None if d.get("durations") is None else str(d["durations"]),
            features=None if d.get("features") is None else dict(d["features"]),
        )


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
