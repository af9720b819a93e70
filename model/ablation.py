"""Ablations: the full model and each "w/o" variant on the same data and seeds; the paper's table.

Each (variant, seed) trains into ``out_dir/<variant-slug>/seed<k>/``; a finished run
(its ``result.json`` exists) is reused and an interrupted one resumes, so a long
ablation can be stopped and restarted. The table has the paper's columns (R@1 and
R@5 at IoU 0.5 and 0.7; R@1 IoU 0.3 and mIoU added), the mean over seeds and, with
several seeds, the standard deviation; a "Prior only" row gives the floor.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.config import MAIN_VARIANTS, MKTNConfig, override, variant
from model.controls import controls_summary
from model.data import GroundingData
from model.prior import order_prior_baseline, prior_baseline
from storage.atomic import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)
TABLE_COLUMNS = ("R1@0.5", "R1@0.7", "R5@0.5", "R5@0.7", "R1@0.3", "mIoU")
CONTROL_ROWS = {
    "order_prior": "Order-aware prior (rank in the annotation + query count)",
    "video_swapped": "Full, every video's features swapped for another's (control)",
    "order_shuffled": "Full, each video's queries in shuffled order (control)",
}


def slug(name: str) -> str:
    """A directory name for a variant: ``"w/o CSM"`` -> ``"wo-CSM"``."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", name.replace("w/o", "wo")).strip("-") or "variant"


def train_or_reuse(cfg: MKTNConfig, data: GroundingData, run_dir: Path, *, device: str | None = None,
                   show_progress: bool = True, controls: bool = True) -> dict[str, Any]:
    """The ``result.json`` of a run: read when finished, else trained (resumed when interrupted).

    ``controls``: the run's test controls (``model.controls``) are computed by the trainer; a
    finished run written before controls existed gets them from its best checkpoint."""
    from model.train import train

    result_path = run_dir / "result.json"
    if result_path.is_file():
        res = json.loads(result_path.read_text())
        if not cfg.matches_digest(res.get("config_digest")):
            raise ValueError(f"{run_dir} holds a run of another config ({res.get('config_digest')}); "
                             "choose another --out")
        log.info("reusing %s", run_dir)
        if controls and res.get("test") and not res.get("controls"):
            from model.evaluate import evaluate_split

            res["controls"] = evaluate_split(res["best_checkpoint"], data, split="test", device=device,
                                             train_records=data.split("train")).controls
        return res
    train(cfg, data, run_dir, device=device, resume=(run_dir / "last.pt").is_file(), show_progress=show_progress,
          controls=controls)
    return json.loads(result_path.read_text())


def eval_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Test metrics of a run when it had a test split, else its best validation metrics."""
    return result["test"] if result.get("test") else result["best_val"]


def summarise(per_seed: Sequence[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in TABLE_COLUMNS:
        vals = np.array([m[k] for m in per_seed], dtype=np.float64)
        out[k] = float(vals.mean())
        out[f"{k}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    return out


def markdown_table(rows: dict[str, dict[str, Any]], seeds: int, title: str) -> str:
    head = "| Model | " + " | ".join(c.replace("@", " IoU=").replace("R1", "R@1").replace("R5", "R@5")
                                      for c in TABLE_COLUMNS) + " |"
    lines = [f"### {title}", "", head, "|" + "---|" * (len(TABLE_COLUMNS) + 1)]
    for name, m in rows.items():
        cells = [f"{m[c]:.2f}" + (f" ± {m[c + '_std']:.2f}" if seeds > 1 and m.get(c + "_std") else "")
                 for c in TABLE_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_ablation(cfg: MKTNConfig, data: GroundingData, out_dir: str | os.PathLike[str], *,
                 variants: Sequence[str] = MAIN_VARIANTS, seeds: Sequence[int] = (0,),
                 device: str | None = None, show_progress: bool = True, controls: bool = True) -> dict[str, Any]:
    """Train every variant for every seed; write ``ablation.json`` and ``ablation.md``; return the summary.

    With ``controls`` the table also has the order-aware prior and, for the full model, the
    video-swapped and order-shuffled controls (``model.controls``; mean over seeds), and
    ``ablation.json`` carries every run's controls under ``controls``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(variants)
    if "Full" not in names:
        names.append("Full")
    rows: dict[str, dict[str, Any]] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    run_controls: dict[str, list[dict[str, dict[str, float]]]] = {}
    split = "test" if data.split("test") else "val"
    for name in names:
        per_seed = []
        for seed in seeds:
            vcfg = override(variant(cfg, name), [f"train.seed={seed}"])
            res = train_or_reuse(vcfg, data, out / slug(name) / f"seed{seed}", device=device,
                                 show_progress=show_progress, controls=controls)
            per_seed.append(eval_metrics(res))
            runs.setdefault(name, []).append({"seed": seed, "metrics": eval_metrics(res),
                                              "best_epoch": res["best_epoch"], "wall_s": res["wall_s"],
                                              "controls": res.get("controls")})
            if res.get("controls"):
                run_controls.setdefault(name, []).append(res["controls"])
        rows[name] = summarise(per_seed)
        log.info("%s: R1@0.5 %.2f", name, rows[name]["R1@0.5"])
    zero_std = {f"{c}_std": 0.0 for c in TABLE_COLUMNS}
    prior = prior_baseline(data.split("train"), data.split(split))
    rows_with_prior = {"Prior only (no video, no query)": {**prior, **zero_std}}
    if controls:
        order = order_prior_baseline(data.split("train"), data.split(split))
        rows_with_prior[CONTROL_ROWS["order_prior"]] = {**order, **zero_std}
    rows_with_prior.update(rows)
    summary: dict[str, Any] = {"split": split, "seeds": list(seeds), "config": cfg.to_dict(),
                               "rows": rows_with_prior, "runs": runs}
    if controls:
        # every variant's model controls, mean over its seeds; the full model's also in the table
        ctrl = {name: {k: summarise([c[k] for c in cs]) for k in ("video_swapped", "order_shuffled")
                       if all(k in c for c in cs)}
                for name, cs in run_controls.items() if len(cs) == len(seeds)}
        summary["controls"] = {"prior": prior, "order_prior": order, "variants": ctrl}
        for k, row in ctrl.get("Full", {}).items():
            rows_with_prior[CONTROL_ROWS[k]] = row
        if "Full" in ctrl:
            summary["controls_summary"] = controls_summary(rows["Full"], {"prior": prior, "order_prior": order,
                                                                          **ctrl["Full"]})
    atomic_write_json(out / "ablation.json", summary)
    table = markdown_table(
        rows_with_prior, len(seeds), f"Ablation on the {split} split ({len(seeds)} seed(s), preset {cfg.name})")
    if summary.get("controls_summary"):
        table += "\n" + summary["controls_summary"] + "\n"
    atomic_write_text(out / "ablation.md", table)
    return summary
