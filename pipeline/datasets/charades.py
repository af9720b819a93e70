"""Charades-STA: ``<video_id> <start_s> <end_s>##<sentence>`` per line, durations from a CSV.

The text file has no durations; they come from the Charades metadata CSV
(``Charades_v1_{train,test}.csv``, column ``length``), given explicitly or found
beside the annotation file (``durations.find_charades_durations``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from pipeline.datasets.parsing import iter_lines
from pipeline.datasets.report import ValidationReport
from pipeline.datasets.validator import RawPair


def parse_charades_sta(path: Path, report: ValidationReport) -> Iterator[RawPair]:
    """Raw pairs of a Charades-STA text file; unparsable lines are recorded as ``malformed``."""
    per_video: defaultdict[str, int] = defaultdict(int)
    for lineno, line in iter_lines(path):
        where = f"{path}:{lineno}"
        if line is None:
            report.malformed("", where, "the line is not UTF-8 text")
            continue
        if not line.strip():
            continue  # blank lines (e.g. a trailing one) are not entries
        head, sep, sentence = line.partition("##")
        fields = head.split()
        vid = fields[0] if fields else ""
        if not sep or len(fields) != 3:
            report.malformed(
                vid,
                where,
                f"expected '<video_id> <start> <end>##<sentence>', got {line[:80]!r}",
            )
            continue
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError:
            report.malformed(vid, where, f"start/end {fields[1]!r} {fields[2]!r} are not numbers")
            continue
        index = per_video[vid]
        per_video[vid] += 1
        yield RawPair(vid, sentence, start, end, None, where, index)
