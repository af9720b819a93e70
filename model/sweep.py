"""Alignment-strength sweep: accuracy and measured cross-modal alignment against the strength factor.

For each strength ``s`` the model trains with ``loss.alignment_strength = s`` (scaling
the RINCE, contrast, prototype-alignment and segment terms; ``s = 0`` trains on the
grounding losses alone); the best checkpoint is evaluated on the test split (val if
none) and its global embeddings give ``model.alignment.alignment_scores``.
Writes ``sweep.json`` and ``sweep.png`` (matplotlib, Agg backend).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.ablation import eval_metrics, train_or_reuse
from model.alignment import alignment_scores
from model.checkpoint import model_from_checkpoint
from model.config import MKTNConfig, override
from model.data import GroundingData, prepare
from model.evaluate import evaluate_model
from storage.atomic import atomic_write_json

log = logging.getLogger(__name__)


def run_sweep(cfg: MKTNConfig, data: GroundingData, out_dir: str | os.PathLike[str], *,
              strengths: Sequence[float] = (0.0, 0.25, 1.0, 4.0), seed: int = 0, device: str | None = None,
              show_progress: bool = True) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split = "test" if data.split("test") else "val"
    records = data.split(split)
    points: list[dict[str, Any]] = []
    for s in strengths:
        scfg = override(cfg, [f"loss.alignment_strength={s}", f"train.seed={seed}"])
        res = train_or_reuse(scfg, data, out / f"strength-{s:g}", device=device, show_progress=show_progress)
        model, _, mcfg, norm = model_from_checkpoint(res["best_checkpoint"], device or "cpu")
        prepared, _ = prepare(GroundingData(data.videos, data.queries, records), mcfg.model.num_clips,
                              mcfg.model.max_words, norm=norm)
        ev = evaluate_model(model, prepared, records, mcfg, device=device or "cpu")
        align = alignment_scores(ev.video_embed, ev.query_embed, records)
        metrics = eval_metrics(res)
        points.append({"strength": s, "metrics": metrics, "alignment": align,
                       "controls": res.get("controls") or {}})
        log.info("strength %g: R1@0.5 %.2f mutual-kNN %.3f", s, metrics["R1@0.5"], align["mutual_knn"])
    summary = {"split": split, "seed": seed, "config": cfg.to_dict(), "points": points}
    atomic_write_json(out / "sweep.json", summary)
    plot_sweep(points, out / "sweep.png")
    return summary


def plot_sweep(points: Sequence[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["strength"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [p["metrics"]["R1@0.5"] for p in points], "o-", color="tab:blue", label="R@1 IoU=0.5")
    ax.plot(xs, [p["metrics"]["mIoU"] for p in points], "s--", color="tab:cyan", label="mIoU")
    ax.set_xlabel("alignment strength (x weights of RINCE, contrast, prototype, segment losses)")
    ax.set_ylabel("accuracy (%)")
    if all(x > 0 for x in xs) or len(xs) < 2:
        ax.set_xscale("linear")
    ax2 = ax.twinx()
    ax2.plot(xs, [p["alignment"]["mutual_knn"] for p in points], "^-", color="tab:red", label="mutual kNN")
    ax2.plot(xs, [p["alignment"]["retrieval_r1"] for p in points], "v:", color="tab:orange",
             label="query->video R@1")
    ax2.set_ylabel("measured alignment (0-1)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="best", fontsize=8)
    ax.set_title("Accuracy and cross-modal alignment vs alignment strength")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


# --- the redundancy x strength grid (issue 16: explicit alignment vs redundancy) -------------

GRID_KEYS = ("R1@0.5", "R1@0.7", "mIoU")
ALIGN_KEYS = ("mutual_knn", "retrieval_r1")


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def summarise_grid(runs: dict[float | None, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Mean and seed spread per (redundancy, strength), and the best strength per redundancy.

    ``runs[r][seed]`` is one :func:`run_sweep` summary (``r`` None: data given as they
    are, no redundancy control). The best strength of a level is the
    one with the highest mean test R1@0.5 over seeds (ties: the smaller strength); its
    margin over the runner-up is given beside it with the two seed spreads, so a reader
    sees whether the pick is beyond noise.
    """
    levels: list[dict[str, Any]] = []
    for r in sorted(runs, key=lambda x: -1.0 if x is None else -x):
        per_seed = runs[r]
        strengths = sorted({p["strength"] for s in per_seed.values() for p in s["points"]})
        rows = []
        for st in strengths:
            pts = [p for s in per_seed.values() for p in s["points"] if p["strength"] == st]
            row: dict[str, Any] = {"strength": st, "seeds": len(pts)}
            for k in GRID_KEYS:
                row[k], row[f"{k}_std"] = _mean_std([p["metrics"][k] for p in pts])
            for k in ALIGN_KEYS:
                row[k], row[f"{k}_std"] = _mean_std([p["alignment"][k] for p in pts])
            swapped = [p["controls"]["video_swapped"]["R1@0.5"] for p in pts
                       if (p.get("controls") or {}).get("video_swapped")]
            if swapped:
                row["swapped_R1@0.5"] = _mean_std(swapped)[0]
            rows.append(row)
        ranked = sorted(rows, key=lambda x: (-x["R1@0.5"], x["strength"]))
        best = ranked[0]
        level = {"redundancy": r, "rows": rows, "best_strength": best["strength"],
                 "best_R1@0.5": best["R1@0.5"]}
        if len(ranked) > 1:
            level["margin_over_next"] = best["R1@0.5"] - ranked[1]["R1@0.5"]
        levels.append(level)
    chance: dict[str, float] = {}
    for per_seed in runs.values():
        for summary in per_seed.values():
            for p in summary["points"]:
                a = p["alignment"]
                if "chance_knn" in a:
                    chance["mutual_knn"] = float(a["chance_knn"])
                    vids = round(a["k"] / a["chance_knn"]) + 1
                    chance["retrieval_r1"] = 1.0 / vids
    return {"levels": levels, "chance": chance}


