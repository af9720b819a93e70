"""Moment-DETR / Lighthouse JSONL: one JSON object per line.

``{"qid": 12404, "query": "...", "vid": "3MSZA", "duration": 30.96,
"relevant_windows": [[24.3, 30.4]]}``; an optional ``split`` field is honoured
(an explicit ``split=`` argument wins). The file may lack a trailing newline.

A line with several relevant windows becomes ONE record whose target moment is
the first window; all windows (validated, target first) are kept in
``extra["windows"]`` for evaluation, and the line is counted as the fix-up
``multiple_windows``. Every other field of the line (``relevant_clip_ids``,
``saliency_scores``, ...) is kept in ``extra`` under its own name.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.datasets.parsing import iter_lines, to_float
from pipeline.datasets.report import ValidationReport
from pipeline.datasets.validator import RawPair
from storage.keys import safe_component

KNOWN_FIELDS = ("qid", "query", "vid", "duration", "relevant_windows", "split")
REQUIRED_FIELDS = ("query", "vid", "relevant_windows")


def parse_jsonl(path: Path, report: ValidationReport) -> Iterator[RawPair]:
    per_video: defaultdict[str, int] = defaultdict(int)
    for lineno, line in iter_lines(path):
        where = f"{path}:{lineno}"
        if line is None:
            report.malformed("", where, "the line is not UTF-8 text")
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            report.malformed("", where, f"not valid JSON at column {e.colno} ({e.msg})")
            continue
        if not isinstance(obj, dict):
            report.malformed("", where, f"a line must be a JSON object, not {type(obj).__name__}")
            continue
        raw_vid = obj.get("vid")
        vid = (
            str(raw_vid) if isinstance(raw_vid, str | int) and not isinstance(raw_vid, bool) else ""
        )
        try:
            pair = _pair(obj, vid, where, per_video)
        except ValueError as e:
            report.malformed(vid, where, str(e))
            continue
        if pair is None:
            report.pairs_read += 1
            report.videos_read.add(vid)
            report.reject("no_window", vid, where, "'relevant_windows' is empty: nothing to ground")
            continue
        yield pair


def _pair(
    obj: dict[str, Any], vid: str, where: str, per_video: defaultdict[str, int]
) -> RawPair | None:
    missing = [k for k in REQUIRED_FIELDS if k not in obj]
    if missing:
        raise ValueError(
            f"missing field(s) {', '.join(map(repr, missing))}; a line needs {REQUIRED_FIELDS}"
        )
    if not vid:
        raise ValueError(f"'vid' must be a string, not {obj['vid']!r}")
    query = obj["query"]
    if not isinstance(query, str):
        raise ValueError(f"'query' must be a string, not {query!r}")
    qid = obj.get("qid")
    if qid is not None and (isinstance(qid, bool) or not isinstance(qid, str | int)):
        raise ValueError(f"'qid' must be a string or an integer, not {qid!r}")
    split = obj.get("split")
    if split is not None:
        if not isinstance(split, str):
            raise ValueError(f"'split' must be a string, not {split!r}")
        safe_component(split, what="'split'")  # its ValueError names the value
    duration = None if obj.get("duration") is None else to_float(obj["duration"], "'duration'")
    wins = obj["relevant_windows"]
    if not isinstance(wins, list):
        raise ValueError(f"'relevant_windows' must be a list of [start, end], not {wins!r}")
    windows: list[tuple[float, float]] = []
    for w in wins:
        if not isinstance(w, list | tuple) or len(w) != 2:
            raise ValueError(f"a relevant window must be [start, end], not {w!r}")
        windows.append((to_float(w[0], "window start"), to_float(w[1], "window end")))
    index = per_video[vid]
    per_video[vid] += 1
    if not windows:
        return None
    extra = {k: v for k, v in obj.items() if k not in KNOWN_FIELDS}
    return RawPair(
        video_id=vid,
        sentence=query,
        start=windows[0][0],
        end=windows[0][1],
        duration=duration,
        where=where,
        index=index,
        query_id=None if qid is None else str(qid),
        split=split,
        windows=windows,
        extra=extra,
    )
