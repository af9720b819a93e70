"""``mktn sweep-alignment``: accuracy and measured alignment across alignment strengths.

On given data (``--features/--queries/--annotations``) it trains one model per strength
(and seed, ``--seeds``). With ``--redundancy R1 R2 ...`` it builds its own data: one
synthetic benchmark (``--synth-domain``, ``--synth-size``, ``--synth-videos``) whose
sentences are written at every redundancy level (``pipeline/synth/redundancy.py``: the
same videos, so one extraction serves every level), each level's sentences embedded into
a query store of its own, then the redundancy x strength x seed grid: ``grid.json``,
``grid.png`` (one curve per level, seed-spread bars) and ``grid.md``, with the best
strength per level. Every run is reused when finished (``result.json``), so an
interrupted grid resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DATA_NAME = "synth"  # dataset group name in the grid's own stores


def configure(parser: argparse.ArgumentParser) -> None:
    from pipeline.cli.train import add_config_arguments, add_data_arguments

    add_data_arguments(parser, required=False)
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, help="directory for the runs, sweep/grid .json and .png")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.25, 1.0, 4.0],
                        help="alignment-strength factors (default 0 0.25 1 4)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="training seeds, each a run per strength (default: the config's seed)")
    g = parser.add_argument_group("redundancy grid (builds its own synthetic data)")
    g.add_argument("--redundancy", type=float, nargs="+", default=None, metavar="R",
                   help="redundancy levels in (0, 1]: the share of a query's content words that the "
                   "video shows (1 = the generator's own sentences)")
    g.add_argument("--synth-domain", default="shapes", choices=["shapes", "street"],
                   help="generator of the grid's data (default shapes)")
    g.add_argument("--synth-size", default="default", choices=["quick", "default"],
                   help="size preset of the grid's data (default: default)")
    g.add_argument("--synth-videos", type=int, default=None, help="number of videos (overrides the preset)")
    g.add_argument("--synth-seed", type=int, default=0, help="seed of the grid's data (default 0)")
    parser.set_defaults(func=run)


def _sub(argv: list[str]) -> None:
    """Run another mktn command in-process; a failure stops the grid with its own message."""
    from pipeline.cli import main

    code = main(argv)
    if code != 0:
        raise RuntimeError(f"`mktn {' '.join(argv)}` failed (exit {code}); see its message above")


def build_redundancy_data(args: argparse.Namespace, out: Path) -> dict[float, dict[str, str]]:
    """The grid's data: videos once, annotations and a query store per level, one feature store."""
    import dataclasses

    from pipeline.synth import build_synth_config, generate_benchmark, write_annotations_only

    base_cfg = build_synth_config(args.synth_size, args.synth_domain, num_videos=args.synth_videos)
    base = out / "data" / "videos-set"
    generate_benchmark(base, base_cfg, args.synth_seed, progress=not args.no_progress)
    features = out / "stores" / "features.zarr"
    extract = ["extract", "--videos", str(base / "videos"), "--store", str(features), "--dataset", DATA_NAME]
    _sub(extract + (["--no-progress"] if args.no_progress else []))
    levels: dict[float, dict[str, str]] = {}
    for r in args.redundancy:
        ann = out / "data" / f"redundancy-{r:g}" / "annotations"
        stats = write_annotations_only(ann, dataclasses.replace(base_cfg, redundancy=r), args.synth_seed)
        queries = out / "stores" / f"queries-redundancy-{r:g}.zarr"
        _sub(["embed", "--annotations", *(f"{s}={ann / f'{s}.jsonl'}" for s in ("train", "val", "test")),
              "--store", str(queries), "--dataset", DATA_NAME, *(["--no-progress"] if args.no_progress else [])])
        levels[r] = {"annotations": str(ann), "queries": str(queries), "features": str(features),
                     "visible_word_share": stats["visible_word_share"]}
    return levels


