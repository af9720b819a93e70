"""The ``extract-features`` flow: one task per video, run concurrently, into the feature store.

Steps: list the videos, fingerprint them (sha256, re-hashed only when size or
mtime moved), open the extractor group once, run one ``extract-video`` task
per video in the ``extract-videos`` subflow on the chosen task runner (a
thread pool here, Dask for many machines), then (re)compute the store's
normalisation statistics when any video changed.

Failure policy: a video that fails (corrupt, unreadable) fails its own task
only; the others go on. A video that hangs fails as timed out after the extractor
setting ``video_timeout_s`` (default ``flows.tasks.DEFAULT_VIDEO_TIMEOUT_S``, an hour),
enforced per video inside the task, and each task also carries ``timeout_seconds`` (that
limit times its videos, plus a margin) as a backstop; neither is retried. The flow ends ``Completed`` with a message and a
``extraction-failures`` table artifact naming every failed video and why when
at least one video is in the store, and ``Failed`` when every video failed.
Transient I/O errors are retried with backoff; a rerun after an interruption
extracts only what is missing (cache hits, and the store's commit markers).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.states import Completed, Failed

from flows import tasks
from flows.caching import config_hash, persisted
from flows.runners import DEFAULT_MAX_WORKERS, build_task_runner, cpu_count
from flows.workspace import Workspace
from pipeline.scaleout import LOCAL

logger = logging.getLogger(__name__)

PROGRESS_EVERY = 2.0  # seconds between updates of the extraction-progress artifact


def _torch_threads(dask: str | None, max_workers: int) -> int | None:
    if dask and dask != LOCAL:
        return None  # a remote worker knows its own cores
    return max(1, cpu_count() // max(1, max_workers))


@flow(name="extract-videos", log_prints=False)
def extract_videos_subflow(
    jobs: list[dict[str, str]],
    work_dir: str,
    feature_store: str,
    extractor_id: str,
    config: dict[str, Any],
    max_workers: int = DEFAULT_MAX_WORKERS,
    videos_per_task: int | None = None,
) -> list[dict[str, Any]]:
    """Run the ``extract-videos`` tasks (one per video or small group) on this flow's task runner.

    A job is ``{"video_id", "path", "sha256"}``; each result has ``status`` (``done``,
    ``skipped`` (already in the store), ``cached`` (the task's cached result) or
    ``failed``) and, when failed, ``reason``.
    """
    from pipeline.extract import up_to_date
    from storage.features import FeatureStore

    log = get_run_logger()
    fhash = config_hash(_feature_fields(config))
    progress_id = create_progress_artifact(
        progress=0.0,
        key="extraction-progress",
        description=f"videos extracted into {feature_store} ({extractor_id})",
    )
    store_group = FeatureStore(feature_store).group(config["dataset"], extractor_id, create=False)
    # a cached result is trusted only while the store still holds every video it names, from
    # the same source file: one read of every committed video's attributes, before any task
    committed = store_group.committed_attrs()
    in_store = {
        j["video_id"]: j["video_id"] in committed
        and (committed[j["video_id"]].get("source_fingerprint") or {}).get("sha256") == j["sha256"]
        and up_to_date(store_group, j["video_id"], j["path"], attrs=committed[j["video_id"]],
                       sha256=j["sha256"])
        for j in jobs
    }
    futures = {}
    for chunk in tasks.group_jobs(jobs, max_workers, videos_per_task):
        fresh = all(in_store[j["video_id"]] for j in chunk)
        ids = [j["video_id"] for j in chunk]
        name = f"extract-{ids[0]}" if len(ids) == 1 else f"extract-{ids[0]}..{ids[-1]}"
        task_obj = persisted(tasks.extract_video_group, work_dir, refresh=not fresh)
        timeout_s = tasks.extract_task_timeout(config, len(chunk))
        fut = task_obj.with_options(task_run_name=name, timeout_seconds=timeout_s).submit(
            jobs=chunk, videos_key=tasks.videos_key(chunk), feature_store=feature_store,
            extractor_id=extractor_id, feature_config_hash=fhash, config=config,
        )
        futures[fut] = chunk
    results: list[dict[str, Any]] = []
    done_videos = 0
    last_update = time.monotonic()
    for fut in as_completed(list(futures)):
        chunk = futures[fut]
        value = fut.result(raise_on_failure=False)
        if isinstance(value, BaseException):  # retries exhausted, or an error outside the library
            reason = str(value)
            if isinstance(value, TimeoutError):
                reason = (f"the extract-videos task over {', '.join(j['video_id'] for j in chunk)} "
                          f"timed out after {tasks.extract_task_timeout(config, len(chunk)):g} s "
                          "(raise the extractor setting video_timeout_s for longer videos)")
            for j in chunk:
                results.append({"video_id": j["video_id"], "path": j["path"], "status": "failed",
                                "reason": reason})
        else:
            cached = tasks.was_cached(fut, value)
            for row in value["videos"]:
                row = dict(row)
                if cached and row["status"] != "failed":
                    row["status"] = "cached"
                results.append(row)
        for row in results[-len(chunk):]:
            if row["status"] == "failed":
                log.warning("video %s failed: %s", row["video_id"], row["reason"])
        done_videos += len(chunk)
        now = time.monotonic()
        # one API call per PROGRESS_EVERY seconds, not one per task (16 cached tasks finish in
        # well under a second), and always the last one
        if isinstance(progress_id, UUID) and (now - last_update >= PROGRESS_EVERY or done_videos == len(jobs)):
            update_progress_artifact(progress_id, 100.0 * done_videos / max(1, len(jobs)))
            last_update = now
    order = {j["video_id"]: i for i, j in enumerate(jobs)}
    return sorted(results, key=lambda r: order.get(r["video_id"], 0))


def _feature_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that decide the features (speed-only knobs dropped), for the cache key."""
    from pipeline.extract import ExtractionConfig

    return ExtractionConfig(**config).feature_config()


@flow(name="extract-features", log_prints=False)
def extract_features(
    videos_dir: str,
    dataset: str = "default",
    work_dir: str | None = None,
    feature_store: str | None = None,
    extractor: dict[str, Any] | None = None,
    video_ids: list[str] | None = None,
    dask: str | None = None,
    max_workers: int = DEFAULT_MAX_WORKERS,
    videos_per_task: int | None = None,
) -> Any:
    """Extract clip and patch features of every video in ``videos_dir`` into the feature store.

    ``extractor``: ``pipeline.extract.ExtractionConfig`` fields to override (e.g.
    ``{"backbone": "r3d_18", "fps": 4}``; ``video_timeout_s``: seconds per video before it
    fails as timed out, default ``flows.tasks.DEFAULT_VIDEO_TIMEOUT_S``); ``video_ids``: only these videos;
    ``dask``: ``None`` (threads here), ``"local"`` (a Dask LocalCluster) or a
    scheduler address; ``max_workers``: concurrent tasks (threads or Dask workers);
    ``videos_per_task``: videos per task (default: 1 for small sets, up to 16 for
    large ones, see ``flows.tasks.group_jobs``).
    Returns a ``Completed``/``Failed`` state whose data is the summary dict, so a caller
    (or a subflow call) gets the summary, and the run's state message names the failures.
    """
    from pipeline.extract import build_extraction_config, find_videos, video_id_for

    log = get_run_logger()
    ws = Workspace.at(work_dir, feature_store=feature_store)
    config = build_extraction_config(extractor, dataset=dataset, defaults={
        "video_timeout_s": tasks.DEFAULT_VIDEO_TIMEOUT_S, "threads": _torch_threads(dask, max_workers)})
    cfg_dict = _config_dict(config)
    extractor_id = config.resolved_extractor_id()

    paths = [str(p) for p in find_videos(videos_dir)]
    if video_ids is not None:
        wanted = set(video_ids)
        paths = [p for p in paths if video_id_for(p) in wanted]
        missing = sorted(wanted - {video_id_for(p) for p in paths})
        if missing:
            log.warning("video ids not found in %s: %s", videos_dir, missing)
    if not paths:
        return Failed(message=f"no videos found in {videos_dir!r}", data={"videos_dir": videos_dir})

    digests = tasks.fingerprint_files(paths, str(ws.fingerprint_index))
    tasks.open_feature_group(ws.feature_store, cfg_dict)
    jobs = [{"video_id": video_id_for(p), "path": p, "sha256": digests[p]} for p in paths]

    runner = build_task_runner(dask, max_workers)
    results = extract_videos_subflow.with_options(task_runner=runner)(
        jobs=jobs, work_dir=ws.root, feature_store=ws.feature_store,
        extractor_id=extractor_id, config=cfg_dict, max_workers=max_workers,
        videos_per_task=videos_per_task,
    )

    ok = [r for r in results if r["status"] != "failed"]
    failed = [r for r in results if r["status"] == "failed"]
    counts = {s: sum(r["status"] == s for r in results) for s in ("done", "skipped", "cached", "failed")}
    normalization: dict[str, Any] | None = None
    if ok:
        videos = sorted([r["video_id"], digests[r["path"]]] for r in ok)
        refresh = not tasks.store_has_normalization(ws.feature_store, dataset, extractor_id)
        normalization = persisted(tasks.feature_normalization, ws.root, refresh=refresh)(
            feature_store=ws.feature_store, dataset=dataset, extractor_id=extractor_id, videos=videos
        )
        tasks.consolidate_features(ws.feature_store, dataset, extractor_id)

    summary: dict[str, Any] = {
        "dataset": dataset,
        "feature_store": ws.feature_store,
        "extractor_id": extractor_id,
        "counts": counts,
        "videos": results,
        "failed": {r["video_id"]: r["reason"] for r in failed},
        "normalization": normalization,
    }
    if failed:
        create_table_artifact(
            key="extraction-failures",
            table=[{"video_id": r["video_id"], "path": r["path"], "reason": r["reason"]} for r in failed],
            description=f"{len(failed)} of {len(results)} videos failed to extract ({dataset})",
        )
    create_markdown_artifact(
        key="extraction-summary",
        markdown=_summary_markdown(summary),
        description=f"feature extraction of {dataset}",
    )
    message = (
        f"{dataset}/{extractor_id}: {counts['done']} extracted, {counts['cached']} cached, "
        f"{counts['skipped']} already in the store, {counts['failed']} failed"
    )
    if failed:
        message += "; failed: " + "; ".join(f"{r['video_id']}: {r['reason']}" for r in failed[:10])
        if len(failed) > 10:
            message += f"; ... and {len(failed) - 10} more (see the extraction-failures artifact)"
    if not ok:
        return Failed(message="every video failed: " + message, data=summary)
    log.info(message)
    return Completed(message=message, data=summary)


def _config_dict(config: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(config)


def _summary_markdown(summary: dict[str, Any]) -> str:
    c = summary["counts"]
    lines = [
        f"# Feature extraction: {summary['dataset']}",
        "",
        f"Store `{summary['feature_store']}`, extractor `{summary['extractor_id']}`.",
        "",
        "| extracted | cached | already in store | failed |",
        "|---|---|---|---|",
        f"| {c['done']} | {c['cached']} | {c['skipped']} | {c['failed']} |",
    ]
    if summary["failed"]:
        lines += ["", "## Failed videos", "", "| video | reason |", "|---|---|"]
        lines += [f"| {v} | {r} |" for v, r in summary["failed"].items()]
    return "\n".join(lines) + "\n"
