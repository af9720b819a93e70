"""The ``reproduce`` flow: raw videos to the final report in one command (``mktn reproduce``).

With no dataset it generates the synthetic benchmark into ``<work>/data``
(once; later runs reuse it), then for either dataset: ``extract-features`` (or, for a
dataset given as published features, ``import-features``: ``flows/import_features.py``) ->
``embed-queries`` -> ``train`` -> ``evaluate`` (the test split, else val) ->
optionally the ablation (the full model and each "w/o" variant, each its own
cached ``train`` + ``evaluate``) -> the report (markdown + PNGs) and
``metrics.json`` in ``<work>/report/<dataset>/``.

Every step is cached on content (see ``flows/caching.py``), so a rerun with
nothing changed extracts, embeds and trains nothing; a changed video is
re-extracted alone; a changed model setting retrains without re-extracting.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from flows import tasks
from flows.caching import persisted
from flows.dataset import DatasetSpec
from flows.embed import embed_queries
from flows.evaluate import TRAINED_KEYS, evaluate
from flows.extract import extract_features
from flows.import_features import import_features
from flows.report import METRIC_ORDER, artifact_markdown
from flows.runners import DEFAULT_MAX_WORKERS
from flows.train import train
from flows.workspace import Workspace
from storage.fingerprint import digest_strings

logger = logging.getLogger(__name__)

QUICK_EPOCHS = 3  # --quick: enough epochs to see the loss fall on the 12-video dataset
# --quick: a shorter skip-thought training (the demo preset's 20 epochs dominate a quick run)
QUICK_ENCODER: dict[str, Any] = {"skipthought_config": {"epochs": 4}}
SYNTH_SEED = 0


# modules the flow imports even when every step is a cache hit: the extraction config
# (torch, via the backbone registry), the stores (zarr), the synthetic benchmark's check,
# and what Prefect serialises flow parameters with when it creates the first flow run
PRELOAD_MODULES = (
    "pipeline.extract", "storage.features", "storage.queries", "pipeline.synth", "fastapi.encoders",
)


def preload() -> None:
    """Import :data:`PRELOAD_MODULES` now (``mktn reproduce`` does it while its Prefect server boots)."""
    import importlib

    for name in PRELOAD_MODULES:
        importlib.import_module(name)


@flow(name="reproduce", log_prints=False)
def reproduce(
    work_dir: str | None = None,
    dataset: dict[str, Any] | None = None,
    quick: bool = False,
    ablate: bool = False,
    preset: str = "synthetic",
    overrides: list[str] | None = None,
    epochs: int | None = None,
    extractor: dict[str, Any] | None = None,
    encoder: dict[str, Any] | None = None,
    dask: str | None = None,
    max_workers: int = DEFAULT_MAX_WORKERS,
    feature_store: str | None = None,
    query_store: str | None = None,
    synth_domain: str = "shapes",
    controls: bool = True,
) -> dict[str, Any]:
    """Run everything on ``dataset`` (a ``DatasetSpec`` dict) or, when ``None``, the synthetic benchmark.

    ``quick``: the 12-video synthetic set, ``QUICK_EPOCHS`` epochs and a shorter
    skip-thought training (``QUICK_ENCODER``), for tests and a first look.
    ``synth_domain``: which synthetic generator (``shapes``, or ``street``: data in
    ``data/synthetic/street/<size>``, dataset ``synthetic-street[-quick]``).
    ``controls``: evaluate the controls too (``model.controls``: two extra evaluation passes) and
    report them beside MKTN.
    Returns where the report, the metrics JSON and each step's summary are.
    """
    log = get_run_logger()
    ws = Workspace.at(work_dir, feature_store=feature_store, query_store=query_store)
    if epochs is None and quick:
        epochs = QUICK_EPOCHS
    if encoder is None and quick:
        encoder = QUICK_ENCODER

    if dataset is None:
        size = "quick" if quick else "default"
        # the shapes benchmark keeps its folder and dataset name; another domain gets its own
        shapes = synth_domain == "shapes"
        out = ws.synthetic_dir / size if shapes else ws.synthetic_dir / synth_domain / size
        name = "synthetic" if shapes else f"synthetic-{synth_domain}"
        from pipeline.synth import is_complete

        synth = persisted(tasks.generate_synthetic, ws.root, refresh=not is_complete(out))(
            out=str(out), size=size, seed=SYNTH_SEED, workers=DEFAULT_MAX_WORKERS, domain=synth_domain
        )
        from flows.dataset import discover

        spec = discover(synth["out"], name=name if size == "default" else f"{name}-{size}")
    else:
        spec = DatasetSpec.from_dict(dataset)
    if "train" not in spec.annotations:
        raise ValueError(
            f"dataset {spec.name!r} has no train annotations ({sorted(spec.annotations)}); "
            "give train=PATH to --annotations"
        )
    eval_split = spec.eval_split()
    common: dict[str, Any] = {"work_dir": ws.root, "feature_store": ws.feature_store}

    if spec.features is not None:
        # published features: imported into the run's feature store instead of extracted
        feat = spec.features
        ext = import_features(
            source=str(feat["path"]), format=str(feat["format"]), annotations=spec.annotations,
            dataset=spec.name, annotation_format=spec.fmt, durations=spec.durations,
            clip_seconds=feat.get("clip_seconds"), fps=feat.get("fps"),
            feature_type=feat.get("feature_type"), **common,
        )
    else:
        ext = extract_features(
            videos_dir=spec.videos_dir, dataset=spec.name, extractor=extractor,
            dask=dask, max_workers=max_workers, **common,
        )
    # the sub-flows take the dataset as their public parameters (spec.flow_params()); each converts
    # it back to a DatasetSpec, and the annotations are parsed once for all of them (DatasetSpec.load)
    emb = embed_queries(**spec.flow_params(), query_store=ws.query_store, encoder=encoder, **common)
    stores: dict[str, Any] = {**common, "query_store": ws.query_store}
    data_args: dict[str, Any] = {
        **spec.flow_params(), "extractor_id": ext["extractor_id"], "encoder_id": emb["encoder_id"],
    }
    run = train(preset=preset, overrides=overrides, epochs=epochs, **data_args, **stores)
    # train() evaluated its best checkpoint on the test split already: the evaluate flow reuses that
    # evaluation (one per checkpoint and split) and evaluates only what training did not (e.g. val)
    ev = evaluate(
        checkpoint=run["best_checkpoint"], split=eval_split,
        out_dir=str(Path(run["run_dir"]) / f"eval-{spec.name}"), controls=controls,
        trained={k: run[k] for k in TRAINED_KEYS}, **data_args, **stores,
    )
    ev_controls = ev.get("controls") if controls else None

    spec = replace(spec, annotations_sha=run["annotations_sha"])  # the digest the sub-flows computed
    baseline = persisted(tasks.prior_baseline, ws.root)(spec=spec, split=eval_split)
    ablation: list[dict[str, Any]] | None = None
    if ablate:
        out = Path(run["run_dir"]) / "ablation"
        abl = persisted(tasks.run_ablation, ws.root, refresh=not (out / "ablation.json").is_file())(
            ablation_key=run["run_key"], out_dir=str(out), config=run["config"],
            feature_store=ws.feature_store, query_store=ws.query_store, spec=spec,
            extractor_id=ext["extractor_id"], encoder_id=emb["encoder_id"],
        )
        ablation = abl["rows"]

    warnings = []
    if ext["failed"]:
        verb = "could not be imported" if spec.features is not None else "failed to extract"
        warnings.append(
            f"{len(ext['failed'])} video(s) {verb} and were left out: "
            + "; ".join(f"{v}: {r}" for v, r in list(ext["failed"].items())[:5])
        )
    report_issues = emb["annotations"]["report"]
    if report_issues.get("pairs", {}).get("rejected"):
        warnings.append(f"annotations: {emb['annotations']['summary']}")
    details = {
        "dataset": spec.name,
        **({"features": f"{spec.features['format']}:{spec.features['path']}"} if spec.features is not None
           else {"videos": spec.videos_dir}),
        "annotations": spec.annotations,
        "extractor_id": ext["extractor_id"],
        "encoder_id": emb["encoder_id"],
        "config": f"{run['config_name']} ({run['config_digest']})",
        "run_dir": run["run_dir"],
        "checkpoint": run["best_checkpoint"],
        "epochs_run": run["result"].get("epochs_run"),
        "eval_split": eval_split,
    }
    inputs_sha = digest_strings(
        json.dumps(ev["metrics"], sort_keys=True), ev["checkpoint_sha"], run["run_key"],
        json.dumps(ablation, sort_keys=True), json.dumps(details, sort_keys=True), json.dumps(warnings),
        json.dumps(baseline, sort_keys=True), json.dumps(ev_controls, sort_keys=True),
    )
    out_dir = ws.report_dir(spec.name)
    report = persisted(tasks.write_report, ws.root, refresh=not (out_dir / "report.md").is_file()
                       or not (out_dir / "report.html").is_file())(
        out_dir=str(out_dir), inputs_sha=inputs_sha,
        title=f"MKTN on {spec.name}: reproduction report", metrics=ev["metrics"],
        run_dir=run["run_dir"], predictions_path=ev["predictions"], spec=spec, split=eval_split,
        ablation=ablation, baseline=baseline, details=details, warnings=warnings, controls=ev_controls,
    )

    m = ev["metrics"]
    create_table_artifact(
        key="reproduce-metrics",
        table=[{"dataset": spec.name, "split": eval_split,
                **{k: round(float(m[k]), 2) for k in METRIC_ORDER if k in m}}],
        description=f"MKTN on {spec.name}/{eval_split} ({run['config_name']})",
    )
    if ablation:
        create_table_artifact(key="ablation", table=ablation, description=f"ablation on {spec.name}/{eval_split}")
    create_link_artifact(
        key="reproduce-report", link=Path(report["markdown"]).as_uri(), link_text="report.md",
        description=f"the reproduction report of {spec.name}",
    )
    create_markdown_artifact(
        key="reproduce-summary",
        # the plots inline (data URIs, under ARTIFACT_MAX_BYTES in all): a remote UI cannot open
        # report.md's relative PNG paths, nor a link to a local file
        markdown=artifact_markdown(report["markdown"], files={"metrics": report["metrics_json"]}),
        description=f"reproduction report of {spec.name}",
    )
    if report.get("html"):
        create_link_artifact(
            key="reproduce-report-html", link=Path(report["html"]).as_uri(), link_text="report.html",
            description=f"the reproduction report of {spec.name} as one page: players and timelines",
        )
    log.info("report: %s; metrics: %s", report["markdown"], report["metrics_json"])
    return {
        "dataset": spec.name,
        "report": report["markdown"],
        "report_html": report.get("html", ""),
        "metrics_json": report["metrics_json"],
        "figures": report["figures"],
        "metrics": m,
        "controls": ev_controls,
        "extraction": {"counts": ext["counts"], "failed": ext["failed"], "extractor_id": ext["extractor_id"],
                       "imported": spec.features is not None},
        "embedding": {"encoder_id": emb["encoder_id"], "num_queries": emb.get("num_queries"),
                      "embedded": not (emb["task_cached"] or emb.get("cached"))},
        "training": {"run_dir": run["run_dir"], "run_key": run["run_key"], "trained": not (run["cached"] or run["reused"])},
        "evaluation": {"cached": ev["cached"], "reused_from": ev.get("reused_from")},
        "ablation": ablation,
    }
