"""One self-contained HTML page: metrics, plots, and each video's player over its timelines.

The page opens from its folder with no server: plots are inline ``data:image/png;base64`` URIs,
styles and the script are inline, and each video's ``<video>`` player points at the video file by a
path relative to the page (no player, and a line saying why, when the file is not on disk). Under
each player, every query of the video gets a track with its ground truth (green, when known) and
its ranked predictions (rank 1 solid, ranks 2-5 thin lanes below it), as absolutely positioned
``div.span`` elements; clicking one (or Enter on it) sets the player's ``currentTime`` to the
span's start and plays, and the span's times show in the line under the player.

All text from data (queries, ids, file names, notes) goes through ``html.escape``. The view is the
one ``model.timeline`` draws as a PNG (same :class:`~model.timeline.VideoTimeline` data).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from model.timeline import MAX_RANKS, VideoTimeline

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1100px;
 padding:0 1em;color:#222}
h1{font-size:1.45em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:1.4em 0 .4em}
table.metrics{border-collapse:collapse;font-size:.85em}
table.metrics td,table.metrics th{border:1px solid #ccc;padding:3px 7px;text-align:right}
table.metrics td:first-child,table.metrics th:first-child{text-align:left}
.warnings{background:#fff4e0;border-left:4px solid #e69500;padding:.4em 1em}
figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:.8em;color:#555}
.video{border-top:1px solid #eee;padding-top:.3em}
video.player{width:100%;max-width:640px;max-height:360px;background:#000;display:block}
.no-video{color:#666;font-style:italic;font-size:.85em}
.status{font-size:.8em;color:#333;min-height:1.2em;margin:.3em 0}
.query{font-size:.85em;margin:.6em 0 .15em}.query .qid{color:#888;font-size:.85em}
.track{position:relative;background:#f2f2f2;border-radius:3px;overflow:hidden}
.span{position:absolute;min-width:3px;cursor:pointer;border-radius:2px}
.span:hover,.span:focus{outline:2px solid #d62728;outline-offset:0;z-index:5}
.span.selected{outline:2px solid #d62728;z-index:6}
.span.truth{background:#2ca02c}
.span.pred{background:#1f77b4}
.span.pred.rank-2,.span.pred.rank-3,.span.pred.rank-4,.span.pred.rank-5{opacity:.4}
.playhead{position:absolute;top:0;bottom:0;width:2px;background:#d62728;left:0;display:none;
 pointer-events:none;z-index:7}
.axis{position:relative;height:1.2em;font-size:.7em;color:#666}
.axis span{position:absolute;transform:translateX(-50%)}
.legend{font-size:.8em;color:#444}
.legend i{display:inline-block;width:1.6em;height:.7em;margin:0 .3em 0 .8em;vertical-align:middle}
table.details{font-size:.8em;border-collapse:collapse}
table.details td{border:1px solid #ddd;padding:2px 6px}
"""

# Seeks the timeline's player to the clicked span and plays (a rejected play(), e.g. a codec the
# browser lacks or a blocked autoplay, is caught, not logged as an error); moves the playheads.
_JS = """
(function () {
  "use strict";
  function fmt(t) { return (Math.round(t * 100) / 100).toFixed(2); }
  function select(span) {
    var timeline = span.closest(".timeline");
    if (!timeline) { return; }
    var start = parseFloat(span.getAttribute("data-start"));
    var end = parseFloat(span.getAttribute("data-end"));
    var old = document.querySelectorAll(".span.selected");
    for (var i = 0; i < old.length; i++) { old[i].classList.remove("selected"); }
    span.classList.add("selected");
    var status = timeline.querySelector(".status");
    var what = span.getAttribute("data-label") || "span";
    var player = document.getElementById(timeline.getAttribute("data-player") || "");
    if (status) {
      status.textContent = what + ": " + fmt(start) + "\\u2013" + fmt(end) + " s" +
        (player ? "" : " (no player: the video file is not available)");
    }
    if (!player) { return; }
    player.setAttribute("data-seek", String(start));
    player.currentTime = start;
    var playing = player.play();
    if (playing && typeof playing.catch === "function") { playing.catch(function () {}); }
  }
  document.addEventListener("click", function (ev) {
    var span = ev.target && ev.target.closest ? ev.target.closest(".span") : null;
    if (span) { select(span); }
  });
  document.addEventListener("keydown", function (ev) {
    var span = ev.target && ev.target.closest ? ev.target.closest(".span") : null;
    if (span && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); select(span); }
  });
  var timelines = document.querySelectorAll(".timeline[data-player]");
  for (var i = 0; i < timelines.length; i++) {
    (function (timeline) {
      var player = document.getElementById(timeline.getAttribute("data-player"));
      var duration = parseFloat(timeline.getAttribute("data-duration"));
      if (!player || !(duration > 0)) { return; }
      player.addEventListener("timeupdate", function () {
        var heads = timeline.querySelectorAll(".playhead");
        var left = Math.max(0, Math.min(100, 100 * player.currentTime / duration)) + "%";
        for (var j = 0; j < heads.length; j++) { heads[j].style.left = left; heads[j].style.display = "block"; }
      });
    })(timelines[i]);
  }
})();
"""

