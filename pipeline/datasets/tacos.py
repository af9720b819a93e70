"""TACoS (2D-TAN version): ``{"s30-d52.avi": {"timestamps": [[f0, f1], ...], "sentences", "fps",
"num_frames"}}``. Timestamps are frame numbers: seconds = frame / fps; duration = num_frames / fps.

The frame numbers, ``fps`` and ``num_frames`` are kept in each record's ``extra``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipeline.datasets.activitynet import video_pairs
from pipeline.datasets.parsing import read_json_object
from pipeline.datasets.report import ValidationReport
from pipeline.datasets.validator import RawPair


def parse_tacos(path: Path, report: ValidationReport) -> Iterator[RawPair]:
    data = read_json_object(path, "tacos")
    for vid, entry in data.items():
        yield from video_pairs(path, vid, entry, report, fmt="tacos")
