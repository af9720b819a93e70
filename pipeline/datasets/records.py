"""The one record type every dataset adapter produces: a query-moment pair."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class QueryMoment:
    """One sentence query grounded to one moment of one video.

    Times are in seconds from the start of the video. ``extra`` keeps the
    source's own fields where they exist (``fps``, ``start_frame``,
    ``end_frame``, ``num_frames``, ``paragraph_index``, ...), and ``source``
    says where the pair came from (``"file:line"`` or ``"file#video[i]"``).
    """

    query_id: str
    video_id: str
    sentence: str
    start: float
    end: float
    duration: float
    split: str
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def span(self) -> tuple[float, float]:
        return (self.start, self.end)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QueryMoment:
        return cls(
            query_id=str(d["query_id"]),
            video_id=str(d["video_id"]),
            sentence=str(d["sentence"]),
            start=float(d["start"]),
            end=float(d["end"]),
            duration=float(d["duration"]),
            split=str(d["split"]),
            source=str(d.get("source", "")),
            extra=dict(d.get("extra", {})),
        )