# lane geometry of a track (pixels): ground truth on top, rank 1, then ranks 2-5 thin lanes
_TRUTH_TOP, _LANE_H = 3, 11
_THIN_H, _THIN_GAP = 5, 2


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _pct(x: float, duration: float) -> float:
    return 0.0 if duration <= 0 else max(0.0, min(100.0, 100.0 * x / duration))


def nice_ticks(duration: float, target: int = 7) -> list[float]:
    """Round tick positions over ``[0, duration]``: 1, 2 or 5 times a power of ten apart, the
    step whose tick count is nearest ``target``.

    >>> nice_ticks(14.05)
    [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]
    >>> nice_ticks(0.0)
    [0.0]
    """
    if not duration > 0:
        return [0.0]
    raw = duration / max(1, target)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10)), key=lambda st: abs(duration / st - target))
    return [round(float(k * step), 6) for k in range(int(duration / step + 1e-9) + 1)]


def video_src(video_path: str, page_dir: str | os.PathLike[str]) -> str:
    """The ``src`` of a video for a page in ``page_dir``: a relative, percent-encoded path (a
    ``file://`` URI when no relative path exists, e.g. another drive on Windows).

    >>> video_src("/data/videos/a b#1.mp4", "/data/report")
    '../videos/a%20b%231.mp4'
    """
    try:
        rel = os.path.relpath(os.path.abspath(video_path), os.path.abspath(page_dir))
    except ValueError:
        return Path(os.path.abspath(video_path)).as_uri()
    return urllib.parse.quote(Path(rel).as_posix())


def _span(cls: str, label: str, start: float, end: float, duration: float, top: int, height: int,
          title: str) -> str:
    left = _pct(start, duration)
    width = max(0.0, _pct(end, duration) - left)
    return (f'<div class="{cls}" tabindex="0" role="button" data-start="{start:.3f}" data-end="{end:.3f}" '
            f'data-label="{_e(label)}" title="{_e(title)}" '
            f'style="left:{left:.3f}%;width:{width:.3f}%;top:{top}px;height:{height}px"></div>')


def timeline_html(video: VideoTimeline, index: int, page_dir: str | os.PathLike[str],
                  preload: str = "metadata") -> str:
    """One video's section: player (or why there is none), tick axis, a track per query."""
    pid = f"player-{index}"
    has_player = video.path is not None
    parts = [f'<section class="video" id="video-{index}"><h3>{_e(video.video_id)}'
             f' <small>({video.duration:.2f} s, {len(video.queries)} '
             f'quer{"y" if len(video.queries) == 1 else "ies"})</small></h3>']
    if has_player:
        assert video.path is not None
        parts.append(f'<video id="{pid}" class="player" controls preload="{_e(preload)}" '
                     f'src="{_e(video_src(video.path, page_dir))}"></video>')
    else:
        parts.append(f'<p class="no-video">No player: {_e(video.missing or "video file not available")}.</p>')
    d = video.duration
    player_attr = f' data-player="{pid}"' if has_player else ""
    parts.append(f'<div class="timeline"{player_attr} data-duration="{d:.3f}">')
    hint = ("Click a span to play the video from its start." if has_player
            else "Click a span to show its times.")
    parts.append(f'<p class="status" aria-live="polite">{hint}</p>')
    show_truth = any(q.truth is not None for q in video.queries)
    rank1_top = _TRUTH_TOP + (_LANE_H + 3 if show_truth else 0)
    thin_top = rank1_top + _LANE_H + 3
    height = thin_top + (MAX_RANKS - 1) * (_THIN_H + _THIN_GAP) + 1
    for qi, q in enumerate(video.queries):
        label = f' <span class="qid">{_e(q.label)}</span>' if q.label else ""
        parts.append(f'<div class="row" data-query="{qi}"><div class="query">{_e(q.query)}{label}</div>'
                     f'<div class="track" style="height:{height}px">')
        if q.truth is not None:
            s, e = q.truth
            parts.append(_span("span truth", "ground truth", s, e, d, _TRUTH_TOP, _LANE_H,
                               f"ground truth: {s:.2f}-{e:.2f} s"))
        for r, (s, e) in enumerate(q.spans[:MAX_RANKS], start=1):
            score = f", score {q.scores[r - 1]:.3f}" if r - 1 < len(q.scores) else ""
            top = rank1_top if r == 1 else thin_top + (r - 2) * (_THIN_H + _THIN_GAP)
            parts.append(_span(f"span pred rank-{r}", f"rank {r}", s, e, d, top,
                               _LANE_H if r == 1 else _THIN_H, f"rank {r}: {s:.2f}-{e:.2f} s{score}"))
        parts.append('<div class="playhead"></div></div></div>')
    ticks = "".join(f'<span style="left:{_pct(t, d):.3f}%">{t:g}</span>' for t in nice_ticks(d))
    parts.append(f'<div class="axis">{ticks}</div></div></section>')
    return "\n".join(parts)


