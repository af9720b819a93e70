"""The run report: markdown + PNG plots (loss curves, recall at each IoU, prediction timelines,
the ablation table when asked) and the metrics as JSON, written atomically into one folder.

Pure presentation over the project's contracts: the metrics dict of
``model.metrics.evaluate_predictions``, prediction records (``query_id``,
``video_id``, ranked ``spans``), ``QueryMoment`` ground truth, and the
trainer's per-epoch history (``result.json["history"]``, turned by ``history_rows``
into dicts with ``epoch`` and any number of ``loss*`` / ``val_*`` keys).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.datasets.records import QueryMoment
from storage.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

RECALL_KS = (1, 5)
IOUS = (0.3, 0.5, 0.7)
# recall at IoU, mIoU, then mAP at IoU 0.5 / 0.75 / averaged over 0.5:0.05:0.95 (model.metrics)
METRIC_ORDER = ("R1@0.3", "R1@0.5", "R1@0.7", "R5@0.3", "R5@0.5", "R5@0.7", "mIoU",
                "mAP@0.5", "mAP@0.75", "mAP")


# the report as a Prefect markdown artifact: its PNGs inline (data URIs), at most this many bytes of
# image data in all, each plot at most this wide (a wider one is scaled down first)
ARTIFACT_MAX_BYTES = 1_500_000
ARTIFACT_MAX_WIDTH = 1000
_IMAGE = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+\.png)\)")


@dataclass(frozen=True)
class ReportPaths:
    """Where a report's files landed."""

    markdown: str
    metrics_json: str
    figures: dict[str, str]
    html: str = ""


def _figure_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


_STEP_META = {"kind", "epoch", "step", "videos", "queries"}
_NOT_LOSSES = {"lr", "grad_norm", "tau", "temperature"}  # logged per step, but not loss terms