def plot_grid(grid: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Three panels against strength, one curve per redundancy level with seed-spread bars:
    test R1@0.5 and the measured alignment (query -> video R@1, mutual kNN), with chance
    levels where ``grid["chance"]`` gives them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(14, 4))
    for level in grid["levels"]:
        rows = level["rows"]
        xs = [row["strength"] for row in rows]
        r = level["redundancy"]
        label = "given data" if r is None else f"redundancy {r:g}"
        for axis, key, marker in ((ax, "R1@0.5", "o"), (bx, "retrieval_r1", "v"), (cx, "mutual_knn", "^")):
            axis.errorbar(xs, [row[key] for row in rows], yerr=[row[f"{key}_std"] for row in rows],
                          marker=marker, capsize=3, label=label)
    chance = grid.get("chance", {})
    if "retrieval_r1" in chance:
        bx.axhline(chance["retrieval_r1"], color="grey", ls=":", label="chance")
    if "mutual_knn" in chance:
        cx.axhline(chance["mutual_knn"], color="grey", ls=":", label="chance")
    for axis, ylabel, title in ((ax, "test R@1 IoU=0.5 (%)", "Grounding accuracy"),
                                (bx, "query -> video R@1", "Measured alignment: retrieval"),
                                (cx, "mutual kNN (k=5)", "Measured alignment: mutual kNN")):
        axis.set_xlabel("alignment strength")
        axis.set_ylabel(ylabel)
        axis.set_title(title)
    bx.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def grid_markdown(grid: dict[str, Any]) -> str:
    """The grid as a markdown table (mean +- seed std), best strength per level marked."""
    lines = ["| redundancy | strength | seeds | R1@0.5 | R1@0.7 | mIoU | swapped R1@0.5 | mutual kNN | q->v R@1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for level in grid["levels"]:
        for row in level["rows"]:
            mark = "**" if row["strength"] == level["best_strength"] else ""
            sw = f"{row['swapped_R1@0.5']:.2f}" if "swapped_R1@0.5" in row else "-"
            r = level["redundancy"]
            lines.append(
                f"| {'data' if r is None else format(r, 'g')} | {mark}{row['strength']:g}{mark} | {row['seeds']} | "
                f"{row['R1@0.5']:.2f} ± {row['R1@0.5_std']:.2f} | {row['R1@0.7']:.2f} ± {row['R1@0.7_std']:.2f} | "
                f"{row['mIoU']:.2f} ± {row['mIoU_std']:.2f} | {sw} | "
                f"{row['mutual_knn']:.3f} ± {row['mutual_knn_std']:.3f} | {row['retrieval_r1']:.3f} |")
    return "\n".join(lines) + "\n"