def metrics_table_html(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], label: str = "run") -> str:
    """The metrics rows as an HTML table (``label`` column, then ``keys`` present in any row)."""
    cols = [k for k in keys if any(k in r for r in rows)]
    if not rows or not cols:
        return ""
    head = "<tr>" + "".join(f"<th>{_e(c)}</th>" for c in [label, *cols]) + "</tr>"
    body = ""
    for r in rows:
        cells = "".join(
            f"<td>{float(r[k]):.2f}</td>" if isinstance(r.get(k), (int, float)) else "<td></td>" for k in cols)
        body += f"<tr><td>{_e(r.get(label, ''))}</td>{cells}</tr>"
    return f'<table class="metrics">{head}{body}</table>'


def render_html(
    page_dir: str | os.PathLike[str],
    *,
    title: str,
    videos: Sequence[VideoTimeline],
    figures: Sequence[tuple[str, bytes]] = (),
    metrics_html: str = "",
    notes: Sequence[str] = (),
    warnings: Sequence[str] = (),
    details: Mapping[str, Any] | None = None,
    videos_heading: str = "Videos",
    videos_note: str = "",
) -> str:
    """The page as a string; ``page_dir`` is the folder it will be written to (video paths are
    relative to it). ``figures``: ``(caption, PNG bytes)``, inlined; ``metrics_html``: from
    :func:`metrics_table_html`; ``notes``: sentences under the metrics."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{_e(title)}</h1>"]
    if warnings:
        out.append('<div class="warnings"><strong>Warnings</strong><ul>'
                   + "".join(f"<li>{_e(w)}</li>" for w in warnings) + "</ul></div>")
    if metrics_html:
        out += ["<h2>Test metrics</h2>", metrics_html]
    out += [f"<p>{_e(n)}</p>" for n in notes]
    for caption, png in figures:
        data = base64.b64encode(png).decode("ascii")
        out.append(f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
                   f"<figcaption>{_e(caption)}</figcaption></figure>")
    if videos:
        out.append(f"<h2>{_e(videos_heading)}</h2>")
        show_truth = any(q.truth is not None for v in videos for q in v.queries)
        legend = ('<p class="legend">'
                  + ('<i style="background:#2ca02c"></i>ground truth' if show_truth else "")
                  + '<i style="background:#1f77b4"></i>rank 1'
                  + '<i style="background:#1f77b4;opacity:.4;height:.35em"></i>ranks 2-5 (thin lanes below, '
                  "in rank order). Click a span to play the video from its start.</p>")
        out.append(legend)
        if videos_note:
            out.append(f"<p>{_e(videos_note)}</p>")
        preload = "metadata" if len(videos) <= 20 else "none"
        out += [timeline_html(v, i, page_dir, preload) for i, v in enumerate(videos)]
    if details:
        out.append('<h2>Run details</h2><table class="details">')
        out += [f"<tr><td>{_e(k)}</td><td><code>{_e(v if isinstance(v, str) else json.dumps(v))}</code></td></tr>"
                for k, v in details.items()]
        out.append("</table>")
    out.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(out) + "\n"


def write_video_page(path: str | os.PathLike[str], **kwargs: Any) -> str:
    """:func:`render_html` written atomically to ``path`` (its folder is the page's folder)."""
    from storage.atomic import atomic_write_text

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, render_html(p.parent, **kwargs))
    return str(p)
