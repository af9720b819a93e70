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
        points.append({"strength": s, "metrics": metrics, "alignment": align})
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
