"""ActivityNet Captions: ``{"v_<ytid>": {"duration", "timestamps": [[s, e], ...], "sentences"}}``.

The same layout serves the official ``train``/``val_1``/``val_2`` files and the
2D-TAN ``train``/``val``/``test`` ones; the split comes from the file name.
Times are seconds; sentences often start with a space (stripped).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.datasets.parsing import read_json_object, to_float
from pipeline.datasets.report import ValidationReport
from pipeline.datasets.validator import RawPair


def parse_activitynet(path: Path, report: ValidationReport) -> Iterator[RawPair]:
    data = read_json_object(path, "activitynet")
    for vid, entry in data.items():
        yield from video_pairs(path, vid, entry, report, fmt="activitynet")


def video_pairs(
    path: Path, vid: str, entry: Any, report: ValidationReport, *, fmt: str
) -> Iterator[RawPair]:
    """Raw pairs of one video entry of an ActivityNet- or TACoS-style JSON file.

    TACoS (``fmt="tacos"``) gives frame numbers and ``fps``/``num_frames``; they are
    converted to seconds and kept in ``extra``.
    """
    base = f"{path}#{vid}"
    if not isinstance(entry, dict):
        report.malformed(
            vid, base, f"the entry of {vid!r} is a {type(entry).__name__}, not an object"
        )
        return
    stamps, sentences = entry.get("timestamps"), entry.get("sentences")
    if (
        not isinstance(stamps, list)
        or not isinstance(sentences, list)
        or len(stamps) != len(sentences)
    ):
        n = max(
            len(stamps) if isinstance(stamps, list) else 1,
            len(sentences) if isinstance(sentences, list) else 1,
        )
        detail = (
            "'timestamps' and 'sentences' must be lists of the same length, got "
            f"{_shape(stamps)} and {_shape(sentences)}"
        )
        for i in range(n):
            report.malformed(vid, f"{base}[{i}]", detail)
        return

    fps: float | None = None
    duration: float | None
    try:
        if fmt == "tacos":
            fps = to_float(entry.get("fps"), "'fps'")
            if not fps > 0:
                raise ValueError(f"'fps' must be > 0, not {fps!r}")
            nf = entry.get("num_frames")
            duration = None if nf is None else to_float(nf, "'num_frames'") / fps
        else:
            d = entry.get("duration")
            duration = None if d is None else to_float(d, "'duration'")
    except ValueError as e:
        for i in range(len(stamps)):
            report.malformed(vid, f"{base}[{i}]", str(e))
        return

    for i, (stamp, sentence) in enumerate(zip(stamps, sentences, strict=True)):
        where = f"{base}[{i}]"
        try:
            if not isinstance(stamp, list | tuple) or len(stamp) != 2:
                raise ValueError(f"timestamp must be [start, end], not {stamp!r}")
            if not isinstance(sentence, str):
                raise ValueError(f"sentence must be a string, not {sentence!r}")
            start, end = to_float(stamp[0], "start"), to_float(stamp[1], "end")
        except ValueError as e:
            report.malformed(vid, where, str(e))
            continue
        extra: dict[str, Any] = {}
        if fps is not None:
            extra = {"fps": fps, "start_frame": start, "end_frame": end}
            if entry.get("num_frames") is not None:
                extra["num_frames"] = entry["num_frames"]
            start, end = start / fps, end / fps
        yield RawPair(vid, sentence, start, end, duration, where, i, extra=extra)


def _shape(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return "missing" if value is None else f"a {type(value).__name__}"
