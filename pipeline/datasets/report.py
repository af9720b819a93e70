"""The validation report: every fix-up and rejection, counted per reason, with video id and place.

A *fix-up* changes an entry and keeps it (an end past the video's duration is
clipped); a *rejection* drops the entry. Each has a reason name (the keys of
``FIXUP_REASONS`` and ``REJECTION_REASONS``, documented in docs/datasets.md),
the video id, and where the entry is: ``file:line`` for line-based files,
``file#<video_id>[<index>]`` for JSON files keyed by video.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

FIXUP_REASONS: dict[str, str] = {
    "end_past_duration": "end time after the video's duration: clipped to the duration",
    "end_before_start": "end < start with inverted='swap': start and end swapped",
    "multiple_windows": "JSONL entry with several relevant windows: the first is the target, "
    "all are kept in extra['windows']",
    "window_dropped": "an invalid extra JSONL window (not the target) removed from extra['windows']",
}

REJECTION_REASONS: dict[str, str] = {
    "malformed": "the line or entry cannot be parsed (syntax, missing field, wrong type)",
    "empty_sentence": "the sentence is empty or only whitespace",
    "non_finite_time": "start or end is NaN or infinite",
    "negative_time": "start or end is negative",
    "unknown_video": "the video id is not in the durations table",
    "bad_duration": "the video's duration is missing, NaN, infinite or <= 0",
    "bad_video_id": "the video id cannot be a store key (contains '/', '..' or odd characters)",
    "end_before_start": "end < start with inverted='drop' (the default)",
    "zero_length": "end == start: an empty moment (dropped in both inverted modes)",
    "start_past_duration": "start at or after the video's end, even after clipping/swapping",
    "no_window": "JSONL entry with an empty relevant_windows list",
    "duplicate_query_id": "a query id already used earlier in the dataset",
}


@dataclass(frozen=True)
class ValidationIssue:
    """One fix-up or rejection of one entry."""

    reason: str
    kind: str  # "fixup" or "rejection"
    video_id: str
    where: str  # "file:line" or "file#video[index]"
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.kind} {self.reason} (video {self.video_id!r}): {self.detail}"


@dataclass
class ValidationReport:
    """What loading one or more annotation files found.

    ``pairs_read`` counts every entry in the files (kept, rejected and malformed
    alike); ``pairs_kept`` the records returned. A fix-up is counted for every
    entry that needed it, including one that a later check dropped, so fix-up
    counts equal a plain count over the file; every dropped entry has exactly one
    rejection, so ``pairs_read == pairs_kept + rejected``.
    """

    format: str = ""
    files: list[str] = field(default_factory=list)
    durations_sources: list[str] = field(default_factory=list)
    inverted: str = "drop"
    pairs_read: int = 0
    pairs_kept: int = 0
    videos_read: set[str] = field(default_factory=set)
    videos_kept: set[str] = field(default_factory=set)
    issues: list[ValidationIssue] = field(default_factory=list)

    # -- recording -----------------------------------------------------------------
    def fixup(self, reason: str, video_id: str, where: str, detail: str) -> None:
        assert reason in FIXUP_REASONS, reason
        self.issues.append(ValidationIssue(reason, "fixup", video_id, where, detail))

    def reject(self, reason: str, video_id: str, where: str, detail: str) -> None:
        assert reason in REJECTION_REASONS, reason
        self.issues.append(ValidationIssue(reason, "rejection", video_id, where, detail))

    def malformed(self, video_id: str, where: str, detail: str) -> None:
        """An entry that could not be parsed: counted as read and rejected."""
        self.pairs_read += 1
        if video_id:
            self.videos_read.add(video_id)
        self.reject("malformed", video_id, where, detail)

    # -- reading -------------------------------------------------------------------
    @property
    def fixups(self) -> dict[str, int]:
        return dict(Counter(i.reason for i in self.issues if i.kind == "fixup"))

    @property
    def rejections(self) -> dict[str, int]:
        return dict(Counter(i.reason for i in self.issues if i.kind == "rejection"))

    @property
    def rejected(self) -> int:
        return sum(1 for i in self.issues if i.kind == "rejection")

    def count(self, reason: str, kind: str | None = None) -> int:
        return sum(
            1 for i in self.issues if i.reason == reason and (kind is None or i.kind == kind)
        )

    def find(self, reason: str, kind: str | None = None) -> list[ValidationIssue]:
        return [i for i in self.issues if i.reason == reason and (kind is None or i.kind == kind)]

    def merge(self, other: ValidationReport) -> None:
        """Add another file's report to this one (used by ``load_splits``)."""
        self.format = self.format or other.format
        self.files.extend(f for f in other.files if f not in self.files)
        self.durations_sources.extend(
            d for d in other.durations_sources if d not in self.durations_sources
        )
        self.inverted = other.inverted
        self.pairs_read += other.pairs_read
        self.pairs_kept += other.pairs_kept
        self.videos_read |= other.videos_read
        self.videos_kept |= other.videos_kept
        self.issues.extend(other.issues)

    def to_dict(self, max_issues_per_reason: int | None = None) -> dict[str, Any]:
        """JSON-ready summary; ``max_issues_per_reason`` caps the listed issues (None: all)."""
        listed: list[dict[str, Any]] = []
        seen: Counter[tuple[str, str]] = Counter()
        for issue in self.issues:
            key = (issue.kind, issue.reason)
            seen[key] += 1
            if max_issues_per_reason is None or seen[key] <= max_issues_per_reason:
                listed.append(asdict(issue))
        return {
            "format": self.format,
            "files": list(self.files),
            "durations": list(self.durations_sources),
            "inverted": self.inverted,
            "pairs": {"read": self.pairs_read, "kept": self.pairs_kept, "rejected": self.rejected},
            "videos": {"read": len(self.videos_read), "kept": len(self.videos_kept)},
            "fixups": dict(sorted(self.fixups.items())),
            "rejections": dict(sorted(self.rejections.items())),
            "issues": listed,
            "issues_listed": len(listed),
            "issues_total": len(self.issues),
        }

    def summary(self) -> str:
        """One line for logs: pairs, videos, fix-ups and rejections."""
        fx = ", ".join(f"{k} {v}" for k, v in sorted(self.fixups.items())) or "none"
        rj = ", ".join(f"{k} {v}" for k, v in sorted(self.rejections.items())) or "none"
        return (
            f"{self.pairs_kept}/{self.pairs_read} pairs kept, {len(self.videos_kept)} videos; "
            f"fix-ups: {fx}; rejections: {rj}"
        )


def merge_reports(reports: Iterable[ValidationReport]) -> ValidationReport:
    merged = ValidationReport()
    for r in reports:
        merged.merge(r)
    return merged
