"""Video durations tables: the Charades ``Charades_v1_*.csv`` ``length`` column, or any id -> seconds.

A table is the authority for a dataset's durations when given: every pair's
video must be in it (otherwise the pair is rejected as ``unknown_video``) and
its duration replaces the annotation file's own. A row whose duration cannot be
read is kept as NaN with its ``file:line``, so the pairs of that video are
rejected as ``bad_duration`` naming the row, and the rest of the table still loads.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from pipeline.datasets.errors import AnnotationFileNotFoundError, DatasetError

ID_COLUMNS = ("id", "video_id", "vid", "video")
DURATION_COLUMNS = ("length", "duration")


@dataclass(frozen=True)
class DurationTable:
    """Video id -> duration in seconds, with where each value came from."""

    seconds: Mapping[str, float]
    where: Mapping[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def __contains__(self, video_id: object) -> bool:
        return video_id in self.seconds

    def __len__(self) -> int:
        return len(self.seconds)

    def lookup(self, video_id: str) -> tuple[float, str]:
        """(duration, where) of a video; raises ``KeyError`` when it is not in the table."""
        return self.seconds[video_id], self.where.get(video_id, ",".join(self.sources))

    @classmethod
    def merged(cls, tables: Iterable[DurationTable]) -> DurationTable:
        seconds: dict[str, float] = {}
        where: dict[str, str] = {}
        sources: list[str] = []
        for t in tables:
            seconds.update(t.seconds)
            where.update(t.where)
            sources.extend(s for s in t.sources if s not in sources)
        return cls(seconds, where, tuple(sources))


def _to_seconds(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def read_durations_csv(path: str | os.PathLike[str]) -> DurationTable:
    """Read a CSV with an id column (``id``/``video_id``/``vid``) and ``length`` or ``duration``."""
    p = Path(path)
    if not p.is_file():
        raise AnnotationFileNotFoundError(
            f"durations file {str(p)!r} does not exist; pass the Charades metadata CSV "
            "(Charades_v1_train.csv / Charades_v1_test.csv from the Charades release) "
            "or any CSV with columns id,length"
        )
    seconds: dict[str, float] = {}
    where: dict[str, str] = {}
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        id_col = next((c for c in ID_COLUMNS if c in header), None)
        dur_col = next((c for c in DURATION_COLUMNS if c in header), None)
        if id_col is None or dur_col is None:
            raise DatasetError(
                f"{p}:1: durations CSV needs an id column ({'/'.join(ID_COLUMNS)}) and a "
                f"duration column ({'/'.join(DURATION_COLUMNS)}); its header is {header}"
            )
        for row in reader:
            vid = (row.get(id_col) or "").strip()
            if not vid:
                continue
            # reader.line_num is the physical line the row ended on (quoted fields may span lines)
            seconds[vid] = _to_seconds(row.get(dur_col))
            where[vid] = f"{p}:{reader.line_num}"
    return DurationTable(seconds, where, (str(p),))


def read_durations_json(path: str | os.PathLike[str]) -> DurationTable:
    """Read ``{"<video_id>": seconds}`` or ``{"<video_id>": {"duration": seconds, ...}}``."""
    p = Path(path)
    if not p.is_file():
        raise AnnotationFileNotFoundError(f"durations file {str(p)!r} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{p}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{p}: a JSON durations file must be an object id -> seconds")
    seconds = {
        str(k): _to_seconds(v.get("duration") if isinstance(v, dict) else v)
        for k, v in data.items()
    }
    return DurationTable(seconds, {k: f"{p}#{k}" for k in seconds}, (str(p),))


DurationsSource: TypeAlias = "str | os.PathLike[str] | Mapping[str, float] | DurationTable | Sequence[str | os.PathLike[str]]"


def load_durations(src: DurationsSource) -> DurationTable:
    """A ``DurationTable`` from a CSV/JSON path, a mapping, a table, or a list of these (merged)."""
    if isinstance(src, DurationTable):
        return src
    if isinstance(src, Mapping):
        seconds = {str(k): _to_seconds(v) for k, v in src.items()}
        return DurationTable(seconds, {k: f"<mapping>#{k}" for k in seconds}, ("<mapping>",))
    if isinstance(src, str | os.PathLike):
        p = Path(src)
        if p.suffix.lower() == ".json":
            return read_durations_json(p)
        return read_durations_csv(p)
    if isinstance(src, Iterable):
        return DurationTable.merged(load_durations(s) for s in src)
    raise TypeError(
        f"durations must be a path, a mapping or a list of them, not {type(src).__name__}"
    )


def find_charades_durations(annotation: Path, split: str | None) -> DurationTable | None:
    """The Charades metadata CSV beside a Charades-STA file, by the release's names.

    ``charades_sta_train.txt`` -> ``Charades_v1_train.csv`` (likewise ``test``); when the
    split's own CSV is absent, every ``Charades_v1_*.csv`` beside it, merged. None if none.
    """
    folder = annotation.resolve().parent
    if split:
        for name in (f"Charades_v1_{split}.csv", f"charades_v1_{split}.csv"):
            if (folder / name).is_file():
                return read_durations_csv(folder / name)
    found = sorted(p for p in folder.glob("*.csv") if p.name.lower().startswith("charades_v1_"))
    if not found:
        return None
    return DurationTable.merged(read_durations_csv(p) for p in found)