def run(args: argparse.Namespace) -> int:
    import torch

    from model.config import override
    from model.sweep import grid_markdown, plot_grid, run_sweep, summarise_grid
    from pipeline.cli.train import config_from_args, data_from_args, require_stores
    from storage.atomic import atomic_write_json, atomic_write_text

    given = [n for n in ("features", "queries", "annotations") if getattr(args, n)]
    out = Path(args.out)
    try:
        cfg = config_from_args(args)
        seeds = args.seeds if args.seeds else [cfg.train.seed]
        if args.redundancy:
            if given:
                raise ValueError("--redundancy builds its own synthetic data; drop --"
                                 + ", --".join(given))
            bad = [r for r in args.redundancy if not 0 < r <= 1]
            if bad:
                raise ValueError(f"--redundancy levels must be in (0, 1], got {bad}")
        elif len(given) < 3:
            missing = sorted({"features", "queries", "annotations"} - set(given))
            raise ValueError("give the data (--" + ", --".join(missing) + ") or --redundancy levels")
        if args.threads:
            torch.set_num_threads(args.threads)
        runs: dict[float | None, dict[int, dict[str, Any]]] = {}
        levels_info: dict[str, Any] = {}
        if args.redundancy:
            levels = build_redundancy_data(args, out)
            for r, paths in levels.items():
                level_args = argparse.Namespace(**{**vars(args), "features": paths["features"],
                                                    "queries": paths["queries"],
                                                    "annotations": [paths["annotations"]], "dataset": DATA_NAME})
                data = data_from_args(level_args)
                levels_info[f"{r:g}"] = paths
                for s in seeds:
                    runs.setdefault(r, {})[s] = run_sweep(
                        override(cfg, [f"train.seed={s}"]), data, out / f"redundancy-{r:g}" / f"seed-{s}",
                        strengths=args.strengths, seed=s, device=args.device, show_progress=not args.no_progress)
        else:
            require_stores(args)
            data = data_from_args(args)
            if len(seeds) == 1:  # the original single sweep, written in --out itself
                summary = run_sweep(cfg, data, out, strengths=args.strengths, seed=seeds[0],
                                    device=args.device, show_progress=not args.no_progress)
                _print_points(summary)
                print(json.dumps({"plot": f"{out}/sweep.png", "json": f"{out}/sweep.json"}))
                return 0
            for s in seeds:
                runs.setdefault(None, {})[s] = run_sweep(
                    override(cfg, [f"train.seed={s}"]), data, out / f"seed-{s}", strengths=args.strengths,
                    seed=s, device=args.device, show_progress=not args.no_progress)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as exc:
        print(f"mktn sweep-alignment: error: {exc}", file=sys.stderr)
        return 2
    grid = summarise_grid(runs)
    grid.update({"seeds": seeds, "strengths": args.strengths, "config": cfg.to_dict(), "data": levels_info})
    if args.redundancy:
        grid["synth"] = {"domain": args.synth_domain, "size": args.synth_size, "videos": args.synth_videos,
                         "seed": args.synth_seed}
    atomic_write_json(out / "grid.json", grid)
    atomic_write_text(out / "grid.md", grid_markdown(grid))
    plot_grid(grid, out / "grid.png")
    print(grid_markdown(grid), end="")
    for level in grid["levels"]:
        r = level["redundancy"]
        print(f"best strength at {'the given data' if r is None else f'redundancy {r:g}'}: "
              f"{level['best_strength']:g} (R1@0.5 {level['best_R1@0.5']:.2f}"
              + (f", {level['margin_over_next']:.2f} above the next)" if "margin_over_next" in level else ")"))
    print(json.dumps({"plot": f"{out}/grid.png", "json": f"{out}/grid.json", "table": f"{out}/grid.md"}))
    return 0


def _print_points(summary: dict[str, Any]) -> None:
    print(f"{'strength':>9} {'R1@0.5':>7} {'mIoU':>7} {'mutualkNN':>9} {'q->v R@1':>9}")
    for p in summary["points"]:
        print(f"{p['strength']:>9g} {p['metrics']['R1@0.5']:>7.2f} {p['metrics']['mIoU']:>7.2f} "
              f"{p['alignment']['mutual_knn']:>9.3f} {p['alignment']['retrieval_r1']:>9.3f}")
