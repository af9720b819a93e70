"""Thin Prefect tasks over the library functions; flows compose them.

Every task that does real work carries a content cache policy
(:func:`flows.caching.content_policy`): its key names the parameters whose
values decide the result (digests, store locations, configuration hashes),
plus the task's source and the project packages its work runs through.
Results are small JSON-able dicts (paths, ids, counts), never arrays.

I/O-bound tasks retry transient failures with backoff
(:mod:`flows.retry`); a corrupt video or a malformed file fails at once.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from prefect import task

from flows.caching import content_policy
from flows.dataset import DatasetSpec
from flows.fingerprints import FingerprintIndex
from flows.logs import send_library_logs_to_runs
from flows.retry import (
    RETRIES,
    RETRY_DELAYS,
    RETRY_JITTER,
    PermanentTaskError,
    TransientTaskError,
    reason_is_transient,
    retry_transient,
)

logger = logging.getLogger(__name__)

_RETRY: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_jitter_factor": RETRY_JITTER,
    "retry_condition_fn": retry_transient,
}

EXTRACT_PACKAGES = ("pipeline", "storage")

# Seconds one video may take to decode + extract + write in the flows (the extractor setting
# ``video_timeout_s``, e.g. ``extractor={"video_timeout_s": 7200}`` or ``mktn reproduce
# --video-timeout``): an hour is generous for a long video on CPU (a 10-minute video with
# r3d_18 at 8 fps takes a few minutes on 2 cores). A video over it fails alone, named, and
# is not retried; the other videos go on.
DEFAULT_VIDEO_TIMEOUT_S = 3600.0
# the extract-videos task's own timeout_seconds (a backstop behind the per-video limit, for a
# hang outside a video's extraction, e.g. a stalled store): per-video limit x videos + this
TASK_TIMEOUT_SLACK_S = 120.0


class _ThreadTimeoutWarningFilter(logging.Filter):
    """Drop Prefect's per-run warning that a timeout cannot interrupt a worker thread's blocking call.

    It is true, and the reason the extraction loop enforces its per-video limit itself (it
    polls the decoder thread, so a decode stuck in C is given up on and left behind); the
    warning would otherwise be logged once per extract-videos task run.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "running in a worker thread" not in record.getMessage()


logging.getLogger("prefect.task_runs").addFilter(_ThreadTimeoutWarningFilter())
# the library's own records (pipeline.*, model.*, storage.*, flows.*) go to the run they are logged
# in, in every process that runs these tasks (every flow module imports this one): flows/logs.py
send_library_logs_to_runs()
EMBED_PACKAGES = ("pipeline", "storage")
EMBED_DEFAULTS: dict[str, Any] = {"progress": False}  # pipeline.embed.build_embed_config(defaults=)
MODEL_PACKAGES = ("pipeline", "storage", "model")


# --- sources ---------------------------------------------------------------------------


@task(name="fingerprint-files", **_RETRY)
def fingerprint_files(paths: list[str], index_path: str) -> dict[str, str]:
    """sha256 of each file (re-hashed only when its size/mtime moved), keyed by path."""
    index = FingerprintIndex(index_path)
    digests = index.digests(paths)
    index.save()
    return digests


# --- extraction ------------------------------------------------------------------------


@task(name="open-feature-group", **_RETRY)
def open_feature_group(feature_store: str, config: dict[str, Any]) -> dict[str, Any]:
    """Create (or check) the extractor group once, before videos are written concurrently."""
    from pipeline.extract import ExtractionConfig
    from storage.features import FeatureStore

    cfg = ExtractionConfig(**config)
    group = FeatureStore(feature_store).group(
        cfg.dataset, cfg.resolved_extractor_id(), attrs=cfg.feature_config()
    )
    return {"extractor_id": group.extractor_id, "complete": list(group.committed_attrs())}


def extract_task_timeout(config: dict[str, Any], num_videos: int) -> float | None:
    """``timeout_seconds`` of an extract-videos task over ``num_videos`` (None: no limit)."""
    per_video = config.get("video_timeout_s")
    if per_video is None:
        return None
    return float(per_video) * max(1, num_videos) + TASK_TIMEOUT_SLACK_S


