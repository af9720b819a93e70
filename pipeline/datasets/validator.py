"""Turns the raw pairs every parser yields into ``QueryMoment`` records, or counted rejections.

Parsers only read syntax; every rule about times, durations and ids lives here,
once, so all formats are validated alike. Checks, in order (docs/datasets.md):

1. rejections that make the times meaningless: ``bad_video_id``, ``empty_sentence``,
   ``unknown_video``, ``bad_duration``, ``non_finite_time``, ``negative_time``;
2. ``end_past_duration`` (fix-up: clip; checked on the raw end, so the count equals
   a plain count over the file);
3. ``end_before_start``: rejected, or swapped with ``inverted="swap"`` (then clipped);
4. ``zero_length``, then ``start_past_duration`` (rejections);
5. ``duplicate_query_id`` (rejection).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.datasets.durations import DurationTable
from pipeline.datasets.records import QueryMoment
from pipeline.datasets.report import ValidationReport
from storage.keys import safe_component

Inverted = Literal["drop", "swap"]
INVERTED_MODES: tuple[str, ...] = ("drop", "swap")

# Ends within this many seconds past the duration are float noise in the sources
# (ActivityNet has 55.150000000000006 for a 55.15 s video): clamped, not counted.
END_TOLERANCE_S = 1e-6


@dataclass
class RawPair:
    """One entry as a parser read it, before any rule is applied."""

    video_id: str
    sentence: str
    start: float
    end: float
    duration: float | None  # the file's own duration; None when the format has none
    where: str  # "file:line" or "file#video[index]"
    index: int  # position among this video's entries in this file (stable query ids)
    query_id: str | None = None  # the source's own id (JSONL ``qid``)
    split: str | None = None  # the source's own split field (JSONL ``split``)
    windows: list[tuple[float, float]] | None = None  # all windows (JSONL), target first
    extra: dict[str, Any] = field(default_factory=dict)


def make_query_id(split: str, video_id: str, index: int) -> str:
    """The id of a pair whose source has none: ``<split>.<video_id>.<index>``.

    ``index`` counts the video's entries in file order, rejected ones included, so
    dropping a bad line never renumbers the others. Only characters that
    ``storage.keys.safe_component`` accepts are used.

    >>> make_query_id("train", "AO8RW", 0)
    'train.AO8RW.0'
    """
    return f"{split}.{video_id}.{index}"


class PairValidator:
    """Applies the rules to raw pairs of one file, recording every issue in ``report``."""

    def __init__(
        self,
        report: ValidationReport,
        *,
        split: str,
        durations: DurationTable | None = None,
        inverted: Inverted = "drop",
        seen_query_ids: set[str] | None = None,
        split_from_entries: bool = True,
    ) -> None:
        if inverted not in INVERTED_MODES:
            raise ValueError(f"inverted must be 'drop' or 'swap', not {inverted!r}")
        self.report = report
        self.split = split
        self.durations = durations
        self.inverted = inverted
        self.seen = seen_query_ids if seen_query_ids is not None else set()
        # an entry's own split field (JSONL ``split``) wins over an inferred split,
        # but not over one the caller named explicitly
        self.split_from_entries = split_from_entries
        self._vid_checked: dict[str, str | None] = {}  # video id -> why it is unsafe, or None

    def __call__(self, raw: RawPair) -> QueryMoment | None:
        rep = self.report
        rep.pairs_read += 1
        vid, where = raw.video_id, raw.where
        rep.videos_read.add(vid)

        if vid not in self._vid_checked:
            try:
                safe_component(vid, what="video id")
                self._vid_checked[vid] = None
            except ValueError as e:
                self._vid_checked[vid] = f"{e}; rename the video"
        if (bad_vid := self._vid_checked[vid]) is not None:
            rep.reject("bad_video_id", vid, where, bad_vid)
            return None
        sentence = raw.sentence.strip()
        if not sentence:
            rep.reject(
                "empty_sentence", vid, where, "the sentence is empty; fix or delete the entry"
            )
            return None

        duration = raw.duration
        if self.durations is not None:
            if vid not in self.durations:
                rep.reject(
                    "unknown_video",
                    vid,
                    where,
                    f"video {vid!r} is not in the durations table "
                    f"({', '.join(self.durations.sources)}); add it there or drop the entry",
                )
                return None
            duration, dur_where = self.durations.lookup(vid)
        else:
            dur_where = where
        if duration is None or not math.isfinite(duration) or duration <= 0:
            rep.reject(
                "bad_duration",
                vid,
                where,
                f"duration {duration!r} (from {dur_where}) is not a positive number",
            )
            return None

        start, end = raw.start, raw.end
        if not (math.isfinite(start) and math.isfinite(end)):
            rep.reject("non_finite_time", vid, where, f"start {start!r}, end {end!r}")
            return None
        if start < 0 or end < 0:
            rep.reject("negative_time", vid, where, f"start {start!r}, end {end!r} (must be >= 0)")
            return None

        if end > duration + END_TOLERANCE_S:
            rep.fixup(
                "end_past_duration",
                vid,
                where,
                f"end {end:g} > duration {duration:g} (by {end - duration:.3g} s): clipped",
            )
        if end < start:
            if self.inverted == "drop":
                rep.reject(
                    "end_before_start",
                    vid,
                    where,
                    f"end {end:g} < start {start:g}: dropped (inverted='swap' would swap them)",
                )
                return None
            rep.fixup("end_before_start", vid, where, f"end {end:g} < start {start:g}: swapped")
            start, end = end, start
        end = min(end, duration)
        if end == start:
            rep.reject("zero_length", vid, where, f"start == end == {start:g}: an empty moment")
            return None
        if start >= duration:
            rep.reject(
                "start_past_duration",
                vid,
                where,
                f"start {start:g} >= duration {duration:g}: the moment lies outside the video",
            )
            return None

        split = (raw.split if self.split_from_entries else None) or self.split
        query_id = (
            raw.query_id if raw.query_id is not None else make_query_id(split, vid, raw.index)
        )
        if query_id in self.seen:
            rep.reject(
                "duplicate_query_id",
                vid,
                where,
                f"query id {query_id!r} was already used earlier in this dataset",
            )
            return None
        self.seen.add(query_id)

        extra = dict(raw.extra)
        if raw.windows is not None:
            extra["windows"] = self._windows(raw, (start, end), duration)

        rep.pairs_kept += 1
        rep.videos_kept.add(vid)
        return QueryMoment(
            query_id=query_id,
            video_id=vid,
            sentence=sentence,
            start=float(start),
            end=float(end),
            duration=float(duration),
            split=split,
            source=where,
            extra=extra,
        )

    def _windows(
        self, raw: RawPair, target: tuple[float, float], duration: float
    ) -> list[list[float]]:
        """All windows of a multi-window entry: the validated target first, then the others."""
        assert raw.windows is not None
        out = [[float(target[0]), float(target[1])]]
        if len(raw.windows) > 1:
            self.report.fixup(
                "multiple_windows",
                raw.video_id,
                raw.where,
                f"{len(raw.windows)} windows: the first is the target, all kept in extra['windows']",
            )
        for k, (s, e) in enumerate(raw.windows[1:], start=1):
            if self.inverted == "swap" and e < s:
                s, e = e, s
            e = min(e, duration)
            if not (math.isfinite(s) and math.isfinite(e)) or s < 0 or e <= s or s >= duration:
                self.report.fixup(
                    "window_dropped",
                    raw.video_id,
                    raw.where,
                    f"window {k} [{s:g}, {e:g}] is invalid for duration {duration:g}: removed",
                )
                continue
            out.append([float(s), float(e)])
        return out
