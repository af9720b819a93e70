"""The registry of annotation formats and the functions that load them: ``load_annotations``,
``load_splits``, ``sniff_format``; and the one parser of ``--annotations [SPLIT=]PATH``
values, ``parse_split_arg`` / ``parse_split_args``, which every command and flow calls.

>>> sorted(FORMATS)
['activitynet', 'charades-sta', 'jsonl', 'tacos']
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.datasets.activitynet import parse_activitynet
from pipeline.datasets.charades import parse_charades_sta
from pipeline.datasets.durations import (
    DurationsSource,
    DurationTable,
    find_charades_durations,
    load_durations,
)
from pipeline.datasets.errors import AnnotationFileNotFoundError, DatasetError
from pipeline.datasets.jsonl import parse_jsonl
from pipeline.datasets.parsing import require_file
from pipeline.datasets.records import QueryMoment
from pipeline.datasets.report import ValidationReport
from pipeline.datasets.tacos import parse_tacos
from pipeline.datasets.validator import INVERTED_MODES, Inverted, PairValidator, RawPair
from storage.keys import safe_component

log = logging.getLogger(__name__)

Parser = Callable[[Path, ValidationReport], Iterator[RawPair]]
DurationFinder = Callable[[Path, str | None], DurationTable | None]


@dataclass(frozen=True)
class AnnotationFormat:
    """One annotation format: its parser and, if the file carries no durations, how to find them."""

    name: str
    parse: Parser
    description: str
    suffixes: tuple[str, ...]
    needs_durations: bool = False
    find_durations: DurationFinder | None = None


FORMATS: dict[str, AnnotationFormat] = {
    f.name: f
    for f in (
        AnnotationFormat(
            "charades-sta",
            parse_charades_sta,
            "Charades-STA text: '<vid> <start> <end>##<sentence>'; durations from Charades_v1_*.csv",
            (".txt",),
            needs_durations=True,
            find_durations=find_charades_durations,
        ),
        AnnotationFormat(
            "activitynet",
            parse_activitynet,
            "ActivityNet Captions JSON (official train/val_1/val_2 or 2D-TAN train/val/test)",
            (".json",),
        ),
        AnnotationFormat(
            "tacos",
            parse_tacos,
            "TACoS JSON (2D-TAN): frame-number timestamps with fps and num_frames",
            (".json",),
        ),
        AnnotationFormat(
            "jsonl",
            parse_jsonl,
            "Moment-DETR/Lighthouse JSONL: qid, query, vid, duration, relevant_windows",
            (".jsonl",),
        ),
    )
}


@dataclass
class LoadResult:
    """The records of one or more annotation files and the report of what was fixed or dropped."""

    records: list[QueryMoment]
    report: ValidationReport = field(default_factory=ValidationReport)

    def __len__(self) -> int:
        return len(self.records)

    def by_split(self) -> dict[str, list[QueryMoment]]:
        out: dict[str, list[QueryMoment]] = defaultdict(list)
        for r in self.records:
            out[r.split].append(r)
        return dict(out)

    def by_video(self) -> dict[str, list[QueryMoment]]:
        """Records grouped by video, each video's queries in file order (for multi-pair batches)."""
        out: dict[str, list[QueryMoment]] = defaultdict(list)
        for r in self.records:
            out[r.video_id].append(r)
        return dict(out)


_SPLIT_RE = re.compile(
    r"(?:^|[_\-. ])(train(?:ing)?|val_?1|val_?2|val(?:idation)?|test(?:ing)?)(?=$|[_\-. ])"
)
_SPLIT_NAMES = {
    "training": "train",
    "val1": "val_1",
    "val2": "val_2",
    "validation": "val",
    "testing": "test",
}


def infer_split(path: str | os.PathLike[str]) -> str:
    """The split a file name names, else the file's stem.

    >>> infer_split("charades_sta_train.txt"), infer_split("val_2.json"), infer_split("val.json")
    ('train', 'val_2', 'val')
    >>> infer_split("charades_test_release.jsonl"), infer_split("mine.jsonl")
    ('test', 'mine')
    """
    stem = Path(path).name.lower()
    for suffix in (".jsonl", ".json", ".txt", ".csv"):
        stem = stem.removesuffix(suffix)
    m = _SPLIT_RE.search(stem)
    if m:
        name = m.group(1)
        return _SPLIT_NAMES.get(name, name)
    return re.sub(r"[^A-Za-z0-9_.=,@+-]", "_", Path(path).stem) or "all"