def videos_key(jobs: list[dict[str, str]]) -> str:
    """A digest of a group's videos: ``video_id:sha256`` of each, in order."""
    from storage.fingerprint import digest_strings

    return digest_strings(*(f"{j['video_id']}:{j['sha256']}" for j in jobs))


@task(
    name="extract-videos",
    cache_policy=content_policy(
        ["videos_key", "feature_store", "extractor_id", "feature_config_hash"], EXTRACT_PACKAGES
    ),
    **_RETRY,
)
def extract_video_group(
    jobs: list[dict[str, str]],
    videos_key: str,
    feature_store: str,
    extractor_id: str,
    feature_config_hash: str,
    config: dict[str, Any],
) -> dict[str, Any]:
    """Extract a small group of videos, one ``pipeline.extract.extract_one`` call each.

    A video that fails does not stop the others. A *transient* failure (I/O) raises
    after the group, so Prefect retries it (finished videos are then skipped by the
    store's commit markers); a deterministic one (corrupt file) is reported in the
    result and remembered with it until the file's content changes.
    """
    from pipeline.extract import ExtractionConfig, extract_one
    from storage.features import FeatureStore

    cfg = ExtractionConfig(**config)
    group = FeatureStore(feature_store).group(cfg.dataset, extractor_id, attrs=cfg.feature_config())
    committed = group.committed_attrs()
    rows = []
    transient = []
    for job in jobs:
        # the store's own check trusts size + mtime; the content key is the sha256: features
        # of other content (a same-size file put back with its old mtime) are redone
        recorded = (committed.get(job["video_id"], {}).get("source_fingerprint") or {}).get("sha256")
        force = recorded is not None and recorded != job["sha256"]
        # the flow hashed the file once (fingerprint index): its digest is passed down, not recomputed
        res = extract_one(job["path"], group, cfg, video_id=job["video_id"], force=force,
                          sha256=job["sha256"])
        row = {"video_id": job["video_id"], "path": job["path"], "status": res.status,
               "num_clips": int(res.num_clips), "seconds": float(res.seconds), "sha256": job["sha256"]}
        if res.status == "failed":
            row["reason"] = res.reason
            if reason_is_transient(res.reason):
                transient.append(f"{job['video_id']}: {res.reason}")
        rows.append(row)
    if transient:
        raise TransientTaskError("transient failures, retrying: " + "; ".join(transient))
    return {"task_run_id": current_task_run_id(), "videos": rows}


