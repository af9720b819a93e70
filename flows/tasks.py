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

import logging
import os
from pathlib import Path
from typing import Any

from prefect import task

from flows.caching import content_policy
from flows.fingerprints import FingerprintIndex
from flows.retry import RETRIES, RETRY_DELAYS, RETRY_JITTER, raise_for_reason, retry_transient

logger = logging.getLogger(__name__)

_RETRY: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_jitter_factor": RETRY_JITTER,
    "retry_condition_fn": retry_transient,
}

EXTRACT_PACKAGES = ("pipeline", "storage")
EMBED_PACKAGES = ("pipeline", "storage")
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


def extraction_config(overrides: dict[str, Any] | None, dataset: str, threads: int | None) -> Any:
    """``pipeline.extract.ExtractionConfig`` from JSON-able overrides; unknown keys are an error."""
    import dataclasses

    from pipeline.extract import ExtractionConfig

    overrides = dict(overrides or {})
    known = {f.name for f in dataclasses.fields(ExtractionConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown extractor setting(s) {unknown}; known: {sorted(known)}"
        )
    overrides["dataset"] = dataset
    if threads is not None and "threads" not in overrides:
        overrides["threads"] = threads
    config = ExtractionConfig(**overrides)
    config.sampling()  # validates fps / clip / crop before any video is touched
    return config


@task(name="open-feature-group", **_RETRY)
def open_feature_group(feature_store: str, config: dict[str, Any]) -> dict[str, Any]:
    """Create (or check) the extractor group once, before videos are written concurrently."""
    from pipeline.extract import ExtractionConfig
    from storage.features import FeatureStore

    cfg = ExtractionConfig(**config)
    group = FeatureStore(feature_store).extractor(
        cfg.dataset, cfg.resolved_extractor_id(), attrs=cfg.feature_config()
    )
    return {"extractor_id": group.extractor_id, "complete": group.list_videos()}


@task(
    name="extract-video",
    cache_policy=content_policy(
        ["video_sha256", "feature_store", "extractor_id", "feature_config_hash"], EXTRACT_PACKAGES
    ),
    **_RETRY,
)
def extract_video(
    path: str,
    video_id: str,
    video_sha256: str,
    feature_store: str,
    extractor_id: str,
    feature_config_hash: str,
    config: dict[str, Any],
) -> dict[str, Any]:
    """Extract one video into the store (``pipeline.extract.extract_one``); raise if it failed."""
    from pipeline.extract import ExtractionConfig, extract_one

    result = extract_one(path, feature_store, ExtractionConfig(**config), video_id=video_id)
    if result.status == "failed":
        raise_for_reason(f"video {video_id!r} ({path})", result.reason)
    return {
        "video_id": video_id,
        "task_run_id": current_task_run_id(),
        "status": result.status,
        "num_clips": int(result.num_clips),
        "seconds": float(result.seconds),
        "sha256": video_sha256,
    }


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

    group = FeatureStore(feature_store).extractor(dataset, extractor_id, create=False)
    norm = group.compute_normalization([v for v, _ in videos])
    return {"num_videos": int(norm.num_videos), "num_clips": int(norm.num_clips)}


def store_has_normalization(feature_store: str, dataset: str, extractor_id: str) -> bool:
    from storage.features import FeatureStore

    try:
        group = FeatureStore(feature_store).extractor(dataset, extractor_id, create=False)
    except KeyError:
        return False
    return group.normalization() is not None


def video_up_to_date(feature_store: str, dataset: str, extractor_id: str, video_id: str, path: str) -> bool:
    """True when the store holds ``video_id`` committed from this exact source file."""
    from pipeline.extract import up_to_date
    from storage.features import FeatureStore

    try:
        group = FeatureStore(feature_store).extractor(dataset, extractor_id, create=False)
    except KeyError:
        return False
    return up_to_date(group, video_id, path)


def current_task_run_id() -> str:
    """The running task run's id: a cached result carries the id of the run that made it."""
    from prefect.runtime import task_run

    return str(task_run.id)


def was_cached(future: Any, result: dict[str, Any]) -> bool:
    """True when ``result`` came from the cache, not from running ``future``'s task."""
    return result.get("task_run_id") not in (None, str(future.task_run_id))


def file_exists(path: str | os.PathLike[str] | None) -> bool:
    return path is not None and Path(path).is_file()