ANNOTATION_SUFFIXES = (".jsonl", ".json", ".txt")


def parse_split_arg(value: str, *, allow_dir: bool = False) -> tuple[str | None, Path]:
    """One ``--annotations`` value -> ``(split, path)``; ``split`` is None for a bare path.

    ``SPLIT=PATH`` names the split. The value is a bare path instead when it exists as
    written, or when a ``/`` comes before its first ``=`` (``runs/lr=0.1/train.jsonl``);
    ``=PATH`` (nothing before the ``=``) names no split. The path must be a file (or, with
    ``allow_dir``, a directory); otherwise one line, an ``AnnotationFileNotFoundError``
    (a ``DatasetError`` and a ``FileNotFoundError``).

    >>> parse_split_arg("dev=no/such.jsonl")
    Traceback (most recent call last):
    pipeline.datasets.errors.AnnotationFileNotFoundError: annotation file 'no/such.jsonl' (from 'dev=no/such.jsonl') \
does not exist; check the path
    """
    split: str | None = None
    path_s = value
    head, sep, tail = value.partition("=")
    if sep and "/" not in head and os.sep not in head and not os.path.exists(value):
        split, path_s = (head or None), tail
    path = Path(path_s)
    if path.is_file() or (allow_dir and path.is_dir()):
        return split, path
    origin = f" (from {value!r})" if path_s != value else ""
    if path.is_dir():
        raise AnnotationFileNotFoundError(
            f"annotation file {path_s!r}{origin} is a directory; name the annotation file inside it")
    what = "annotation file or directory" if allow_dir else "annotation file"
    raise AnnotationFileNotFoundError(f"{what} {path_s!r}{origin} does not exist; check the path")


def parse_split_args(values: Sequence[str], *, expand_dirs: bool = False) -> dict[str, Path]:
    """``--annotations`` values -> ``{split: path}`` (each value parsed by ``parse_split_arg``).

    A bare path's split comes from its name (``infer_split``). With ``expand_dirs`` a value
    may be a directory: every ``*.jsonl``/``*.json``/``*.txt`` in it, each split from its
    name. Two files for one split is a one-line ``DatasetError``.
    """
    out: dict[str, Path] = {}

    def add(split: str, path: Path) -> None:
        if split in out and out[split] != path:
            raise DatasetError(
                f"two annotation files for split {split!r}: {str(out[split])!r} and {str(path)!r}; "
                "name the split of each with SPLIT=PATH"
            )
        out[split] = path

    for value in values:
        split, path = parse_split_arg(value, allow_dir=expand_dirs)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in ANNOTATION_SUFFIXES and p.is_file())
            if not files:
                raise AnnotationFileNotFoundError(
                    f"annotation directory {str(path)!r} holds no .jsonl/.json/.txt file")
            for f in files:
                add(infer_split(f), f)
        else:
            add(split or infer_split(path), path)
    return out


def sniff_format(path: str | os.PathLike[str]) -> str:
    """Guess a file's format from its first bytes; ``DatasetError`` if none fits."""
    p = Path(path)
    require_file(p, "annotation")
    with p.open("rb") as fh:
        head = fh.read(1 << 16).decode("utf-8", errors="replace")
    first = next((ln for ln in head.splitlines() if ln.strip()), "")
    if "##" in first and not first.lstrip().startswith("{"):
        return "charades-sta"
    if first.lstrip().startswith("{"):
        try:
            obj = json.loads(first)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and ("relevant_windows" in obj or "query" in obj):
            return "jsonl"
        if p.suffix.lower() == ".jsonl":
            return "jsonl"
        # a JSON object keyed by video: look at the fields of the first entry
        if '"fps"' in head or '"num_frames"' in head:
            return "tacos"
        if '"timestamps"' in head:
            return "activitynet"
    raise DatasetError(
        f"{p}: cannot tell the annotation format from its content; pass one of "
        f"{', '.join(sorted(FORMATS))} (--format)"
    )


def get_format(fmt: str) -> AnnotationFormat:
    try:
        return FORMATS[fmt]
    except KeyError:
        raise DatasetError(
            f"unknown annotation format {fmt!r}; known formats: {', '.join(sorted(FORMATS))}"
        ) from None