def history_rows(history: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """The trainer's per-epoch history (``result.json["history"]``, ``TrainResult.history``: ``epoch``,
    ``train`` loss means, ``diag``, ``val`` metrics) -> plot rows: ``epoch``, ``loss/<term>`` (a term
    named ``loss...`` keeps its name) and ``val_<metric>``.

    >>> history_rows([{"epoch": 1, "train": {"total": 2.0, "lr": 1e-3}, "diag": {}, "val": {"mIoU": 30.0}}])
    [{'epoch': 1.0, 'loss/total': 2.0, 'val_mIoU': 30.0}]
    """
    rows = []
    for i, h in enumerate(history):
        row: dict[str, float] = {"epoch": float(h.get("epoch", i + 1))}
        for k, v in dict(h.get("train") or {}).items():
            if k not in _NOT_LOSSES and isinstance(v, (int, float)):
                row[k if k.startswith("loss") else f"loss/{k}"] = float(v)
        for k, v in dict(h.get("val") or {}).items():
            if k != "num_queries" and isinstance(v, (int, float)):
                row[f"val_{k}"] = float(v)
        rows.append(row)
    return rows


def run_history(run_dir: str | os.PathLike[str]) -> list[dict[str, float]]:
    """A training run's per-epoch plot rows, from its ``result.json`` (the trainer's own history);
    a run written before ``result.json`` held the history falls back to parsing ``log.jsonl``."""
    result = Path(run_dir) / "result.json"
    try:
        history = json.loads(result.read_text(encoding="utf-8")).get("history")
    except (OSError, json.JSONDecodeError, AttributeError):
        history = None
    if history:
        return history_rows(history)
    return history_from_log(Path(run_dir) / "log.jsonl")


def history_from_log(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """Per-epoch history from the trainer's ``log.jsonl``: mean of each step loss, plus val metrics
    (the fallback of :func:`run_history` for a run whose ``result.json`` has no history).

    Step lines (``{"kind": "step", "epoch": e, <loss terms>...}``, epoch counted from 0)
    become ``loss/<term>`` means for epoch ``e + 1``; epoch lines
    (``{"kind": "epoch", "epoch": e, "val": {...}}``) add ``val_<metric>``.
    """
    p = Path(path)
    if not p.is_file():
        return []
    sums: dict[int, dict[str, float]] = {}
    counts: dict[int, dict[str, int]] = {}
    vals: dict[int, dict[str, float]] = {}
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash mid-write
        if obj.get("kind") == "step":
            e = int(obj.get("epoch", 0)) + 1
            for k, v in obj.items():
                if k not in _STEP_META and k not in _NOT_LOSSES and isinstance(v, (int, float)):
                    sums.setdefault(e, {}).setdefault(k, 0.0)
                    sums[e][k] += float(v)
                    counts.setdefault(e, {}).setdefault(k, 0)
                    counts[e][k] += 1
        elif obj.get("kind") == "epoch":
            e = int(obj.get("epoch", 0))
            for k, v in dict(obj.get("val") or {}).items():
                if isinstance(v, (int, float)) and k != "num_queries":
                    vals.setdefault(e, {})[f"val_{k}"] = float(v)
    out = []
    for e in sorted(set(sums) | set(vals)):
        row: dict[str, float] = {"epoch": float(e)}
        for k, total in sums.get(e, {}).items():
            name = k if k.startswith("loss") else f"loss/{k}"
            row[name] = total / counts[e][k]
        row.update(vals.get(e, {}))
        out.append(row)
    return out


def plot_loss_curves(history: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Training (and validation) curves per epoch; ``None`` when the history is empty."""
    if not history:
        return None
    plt = _pyplot()
    epochs = [float(h.get("epoch", i + 1)) for i, h in enumerate(history)]
    loss_keys = sorted({k for h in history for k in h if k.startswith(("loss", "train_loss"))})
    metric_keys = sorted({k for h in history for k in h if k.startswith("val_") and "loss" not in k})
    ncols = 2 if metric_keys else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 3.8), squeeze=False)
    ax = axes[0][0]
    for k in loss_keys:
        xs = [e for e, h in zip(epochs, history, strict=True) if isinstance(h.get(k), (int, float))]
        ys = [float(h[k]) for h in history if isinstance(h.get(k), (int, float))]
        if ys:
            total = k in ("loss", "train_loss", "loss/total")
            ax.plot(xs, ys, marker="o", ms=3, lw=2.5 if total else 1, label=k)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("training losses")
    ax.legend(fontsize=7)
    if metric_keys:
        ax2 = axes[0][1]
        for k in metric_keys:
            xs = [e for e, h in zip(epochs, history, strict=True) if isinstance(h.get(k), (int, float))]
            ys = [float(h[k]) for h in history if isinstance(h.get(k), (int, float))]
            if ys:
                ax2.plot(xs, ys, marker="o", ms=3, label=k)
        ax2.set_xlabel("epoch")
        ax2.set_title("validation")
        ax2.legend(fontsize=7)
    return _figure_bytes(fig)


def plot_recall(metrics: Mapping[str, float], baseline: Mapping[str, float] | None = None) -> bytes:
    """Bars of R@1 and R@5 at IoU 0.3/0.5/0.7 (percent), with an optional baseline beside them."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    width = 0.38 if baseline else 0.6
    for j, k in enumerate(RECALL_KS):
        xs = [j * 4 + i for i in range(len(IOUS))]
        vals = [float(metrics.get(f"R{k}@{t}", 0.0)) for t in IOUS]
        bars = ax.bar([x - (width / 2 if baseline else 0) for x in xs], vals, width, label=f"model R@{k}")
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
        if baseline:
            bvals = [float(baseline.get(f"R{k}@{t}", 0.0)) for t in IOUS]
            ax.bar([x + width / 2 for x in xs], bvals, width, label=f"prior-only R@{k}", alpha=0.5)
    ax.set_xticks([j * 4 + i for j in range(len(RECALL_KS)) for i in range(len(IOUS))])
    ax.set_xticklabels([f"R@{k}\nIoU {t}" for k in RECALL_KS for t in IOUS], fontsize=8)
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"recall at each IoU (mIoU {float(metrics.get('mIoU', 0.0)):.1f})")
    ax.legend(fontsize=7)
    return _figure_bytes(fig)


def pick_examples(
    predictions: Sequence[Mapping[str, Any]], ground_truth: Sequence[QueryMoment], n: int = 6
) -> list[tuple[QueryMoment, Mapping[str, Any]]]:
    """Up to ``n`` (ground truth, prediction) pairs, from distinct videos where possible, in a stable order."""
    by_id = {str(p["query_id"]): p for p in predictions}
    chosen: list[tuple[QueryMoment, Mapping[str, Any]]] = []
    seen_videos: set[str] = set()
    ordered = sorted(ground_truth, key=lambda g: (g.video_id, g.query_id))
    for pass_distinct in (True, False):
        for gt in ordered:
            if len(chosen) >= n:
                return chosen
            pred = by_id.get(gt.query_id)
            if pred is None or any(c[0].query_id == gt.query_id for c in chosen):
                continue
            if pass_distinct and gt.video_id in seen_videos:
                continue
            seen_videos.add(gt.video_id)
            chosen.append((gt, pred))
    return chosen


NO_VIDEO_REASON = "video file not available (this report was made from stored features)"
HTML_MAX_VIDEOS = 300  # report.html shows at most this many test videos (sorted by id)


def plot_timelines(
    examples: Sequence[tuple[QueryMoment, Mapping[str, Any]]],
    videos: Mapping[str, str] | None = None,
    *,
    missing: str = NO_VIDEO_REASON,
) -> bytes | None:
    """Each example's video (``model.timeline``): a strip of frame thumbnails when ``videos`` maps
    its id to a file on disk (else the strip says ``missing``), then a row per example query with
    the ground truth, the top-1 prediction and ranks 2-5 as thin bars below it."""
    if not examples:
        return None
    from model.timeline import timeline_png, timelines_from_predictions

    order = list(dict.fromkeys(gt.video_id for gt, _ in examples))
    timelines = timelines_from_predictions([p for _, p in examples], [gt for gt, _ in examples],
                                           videos, video_ids=order, missing=missing)
    return timeline_png(timelines)


def metrics_table(rows: Sequence[Mapping[str, Any]], label: str = "variant") -> str:
    """A markdown table with one row per entry: ``label`` then the metrics in the usual order.

    A metric column is shown when any row has it; a row without it shows an empty cell (e.g. a
    metrics file written before mAP was computed).

    >>> print(metrics_table([{"run": "a", "R1@0.5": 50.0, "mAP": 12.5}, {"run": "b", "R1@0.5": 25.0}],
    ...                     label="run"), end="")
    | run | R1@0.5 | mAP |
    |---|---|---|
    | a | 50.00 | 12.50 |
    | b | 25.00 |  |
    """
    if not rows:
        return ""
    keys = [k for k in METRIC_ORDER if any(k in r for r in rows)]
    head = f"| {label} | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1) + "\n"
    body = ""
    for r in rows:
        vals = " | ".join(
            f"{float(r[k]):.2f}" if isinstance(r.get(k), (int, float)) else "" for k in keys
        )
        body += f"| {r.get(label, '')} | {vals} |\n"
    return head + body


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    title: str,
    metrics: Mapping[str, float],
    history: Sequence[Mapping[str, Any]] = (),
    predictions: Sequence[Mapping[str, Any]] = (),
    ground_truth: Sequence[QueryMoment] = (),
    ablation: Sequence[Mapping[str, Any]] | None = None,
    baseline: Mapping[str, float] | None = None,
    details: Mapping[str, Any] | None = None,
    warnings: Sequence[str] = (),
    controls: Mapping[str, Mapping[str, float]] | None = None,
    videos: Mapping[str, str] | None = None,
    html_max_videos: int = HTML_MAX_VIDEOS,
) -> ReportPaths:
    """Write ``report.md``, ``report.html``, the PNGs and ``metrics.json`` into ``out_dir``; return
    their paths.

    ``videos`` (video id -> file): where the test videos are, for the timelines' thumbnails and
    ``report.html``'s players; without it (a report on stored features) both say there is none.
    ``report.html`` (``model.html_report``) is one self-contained page: the same metrics table and
    sentences, the plots inline, and for each test video (at most ``html_max_videos``) its player
    over every query's ground truth and ranked predictions.

    ``controls`` (``model.controls.compute_controls``): rows beside MKTN in the metrics table, one
    sentence on how much of the score needs the video and the order, and ``metrics.json["controls"]``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    pngs: dict[str, bytes] = {}  # the same bytes go inline into report.html

    def save(name: str, data: bytes | None) -> None:
        if data is not None:
            path = out / f"{name}.png"
            atomic_write_bytes(path, data)
            figures[name] = str(path)
            pngs[name] = data

    save("loss_curves", plot_loss_curves(history))
    save("recall", plot_recall(metrics, baseline))
    examples = pick_examples(predictions, ground_truth)
    save("timelines", plot_timelines(examples, videos))

    payload: dict[str, Any] = {"metrics": dict(metrics)}
    if baseline:
        payload["baseline"] = dict(baseline)
    if controls:
        payload["controls"] = {k: dict(v) for k, v in controls.items()}
    if ablation:
        payload["ablation"] = [dict(r) for r in ablation]
    if details:
        payload["details"] = dict(details)
    metrics_path = out / "metrics.json"
    atomic_write_json(metrics_path, payload)

    lines = [f"# {title}", ""]
    if warnings:
        lines += ["> **Warnings**", ">"] + [f"> - {w}" for w in warnings] + [""]
    rows: list[dict[str, Any]] = [{"run": "MKTN", **metrics}]
    if controls:
        from model.controls import CONTROL_LABELS

        rows += [{"run": CONTROL_LABELS.get(k, k), **v} for k, v in controls.items()]
    elif baseline:
        rows.append({"run": "prior only (no video, no query)", **baseline})
    lines += ["## Test metrics", "", metrics_table(rows, label="run"), ""]
    notes: list[str] = []
    if controls:
        from model.controls import controls_summary

        notes.append(controls_summary(metrics, controls))
        lines += [notes[-1], ""]
    notes.append(f"Queries evaluated: {int(metrics.get('num_queries', 0))}. Metrics as JSON: metrics.json.")
    lines.append(f"Queries evaluated: {int(metrics.get('num_queries', 0))}. Metrics as JSON: `metrics.json`.")
    lines.append("")
    lines += ["Interactive view (open in a browser; plays the test videos from each span): "
              "[report.html](report.html).", ""]
    if "recall" in figures:
        lines += ["![recall at each IoU](recall.png)", ""]
    if "loss_curves" in figures:
        lines += ["## Training", "", "![loss curves](loss_curves.png)", ""]
    if "timelines" in figures:
        lines += [
            "## Predictions against the ground truth",
            "",
            "Above each video: its frames along the time axis (when the video file is on disk). "
            "Green: ground-truth moment; blue: top-1 prediction; thin light bars below it: ranks 2-5.",
            "",
            "![prediction timelines](timelines.png)",
            "",
        ]
    if ablation:
        lines += ["## Ablation", "", metrics_table(ablation), ""]
    if details:
        lines += ["## Run details", "", "| | |", "|---|---|"]
        lines += [f"| {k} | `{json.dumps(v) if not isinstance(v, str) else v}` |" for k, v in details.items()]
        lines.append("")
    md_path = out / "report.md"
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    html_path = write_report_html(
        out / "report.html", title=title, rows=rows, notes=notes, pngs=pngs, predictions=predictions,
        ground_truth=ground_truth, videos=videos, ablation=ablation, details=details, warnings=warnings,
        max_videos=html_max_videos,
    )
    logger.info("report written to %s (and %s)", md_path, html_path)
    return ReportPaths(markdown=str(md_path), metrics_json=str(metrics_path), figures=figures, html=html_path)



def _png_for_artifact(data: bytes, max_width: int) -> bytes:
    """``data`` (a PNG) scaled down to ``max_width`` pixels wide when wider, in a 256-colour palette
    (a plot has few colours; the smoothed edges of a plain RGB resize made the file larger)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if img.width <= max_width:
            return data
        height = max(1, round(img.height * max_width / img.width))
        small = img.convert("RGB").resize((max_width, height), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        small.quantize(colors=256).save(buf, format="PNG", optimize=True)
        return buf.getvalue()


def artifact_markdown(
    markdown_path: str | os.PathLike[str],
    *,
    max_bytes: int = ARTIFACT_MAX_BYTES,
    max_width: int = ARTIFACT_MAX_WIDTH,
    files: Mapping[str, str] | None = None,
) -> str:
    """``report.md`` as a Prefect markdown artifact a remote UI can show whole.

    Each ``![alt](name.png)`` beside the report becomes a ``data:image/png;base64`` URI (the
    PNG scaled down to ``max_width`` pixels when wider), in the report's order, while the
    encoded images stay within ``max_bytes`` in all; a plot that would go over, or whose file
    is gone, is left out and a line in its place says so and names the file. The report's
    own path (and any ``files``: label -> path) are written as text under the title: a link
    to a local file opens nothing in a browser on another machine.
    """
    path = Path(markdown_path)
    text = path.read_text(encoding="utf-8")
    used = 0

    def inline(match: re.Match[str]) -> str:
        nonlocal used
        alt, src = match.group("alt"), match.group("src")
        png = path.parent / src
        if not png.is_file():
            return f"*(plot \"{alt}\" left out: `{png}` is missing)*"
        encoded = base64.b64encode(_png_for_artifact(png.read_bytes(), max_width)).decode("ascii")
        if used + len(encoded) > max_bytes:
            return (f"*(plot \"{alt}\" left out of this artifact: the plots inline here are kept under "
                    f"{max_bytes / 1e6:.1f} MB; the file is `{png}`)*")
        used += len(encoded)
        return f"![{alt}](data:image/png;base64,{encoded})"

    body = _IMAGE.sub(inline, text)
    where = [f"- report: `{path}`"] + [f"- {label}: `{p}`" for label, p in (files or {}).items()]
    note = ["", "Files on the machine that ran the flow:", "", *where, ""]
    lines = body.split("\n")
    at = 1 if lines and lines[0].startswith("# ") else 0
    return "\n".join(lines[:at] + note + lines[at:])


FIGURE_CAPTIONS = {
    "recall": "recall at each IoU",
    "loss_curves": "training losses and validation metrics per epoch",
    "timelines": "examples: frames along the time axis, ground truth (green), rank 1 (blue), ranks 2-5 (thin)",
}


def write_report_html(
    path: str | os.PathLike[str],
    *,
    title: str,
    rows: Sequence[Mapping[str, Any]],
    notes: Sequence[str],
    pngs: Mapping[str, bytes],
    predictions: Sequence[Mapping[str, Any]],
    ground_truth: Sequence[QueryMoment],
    videos: Mapping[str, str] | None,
    ablation: Sequence[Mapping[str, Any]] | None = None,
    details: Mapping[str, Any] | None = None,
    warnings: Sequence[str] = (),
    max_videos: int = HTML_MAX_VIDEOS,
) -> str:
    """``report.html`` (``model.html_report``) from the report's own rows, sentences and PNG bytes;
    each test video (sorted by id, at most ``max_videos``) with its player and timelines."""
    from model.html_report import metrics_table_html, write_video_page
    from model.timeline import timelines_from_predictions

    all_ids = sorted({g.video_id for g in ground_truth})
    shown = all_ids[: max(0, max_videos)]
    timelines = timelines_from_predictions(predictions, ground_truth, videos, video_ids=shown,
                                           missing=NO_VIDEO_REASON)
    on_disk = sum(t.path is not None for t in timelines)
    note = f"{len(shown)} test video(s)" if len(shown) == len(all_ids) else (
        f"the first {len(shown)} of {len(all_ids)} test videos by id (all predictions: the predictions "
        "JSONL)")
    note += f"; {on_disk} with a player (video file on disk), {len(timelines) - on_disk} without."
    metrics_html = metrics_table_html(rows, METRIC_ORDER, label="run")
    if ablation:
        metrics_html += "<h3>Ablation</h3>" + metrics_table_html(ablation, METRIC_ORDER, label="variant")
    figures = [(FIGURE_CAPTIONS.get(name, name), pngs[name])
               for name in ("recall", "loss_curves", "timelines") if name in pngs]
    return write_video_page(
        path, title=title, videos=timelines, figures=figures, metrics_html=metrics_html, notes=notes,
        warnings=warnings, details=details, videos_heading="Test videos: ground truth and ranked predictions",
        videos_note=note,
    )

