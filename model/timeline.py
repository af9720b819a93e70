"""Timelines of grounded moments, one picture per set of videos: what a user looks at.

Each video gets a strip of frame thumbnails along its time axis (``pipeline.video.thumbnails``,
when the video file is on disk; otherwise the strip's place says why there is none), then one
row per query: the ground-truth moment (green, when known) on the top lane, the best prediction
(rank 1, solid blue) below it, and ranks 2-5 as thin, light bars each on a lane of its own under
rank 1, so none of them covers the best span or another rank.

The data (:class:`VideoTimeline`, :class:`QueryTimeline`) is shared with the HTML view
(``model.html_report``); :func:`timelines_from_predictions` builds it from prediction records
(``query_id``, ``video_id``, ranked ``spans``, ``scores``) and ``QueryMoment`` ground truth.
No Prefect, no pyplot state: figures are ``matplotlib.figure.Figure`` rendered to PNG bytes.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.datasets.records import QueryMoment

log = logging.getLogger(__name__)

TRUTH_COLOR = "#2ca02c"
BEST_COLOR = "#1f77b4"
MAX_RANKS = 5  # rank 1 plus ranks 2-5 drawn
STRIP_HEIGHT_IN = 0.62  # inches of figure for the thumbnail strip
ROW_HEIGHT_IN = 0.78  # inches per query row
AXES_WIDTH_IN = 7.6


@dataclass(frozen=True)
class QueryTimeline:
    """One query on a video's timeline: ranked ``spans`` (seconds, best first), their ``scores``
    (may be empty), the ground-truth ``truth`` span when known, and a short ``label`` (its id)."""

    query: str
    spans: list[tuple[float, float]]
    scores: list[float] = field(default_factory=list)
    truth: tuple[float, float] | None = None
    label: str = ""


@dataclass(frozen=True)
class VideoTimeline:
    """A video's queries. ``path``: the video file when it is on disk (thumbnails, the HTML
    player), else ``None``; ``missing``: why there is no file, said in the figure and the page."""

    video_id: str
    duration: float
    queries: list[QueryTimeline]
    path: str | None = None
    missing: str = "video file not available"


def timelines_from_predictions(
    predictions: Sequence[Mapping[str, Any]],
    ground_truth: Sequence[QueryMoment],
    videos: Mapping[str, str] | None = None,
    *,
    video_ids: Sequence[str] | None = None,
    top_k: int = MAX_RANKS,
    missing: str = "video file not available",
) -> list[VideoTimeline]:
    """One :class:`VideoTimeline` per video of ``ground_truth`` (sorted by id, or ``video_ids`` in
    their order), each query with its ground truth and its top ``top_k`` predicted spans.

    ``videos`` maps a video id to its file; an id without an existing file gets ``path=None`` and
    the reason ``missing``. A query without a prediction record is drawn with no spans.
    """
    by_query = {str(p["query_id"]): p for p in predictions}
    by_video: dict[str, list[QueryMoment]] = {}
    for gt in ground_truth:
        by_video.setdefault(gt.video_id, []).append(gt)
    order = list(video_ids) if video_ids is not None else sorted(by_video)
    out = []
    for vid in order:
        gts = sorted(by_video.get(vid, []), key=lambda g: (g.start, g.query_id))
        if not gts:
            continue
        rows = []
        duration = max(g.duration for g in gts)
        for gt in gts:
            pred = by_query.get(gt.query_id, {})
            spans = [(float(s), float(e)) for s, e in list(pred.get("spans") or [])[:top_k]]
            scores = [float(x) for x in list(pred.get("scores") or [])[: len(spans)]]
            duration = max([duration] + [e for _, e in spans])
            rows.append(QueryTimeline(gt.sentence, spans, scores, (gt.start, gt.end), gt.query_id))
        path = (videos or {}).get(vid)
        on_disk = path is not None and os.path.isfile(path)
        out.append(VideoTimeline(vid, float(duration), rows, str(path) if on_disk else None,
                                 missing if not on_disk else ""))
    return out


def strip_thumbnails(path: str, strip_height_in: float = STRIP_HEIGHT_IN,
                     width_in: float = AXES_WIDTH_IN, height: int = 48) -> tuple[Any | None, str]:
    """``(pipeline.video.Thumbnails, "")`` for a strip ``width_in`` x ``strip_height_in`` inches
    whose pictures keep the video's aspect, or ``(None, reason)`` when the file cannot be decoded."""
    from pipeline.video import VideoDecodeError, probe, thumbnails

    try:
        info = probe(path)
        aspect = info.width / max(1, info.height)
        n = max(3, min(24, round(width_in / (strip_height_in * aspect))))
        return thumbnails(path, n, height, info=info), ""
    except VideoDecodeError as exc:
        log.warning("no thumbnails for %s: %s", path, exc.reason)
        return None, f"video not decodable: {exc.reason}"


def _draw_strip(ax: Any, video: VideoTimeline, thumbs: Any | None, reason: str) -> None:
    ax.set_xlim(0, video.duration)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.tick_params(axis="x", labelbottom=False, length=0)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    if thumbs is None:
        ax.set_facecolor("#f4f4f4")
        ax.text(0.5, 0.5, f"no thumbnails: {reason}", transform=ax.transAxes, ha="center", va="center",
                fontsize=7, color="#555555", style="italic")
    else:
        n = len(thumbs.times)
        step = thumbs.duration / n
        for k in range(n):
            ax.imshow(thumbs.frames[k], extent=(k * step, (k + 1) * step, 0, 1), aspect="auto",
                      interpolation="bilinear")
        ax.set_xlim(0, video.duration)
    ax.set_title(video.video_id, fontsize=8, loc="left", fontweight="bold")