def group_jobs(jobs: list[dict[str, str]], max_workers: int, per_task: int | None = None) -> list[list[dict[str, str]]]:
    """Split jobs into tasks: one video per task for small sets, groups of up to 16 for large ones.

    Every task run costs the Prefect API a few round trips (~50 ms even as a cache
    hit); groups keep a rerun of a 200-video dataset at ~16 task runs while leaving
    ``8 * max_workers`` groups to spread over the workers.
    """
    if per_task is None:
        per_task = max(1, min(16, -(-len(jobs) // (8 * max(1, max_workers)))))
    return [jobs[i : i + per_task] for i in range(0, len(jobs), per_task)]


@task(
    name="feature-normalization",
    cache_policy=content_policy(["feature_store", "dataset", "extractor_id", "videos"], EXTRACT_PACKAGES),
    **_RETRY,
)
def feature_normalization(
    feature_store: str, dataset: str, extractor_id: str, videos: list[list[str]]
) -> dict[str, Any]:
    """Per-dimension statistics over the committed videos (``FeatureGroup.compute_normalization``).

    ``videos`` is ``[[video_id, sha256], ...]``: the key changes when any video does.
    """
    from storage.features import FeatureStore

    group = FeatureStore(feature_store).group(dataset, extractor_id, create=False)
    norm = group.compute_normalization([v for v, _ in videos])
    return {"num_videos": int(norm.num_videos), "num_clips": int(norm.num_clips)}


def consolidate_features(feature_store: str, dataset: str, extractor_id: str) -> bool:
    """The extraction's last step, after every task: the group's metadata snapshot, so the next
    run's checks read one snapshot instead of every video's metadata (``storage.features``).
    A plain call, not a task: it must run whenever the group lacks one. True when written."""
    from storage.features import FeatureStore

    return FeatureStore(feature_store).consolidate(dataset, extractor_id)


def store_has_normalization(feature_store: str, dataset: str, extractor_id: str) -> bool:
    from storage.features import FeatureStore

    try:
        group = FeatureStore(feature_store).group(dataset, extractor_id, create=False)
    except KeyError:
        return False
    return group.normalization() is not None


def current_task_run_id() -> str:
    """The running task run's id: a cached result carries the id of the run that made it."""
    from prefect.runtime import task_run

    return str(task_run.id)


def was_cached(future: Any, result: dict[str, Any]) -> bool:
    """True when ``result`` came from the cache, not from running ``future``'s task."""
    return result.get("task_run_id") not in (None, str(future.task_run_id))


# --- published features --------------------------------------------------------------------


def imported_extractor_id(fmt: str, source_sha256: str, feature_type: str | None,
                          clip_seconds: float | None, fps: float | None) -> str:
    """The store group of an import: ``<format>[-<type>]@<sha8>``, plus the time-axis option when one
    is given (``-clip0.5s``, ``-fps2``), so imports of one source with other options never collide."""
    from pipeline.importers import default_extractor_id
    from storage.keys import safe_component

    base = default_extractor_id(fmt, source_sha256, feature_type)
    if clip_seconds is not None:
        base += f"-clip{clip_seconds:g}s"
    elif fps is not None:
        base += f"-fps{fps:g}"
    return safe_component(base, what="extractor id")


@task(
    name="import-features",
    cache_policy=content_policy(
        ["format", "source_sha256", "options", "feature_store", "spec.name", "extractor_id",
         "spec.annotations_sha", "spec.durations"],
        EXTRACT_PACKAGES,
    ),
    **_RETRY,
)
def import_published_features(
    format: str,
    source: str,
    source_sha256: str,
    options: dict[str, Any],
    feature_store: str,
    spec: DatasetSpec,
    extractor_id: str,
    file_digests: dict[str, str],
) -> dict[str, Any]:
    """``pipeline.importers.import_features`` of the videos ``spec``'s annotations name (their
    durations give the time axis where the source has none). ``format``: the features' format;
    ``options``: ``clip_seconds``, ``fps``, ``feature_type``. A source that cannot be used at all
    fails the task (not retried)."""
    from pipeline.importers import FeatureImportError, import_features, record_durations
    from storage.features import FeatureStore

    try:
        wanted = record_durations(spec.load().records)
        summary = import_features(
            format, source, FeatureStore(feature_store), spec.name, durations=wanted,
            clip_seconds=options.get("clip_seconds"), fps=options.get("fps"),
            feature_type=options.get("feature_type"), extractor_id=extractor_id, progress=False,
            file_digests=file_digests,
        )
    except FeatureImportError as exc:
        raise PermanentTaskError(str(exc)) from None
    return {**summary.to_dict(), "done_ids": list(summary.done), "skipped_ids": list(summary.skipped),
            "task_run_id": current_task_run_id()}


# --- annotations and queries -------------------------------------------------------------


def grounding_data(records: Any, feature_store: str, query_store: str, dataset: str, extractor_id: str,
                   encoder_id: str) -> Any:
    """``model.loader.load_grounding_data`` for ``records`` from the two stores (no progress bar)."""
    from model.loader import load_grounding_data

    return load_grounding_data(feature_store, query_store, records, dataset=dataset,
                               extractor_id=extractor_id, encoder_id=encoder_id, show_progress=False)


@task(
    name="validate-annotations",
    cache_policy=content_policy(["spec.annotations_sha", "spec.fmt", "spec.durations"], ("pipeline",)),
    **_RETRY,
)
def validate_annotations(spec: DatasetSpec) -> dict[str, Any]:
    """Parse every split (the run's one parse, ``DatasetSpec.load``); return counts and the
    validation report (issues name ``file:line``)."""
    res = spec.load()
    by_split = {k: len(v) for k, v in res.by_split().items()}
    return {
        "num_records": len(res.records),
        "num_videos": len(res.by_video()),
        "by_split": by_split,
        "summary": res.report.summary(),
        "report": res.report.to_dict(max_issues_per_reason=20),
    }


@task(
    name="embed-queries",
    cache_policy=content_policy(
        ["spec.name", "spec.annotations_sha", "query_store", "encoder_hash", "spec.fmt", "spec.durations"],
        EMBED_PACKAGES,
    ),
    **_RETRY,
)
def embed_dataset_queries(
    spec: DatasetSpec,
    query_store: str,
    encoder: dict[str, Any] | None,
    encoder_hash: str,
) -> dict[str, Any]:
    """Tokenize and embed every query of the dataset (``pipeline.embed.embed_queries``)."""
    from flows.progress import EmbeddingProgress
    from pipeline.embed import build_embed_config, embed_queries
    from storage.queries import QueryStore

    records = spec.load().records
    config = build_embed_config(encoder, dataset=spec.name, defaults=EMBED_DEFAULTS)
    progress = EmbeddingProgress(f"queries of {spec.name} embedded into {query_store}")
    summary = embed_queries(records, QueryStore(query_store), config, on_progress=progress)
    progress.finish()
    return {**summary.to_dict(), "task_run_id": current_task_run_id()}


def query_group_complete(query_store: str, dataset: str, encoder_id: str | None) -> bool:
    from storage.queries import QueryStore

    if not encoder_id:
        return False
    try:
        return bool(QueryStore(query_store).group(dataset, encoder_id).is_complete())
    except (KeyError, ValueError, FileNotFoundError):
        return False


# --- training and evaluation --------------------------------------------------------------


def features_digest(feature_store: str, dataset: str, extractor_id: str) -> str:
    """A digest of the committed videos of a feature group: id + source sha256 of each."""
    from storage.features import FeatureStore
    from storage.fingerprint import digest_strings

    group = FeatureStore(feature_store).group(dataset, extractor_id, create=False)
    parts = []
    for vid, attrs in group.committed_attrs().items():  # sorted by video id
        fp = attrs.get("source_fingerprint") or {}
        # an imported video has no file of its own: the published source's sha256 stands for it
        parts.append(f"{vid}:{fp.get('sha256') or attrs.get('source_sha256', '?')}")
    norm = group.attrs.get("normalization")
    parts.append(json.dumps(norm, sort_keys=True) if norm is not None else "no-normalization")
    return digest_strings(extractor_id, *parts)


def model_config(preset_name: str, overrides: list[str] | None, epochs: int | None) -> Any:
    """An ``MKTNConfig`` from a preset, ``section.key=value`` overrides and an epoch count."""
    from model.config import override, preset, validate

    sets = list(overrides or [])
    if epochs is not None:
        sets.append(f"train.epochs={int(epochs)}")
    cfg = override(preset(preset_name), sets)
    validate(cfg)
    return cfg


@task(
    name="train-model",
    cache_policy=content_policy(["run_key", "run_dir"], MODEL_PACKAGES),
    **_RETRY,
)
def train_model(
    run_key: str,
    run_dir: str,
    config: dict[str, Any],
    feature_store: str,
    query_store: str,
    spec: DatasetSpec,
    extractor_id: str,
    encoder_id: str,
) -> dict[str, Any]:
    """Train MKTN (``model.train.train``) into ``run_dir``; resume an interrupted run there.

    ``run_key`` digests the configuration and every input (features, queries,
    annotations); a finished run (``result.json``) is returned as it is.
    """
    from flows.progress import TrainingArtifacts
    from model.config import MKTNConfig
    from model.train import train

    out = Path(run_dir)
    result_file = out / "result.json"
    reused = result_file.is_file()
    cfg = MKTNConfig.from_dict(config)
    artifacts = TrainingArtifacts(f"MKTN training on {spec.name} ({cfg.name}, {cfg.train.epochs} epochs) "
                                  f"in {out}")
    if reused:
        logger.info("run %s already finished; reusing %s", run_key, result_file)
        result = json.loads(result_file.read_text(encoding="utf-8"))
    else:
        records = spec.load().records
        data = grounding_data(records, feature_store, query_store, spec.name, extractor_id, encoder_id)
        resume = (out / "last.pt").is_file()
        if resume:
            logger.info("resuming the interrupted run in %s", out)
        result = train(cfg, data, out, resume=resume, show_progress=False, on_epoch=artifacts).to_dict()
    artifacts.finish(result.get("history") or [], result.get("best_epoch"))
    return {
        "run_key": run_key,
        "run_dir": str(out),
        "task_run_id": current_task_run_id(),
        "best_checkpoint": str(result["best_checkpoint"]),
        "log": str(out / "log.jsonl"),
        "reused": reused,
        "result": result,
    }


@task(
    name="evaluate-checkpoint",
    cache_policy=content_policy(
        ["checkpoint_sha", "features_sha", "encoder_id", "spec.annotations_sha", "split", "out_dir", "controls"],
        MODEL_PACKAGES,
    ),
    **_RETRY,
)
def evaluate_checkpoint(
    checkpoint: str,
    checkpoint_sha: str,
    features_sha: str,
    feature_store: str,
    query_store: str,
    spec: DatasetSpec,
    extractor_id: str,
    encoder_id: str,
    split: str,
    out_dir: str,
    controls: bool = True,
    reuse_from: str | None = None,
) -> dict[str, Any]:
    """Predict every query of ``split`` with ``checkpoint`` (``model.evaluate.evaluate_split``), with
    the controls (``model.controls``; the priors fit on the train records) unless ``controls`` is off.

    ``reuse_from``: the training run folder that wrote ``checkpoint`` on these same features, queries
    and annotations (the evaluate flow checks the digests): its own evaluation of ``split`` (``train()``
    evaluates the best checkpoint on the test split) is copied to ``out_dir`` instead of evaluating
    the checkpoint again (``model.evaluate.reuse_split_evaluation``); ``reused_from`` in the result
    names it. Not part of the cache key: either way the result is this checkpoint on this split."""
    from model.controls import controls_summary
    from model.evaluate import evaluate_split, reuse_split_evaluation

    ev = None
    if reuse_from is not None:
        ev = reuse_split_evaluation(reuse_from, checkpoint, split=split, out_dir=out_dir, controls=controls)
    if ev is None:
        all_records = spec.load().records
        records = [r for r in all_records if r.split == split]
        if not records:
            raise PermanentTaskError(f"dataset {spec.name!r} has no {split!r} records to evaluate on")
        data = grounding_data(records, feature_store, query_store, spec.name, extractor_id, encoder_id)
        ev = evaluate_split(checkpoint, data, split=split, out_dir=out_dir, controls=controls,
                            train_records=[r for r in all_records if r.split == "train"])
        reuse_from = None
    metrics = ev.metrics
    return {
        "checkpoint": checkpoint,
        "task_run_id": current_task_run_id(),
        "split": split,
        "metrics": dict(metrics),
        "controls": ev.controls,
        "controls_summary": controls_summary(metrics, ev.controls) if ev.controls else None,
        "predictions": str(Path(out_dir) / f"predictions_{split}.jsonl"),
        "metrics_file": str(Path(out_dir) / f"metrics_{split}.json"),
        "reused_from": str(Path(reuse_from) / f"metrics_{split}.json") if reuse_from else None,
    }


# --- the synthetic benchmark and the report ------------------------------------------------


@task(
    name="generate-synthetic",
    cache_policy=content_policy(["out", "size", "seed", "domain"], ("pipeline",)),
    **_RETRY,
)
def generate_synthetic(out: str, size: str, seed: int, workers: int, domain: str = "shapes") -> dict[str, Any]:
    """``pipeline.synth.generate_benchmark`` of ``domain`` (skips videos an earlier run finished)."""
    from pipeline.synth import build_synth_config, generate_benchmark

    result = generate_benchmark(out, build_synth_config(size, domain), seed, workers=workers, progress=False)
    return {
        "out": str(result.out),
        "num_videos": result.num_videos,
        "num_queries": result.num_queries,
        "total_seconds": result.total_seconds,
        "encoded": result.encoded,
    }


@task(name="write-report", cache_policy=content_policy(["out_dir", "inputs_sha"], ("flows",)), **_RETRY)
def write_report(
    out_dir: str,
    inputs_sha: str,
    title: str,
    metrics: dict[str, float],
    run_dir: str,
    predictions_path: str,
    spec: DatasetSpec,
    split: str,
    ablation: list[dict[str, Any]] | None,
    baseline: dict[str, float] | None,
    details: dict[str, Any],
    warnings: list[str],
    controls: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """``flows.report.write_report`` from the run's files (the training history in ``run_dir``'s
    ``result.json``, the predictions JSONL, the annotations)."""
    from flows.report import run_history
    from flows.report import write_report as render

    records = [r for r in spec.load().records if r.split == split]
    with open(predictions_path, encoding="utf-8") as fh:
        predictions = [json.loads(line) for line in fh if line.strip()]
    paths = render(
        out_dir, title=title, metrics=metrics, history=run_history(run_dir),
        predictions=predictions, ground_truth=records, ablation=ablation, baseline=baseline,
        details=details, warnings=warnings, controls=controls, videos=dataset_videos(spec),
    )
    return {"markdown": paths.markdown, "metrics_json": paths.metrics_json, "figures": paths.figures,
            "html": paths.html}


def dataset_videos(spec: DatasetSpec) -> dict[str, str]:
    """Video id -> file of the dataset's videos folder (``pipeline.extract.find_videos``; the id is
    the file name without extension); empty for a dataset of stored features or without a folder."""
    from pipeline.extract import find_videos

    if spec.features is not None or not spec.videos_dir or not Path(spec.videos_dir).is_dir():
        return {}
    return {p.stem: str(p) for p in find_videos(spec.videos_dir)}


@task(
    name="run-ablation",
    cache_policy=content_policy(["ablation_key", "out_dir"], MODEL_PACKAGES),
    **_RETRY,
)
def run_ablation(
    ablation_key: str,
    out_dir: str,
    config: dict[str, Any],
    feature_store: str,
    query_store: str,
    spec: DatasetSpec,
    extractor_id: str,
    encoder_id: str,
) -> dict[str, Any]:
    """The full model and each main "w/o" variant (``model.ablation.run_ablation``; resumable)."""
    from model.ablation import run_ablation as ablate
    from model.config import MKTNConfig

    records = spec.load().records
    data = grounding_data(records, feature_store, query_store, spec.name, extractor_id, encoder_id)
    summary = ablate(MKTNConfig.from_dict(config), data, out_dir, show_progress=False)
    rows = [{"variant": name, **{k: round(float(v), 2) for k, v in row.items() if isinstance(v, (int, float))
                                 and not k.endswith("_std")}} for name, row in summary["rows"].items()]
    return {"split": summary["split"], "rows": rows, "markdown": str(Path(out_dir) / "ablation.md")}


@task(name="prior-baseline", cache_policy=content_policy(["spec.annotations_sha", "split"], MODEL_PACKAGES))
def prior_baseline(spec: DatasetSpec, split: str) -> dict[str, float]:
    """Metrics of the prior-only baseline (no video, no query) on ``split`` (``model.prior``)."""
    from model.prior import prior_baseline as baseline

    records = spec.load().records
    return dict(baseline([r for r in records if r.split == "train"], [r for r in records if r.split == split]))
