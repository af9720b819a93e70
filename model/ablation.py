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
from model.data import GroundingData
from model.prior import prior_baseline
from storage.atomic import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)
TABLE_COLUMNS = ("R1@0.5", "R1@0.7", "R5@0.5", "R5@0.7", "R1@0.3", "mIoU")


def slug(name: str) -> str:
    """A directory name for a variant: ``"w/o CSM"`` -> ``"wo-CSM"``."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", name.replace("w/o", "wo")).strip("-") or "variant"


def train_or_reuse(cfg: MKTNConfig, data: GroundingData, run_dir: Path, *, device: str | None = None,
                   show_progress: bool = True) -> dict[str, Any]:
    """The ``result.json`` of a run: read when finished, else trained (resumed when interrupted)."""
    from model.train import train

    result_path = run_dir / "result.json"
    if result_path.is_file():
        res = json.loads(result_path.read_text())
        if res.get("config_digest") == cfg.digest():
            log.info("reusing %s", run_dir)
            return res
        raise ValueError(f"{run_dir} holds a run of another config ({res.get('config_digest')}); "
                         "choose another --out")
    train(cfg, data, run_dir, device=device, resume=(run_dir / "last.pt").is_file(), show_progress=show_progress)
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
                 device: str | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Train every variant for every seed; write ``ablation.json`` and ``ablation.md``; return the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(variants)
    if "Full" not in names:
        names.append("Full")
    rows: dict[str, dict[str, Any]] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    split = "test" if data.split("test") else "val"
    for name in names:
        per_seed = []
        for seed in seeds:
            vcfg = override(variant(cfg, name), [f"train.seed={seed}"])
            res = train_or_reuse(vcfg, data, out / slug(name) / f"seed{seed}", device=device,
                                 show_progress=show_progress)
            per_seed.append(eval_metrics(res))
            runs.setdefault(name, []).append({"seed": seed, "metrics": eval_metrics(res),
                                              "best_epoch": res["best_epoch"], "wall_s": res["wall_s"]})
        rows[name] = summarise(per_seed)
        log.info("%s: R1@0.5 %.2f", name, rows[name]["R1@0.5"])
    prior = prior_baseline(data.split("train"), data.split(split))
    rows_with_prior = {"Prior only (no video, no query)": {**prior, **{f"{c}_std": 0.0 for c in TABLE_COLUMNS}},
                       **rows}
    summary = {"split": split, "seeds": list(seeds), "config": cfg.to_dict(), "rows": rows_with_prior,
               "runs": runs}
    atomic_write_json(out / "ablation.json", summary)
    atomic_write_text(out / "ablation.md", markdown_table(
        rows_with_prior, len(seeds), f"Ablation on the {split} split ({len(seeds)} seed(s), preset {cfg.name})"))
    return summary