def load_annotations(
    fmt: str | None,
    path: str | os.PathLike[str],
    *,
    durations: DurationsSource | None = None,
    split: str | None = None,
    inverted: Inverted = "drop",
    strict: bool = False,
    seen_query_ids: set[str] | None = None,
) -> LoadResult:
    """Parse and validate one annotation file into ``QueryMoment`` records.

    ``fmt``: a name in ``FORMATS`` (None or ``"auto"``: ``sniff_format``). ``durations``:
    a durations table (CSV/JSON path, mapping, or list of them); when given it is the
    authority for durations and unknown videos are rejected. Charades-STA needs one:
    without it the ``Charades_v1_<split>.csv`` beside the file is used. ``split``:
    the split label (default: from the file name; a JSONL line's ``split`` field wins
    over the file name). ``inverted``: what to do with end < start ("drop" or "swap").
    ``strict``: raise ``DatasetError`` on the first malformed entry instead of counting it.

    Raises ``DatasetError`` for an unknown format, a missing or unreadable file, or a
    file in which no entry could be parsed.
    """
    fmt = sniff_format(path) if fmt in (None, "auto") else fmt
    spec = get_format(fmt)
    if inverted not in INVERTED_MODES:
        raise DatasetError(f"inverted must be 'drop' or 'swap', not {inverted!r}")
    p = Path(path)
    require_file(p, fmt)
    label = split or infer_split(p)
    try:
        safe_component(label, what="split name")  # it is part of generated query ids
    except ValueError as e:
        raise DatasetError(f"{p}: {e}; pass another split=") from None

    table: DurationTable | None = None
    if durations is not None:
        table = load_durations(durations)
    elif spec.find_durations is not None:
        table = spec.find_durations(p, label)
    if spec.needs_durations and table is None:
        raise DatasetError(
            f"{p}: {fmt} files carry no video durations and no Charades_v1_*.csv was found "
            "beside it; pass durations= (--durations) naming the Charades metadata CSV "
            "(Charades_v1_train.csv / Charades_v1_test.csv, column 'length')"
        )

    report = ValidationReport(format=fmt, files=[str(p)], inverted=inverted)
    if table is not None:
        report.durations_sources.extend(table.sources)
    validate = PairValidator(
        report,
        split=label,
        durations=table,
        inverted=inverted,
        seen_query_ids=seen_query_ids,
        split_from_entries=split is None,
    )
    records = [rec for raw in spec.parse(p, report) if (rec := validate(raw)) is not None]

    malformed = report.find("malformed")
    if malformed and (strict or not records):
        first = malformed[0]
        why = (
            "strict mode"
            if strict
            else f"no entry could be parsed as {fmt}; is the format right (--format)?"
        )
        raise DatasetError(f"{first.where}: {first.detail} ({why}; {len(malformed)} malformed)")
    if report.pairs_read == 0:
        raise DatasetError(f"{p}: holds no annotation entries; is it the right file?")
    # drops are worth a warning; clipped ends (common in every benchmark) are not
    (log.warning if report.rejected else log.info)(
        "%s (%s, split %s): %s", p, fmt, label, report.summary()
    )
    return LoadResult(records, report)


def load_splits(
    fmt: str | None,
    paths: Mapping[str, str | os.PathLike[str]],
    *,
    durations: DurationsSource | None = None,
    inverted: Inverted = "drop",
    strict: bool = False,
) -> LoadResult:
    """Load a whole dataset: ``{"train": path, "val": path, ...}`` -> all records, merged report.

    Each file's records get its key as their split; query ids are checked for
    uniqueness across all files (a repeat is rejected as ``duplicate_query_id``).

    ``durations`` applies to every file; for Charades-STA each file otherwise finds
    its own ``Charades_v1_<split>.csv`` beside it.
    """
    if not paths:
        raise DatasetError("load_splits needs at least one {split: path} entry")
    seen: set[str] = set()
    records: list[QueryMoment] = []
    report = ValidationReport()
    for name, path in paths.items():
        res = load_annotations(
            fmt,
            path,
            durations=durations,
            split=name,
            inverted=inverted,
            strict=strict,
            seen_query_ids=seen,
        )
        records.extend(res.records)
        report.merge(res.report)
    return LoadResult(records, report)