def _draw_query(ax: Any, video: VideoTimeline, q: QueryTimeline, show_truth: bool) -> None:
    """Lanes from the top: ground truth (y=2), rank 1 (y=1), ranks 2-5 (thin, y=0.4 down)."""
    d = video.duration
    ax.axvspan(0, d, color="#f2f2f2", zorder=0)
    ticks: list[float] = []
    labels: list[str] = []
    if show_truth:
        if q.truth is not None:
            s, e = q.truth
            ax.barh(2, max(e - s, d * 0.002), left=s, height=0.6, color=TRUTH_COLOR, zorder=2)
        ticks.append(2)
        labels.append("truth")
    for r, (s, e) in enumerate(q.spans[1:MAX_RANKS], start=2):
        y = 0.4 - 0.22 * (r - 2)
        ax.barh(y, max(e - s, d * 0.002), left=s, height=0.15, color=BEST_COLOR, alpha=0.35, zorder=2)
        if s > 0.04 * d:  # the rank's number left of its bar, else right of it
            ax.text(s, y, f"{r} ", ha="right", va="center", fontsize=5, color="#555555")
        else:
            ax.text(e, y, f" {r}", ha="left", va="center", fontsize=5, color="#555555", clip_on=True)
    if q.spans:
        s, e = q.spans[0]
        ax.barh(1, max(e - s, d * 0.002), left=s, height=0.6, color=BEST_COLOR, zorder=3)
        if q.scores:
            ax.text(e + 0.01 * d, 1, f"{q.scores[0]:.2f}", va="center", fontsize=6)
    ticks += [1, 0.4 - 0.22 * 1.5]
    labels += ["rank 1", "ranks 2-5"]
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=6)
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(-0.35, 2.45 if show_truth else 1.45)
    ax.set_xlim(0, d)
    ax.tick_params(axis="x", labelsize=6)
    text = q.query if len(q.query) <= 90 else q.query[:87] + "..."
    ax.set_title(f"{q.label}: {text}" if q.label else text, fontsize=7, loc="left")


def timeline_figure(videos: Sequence[VideoTimeline], *, thumbnails: bool = True, title: str = "") -> Any:
    """A ``matplotlib.figure.Figure``: per video, the thumbnail strip then one row per query
    (axes placed in inches from the top, so titles, tick labels and the next video never touch)."""
    from matplotlib.figure import Figure

    show_truth = any(q.truth is not None for v in videos for q in v.queries)
    row_h = ROW_HEIGHT_IN if show_truth else ROW_HEIGHT_IN * 0.75
    title_h, ticks_h, gap_h = 0.24, 0.2, 0.32  # a title above an axes, tick labels below, between videos
    slots: list[tuple[str, float, float, VideoTimeline, QueryTimeline | None, bool]] = []
    y = 0.55 if title else 0.35
    for v in videos:
        y += title_h
        slots.append(("strip", y, STRIP_HEIGHT_IN, v, None, False))
        y += STRIP_HEIGHT_IN
        for j, q in enumerate(v.queries):
            y += title_h
            slots.append(("query", y, row_h, v, q, j == len(v.queries) - 1))
            y += row_h + ticks_h
        y += gap_h
    width = AXES_WIDTH_IN + 1.4
    fig = Figure(figsize=(width, y))
    left, axes_w = 1.0 / width, AXES_WIDTH_IN / width
    strip = None
    for kind, top, h, v, query, last in slots:
        ax = fig.add_axes((left, 1 - (top + h) / y, axes_w, h / y), sharex=None if kind == "strip" else strip)
        if kind == "strip":
            strip = ax
            if thumbnails and v.path is not None:
                thumbs, reason = strip_thumbnails(v.path)
            else:
                thumbs, reason = None, (v.missing or "video file not available") if thumbnails else "not drawn"
            _draw_strip(ax, v, thumbs, reason)
        else:
            assert query is not None
            _draw_query(ax, v, query, show_truth)
            if last:
                ax.set_xlabel("seconds", fontsize=6, labelpad=1)
    legend = ("green: ground truth; blue: rank 1 (score beside it); thin light bars below: ranks 2-5"
              if show_truth else "blue: rank 1 (score beside it); thin light bars below: ranks 2-5")
    fig.suptitle(f"{title}\n{legend}" if title else legend, fontsize=8, y=1 - 0.08 / y, va="top")
    return fig


def figure_png(fig: Any, dpi: int = 110, *, palette: bool = False) -> bytes:
    """The figure as PNG bytes; ``palette``: in 256 colours (Pillow's quantizer), which keeps the
    thumbnails' photos and the bars legible at well under half the size of full-colour PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if not palette:
        return buf.getvalue()
    from PIL import Image

    with Image.open(io.BytesIO(buf.getvalue())) as img:
        small = io.BytesIO()
        img.convert("RGB").quantize(colors=256).save(small, format="PNG", optimize=True)
    return small.getvalue()


def timeline_png(videos: Sequence[VideoTimeline], *, thumbnails: bool = True, title: str = "") -> bytes | None:
    """:func:`timeline_figure` as PNG bytes (256 colours); ``None`` when there is nothing to draw."""
    if not videos:
        return None
    return figure_png(timeline_figure(videos, thumbnails=thumbnails, title=title), palette=True)
