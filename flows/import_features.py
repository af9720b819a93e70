"""The ``import-features`` flow: published clip features into the run's feature store.

What ``mktn reproduce --features-from FORMAT:PATH`` runs in place of ``extract-features``
(``pipeline.importers``: ``c3d-hdf5``, ``hdf5``, ``npy-dir``, ``npz-dir``, ``video-features``).
Steps: list the source's files and fingerprint them (sha256, re-hashed only when size or
mtime moved: a 6 GB HDF5 file is read once), then one ``import-features`` task, keyed on
the source's digest, the format and time-axis options, the annotation files (they choose the
videos and give the durations) and the store group. A rerun with nothing changed imports
nothing; the cached result is trusted only while the store still holds every video it names.

The store group is ``<format>[-<type>]@<sha8 of the source>`` (plus ``-clip<S>s`` /
``-fps<F>`` when a time axis is forced): another source, or the same one with other
options, is its own group. One bad video (absent from the source, a NaN row, another
width) is named in the summary and the ``import-failures`` artifact; the others go on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Completed, Failed

from flows import tasks
from flows.caching import persisted
from flows.dataset import DatasetSpec
from flows.workspace import Workspace

MISSING_REASON = "in the annotations but not in the published features"


def parse_features_from(value: str) -> tuple[str, str]:
    """``"FORMAT:PATH"`` -> ``(format, absolute path)``; ``ValueError`` naming the formats.

    >>> parse_features_from("npz-dir:/data/feats")
    ('npz-dir', '/data/feats')
    """
    from pipeline.importers import FORMATS

    fmt, sep, path = value.partition(":")
    if not sep or not path or fmt not in FORMATS:
        raise ValueError(
            f"--features-from {value!r}: expected FORMAT:PATH with FORMAT one of {sorted(FORMATS)}, "
            "e.g. c3d-hdf5:/data/sub_activitynet_v1-3.c3d.hdf5"
        )
    return fmt, str(Path(path).resolve())


def _group_holds(feature_store: str, dataset: str, extractor_id: str, videos: list[str]) -> bool:
    """True when the group exists, has its normalisation and holds every one of ``videos``."""
    from storage.features import FeatureStore

    try:
        group = FeatureStore(feature_store).group(dataset, extractor_id, create=False)
    except (KeyError, FileNotFoundError, ValueError):
        return False
    if group.normalization() is None:
        return False
    return set(videos) <= set(group.list_videos())


@flow(name="import-features", log_prints=False)
def import_features(
    source: str,
    format: str,
    annotations: dict[str, str],
    dataset: str = "default",
    annotation_format: str | None = None,
    durations: str | None = None,
    clip_seconds: float | None = None,
    fps: float | None = None,
    feature_type: str | None = None,
    work_dir: str | None = None,
    feature_store: str | None = None,
) -> Any:
    """Import the videos ``annotations`` (``{split: path}``) name from the published ``source``.

    ``clip_seconds``/``fps``: a fixed time axis (default: the source's own, else each video's
    annotated duration spread over its clips). Returns a ``Completed`` state whose data is the
    summary (``extractor_id``, ``counts``, ``failed``: video -> reason), ``Failed`` when no
    video could be imported; a source that cannot be read at all raises.
    """
    from pipeline.importers import FeatureImportError, open_source, source_sha256, time_axis_policy

    log = get_run_logger()
    ws = Workspace.at(work_dir, feature_store=feature_store)
    spec = DatasetSpec.from_flow_params(annotations, dataset, annotation_format, durations)
    time_axis_policy(clip_seconds, fps)  # both given, or not positive: an error before any work
    with open_source(format, source, feature_type=feature_type) as src:
        files = [str(p) for p in src.files()]
        resolved_type = getattr(src, "feature_type", None)
    digests = tasks.fingerprint_files(sorted(set(files) | set(spec.files())), str(ws.fingerprint_index))
    digest = source_sha256([Path(f) for f in files], digests)
    spec = spec.with_digests(digests)
    extractor_id = tasks.imported_extractor_id(format, digest, resolved_type, clip_seconds, fps)
    options = {"clip_seconds": clip_seconds, "fps": fps, "feature_type": resolved_type}
    params: dict[str, Any] = {
        "format": format, "source": source, "source_sha256": digest, "options": options,
        "feature_store": ws.feature_store, "spec": spec, "extractor_id": extractor_id,
        "file_digests": {f: digests[f] for f in files},
    }
    present = _group_holds(ws.feature_store, dataset, extractor_id, [])
    fut = persisted(tasks.import_published_features, ws.root, refresh=not present).submit(**params)
    try:
        result = dict(fut.result())
    except tasks.PermanentTaskError as exc:
        raise FeatureImportError(str(exc)) from None
    cached = tasks.was_cached(fut, result)
    imported = list(result["done_ids"]) + list(result["skipped_ids"])
    if cached and not _group_holds(ws.feature_store, dataset, extractor_id, imported):
        # the cache entry names videos the store no longer holds (a deleted or moved store)
        result = dict(persisted(tasks.import_published_features, ws.root, refresh=True)(**params))
        cached = False
        imported = list(result["done_ids"]) + list(result["skipped_ids"])

    failed = {**{v: MISSING_REASON for v in result["missing"]}, **result["failed"]}
    counts = {
        "done": 0 if cached else len(result["done_ids"]),
        "skipped": 0 if cached else len(result["skipped_ids"]),
        "cached": len(imported) if cached else 0,
        "failed": len(failed),
    }
    summary: dict[str, Any] = {
        "dataset": dataset,
        "feature_store": ws.feature_store,
        "extractor_id": extractor_id,
        "source": source,
        "format": format,
        "source_sha256": digest,
        "feature_dim": result.get("feature_dim"),
        "counts": counts,
        "failed": failed,
        "unannotated": result.get("unannotated", 0),
    }
    if failed:
        create_table_artifact(
            key="import-failures",
            table=[{"video_id": v, "reason": r} for v, r in failed.items()],
            description=f"{len(failed)} annotated video(s) not imported from {source} ({dataset})",
        )
    create_markdown_artifact(
        key="import-summary",
        markdown=(
            f"# Imported features: {dataset}\n\n`{format}` from `{source}` (sha256 {digest[:12]}) into "
            f"store `{ws.feature_store}`, group `{extractor_id}`, width {summary['feature_dim']}.\n\n"
            "| imported | cached | already in store | not imported |\n|---|---|---|---|\n"
            f"| {counts['done']} | {counts['cached']} | {counts['skipped']} | {counts['failed']} |\n"
        ),
        description=f"feature import of {dataset}",
    )
    message = (
        f"{dataset}/{extractor_id}: {counts['done']} imported, {counts['cached']} cached, "
        f"{counts['skipped']} already in the store, {counts['failed']} not imported"
    )
    if failed:
        message += "; " + "; ".join(f"{v}: {r}" for v, r in list(failed.items())[:10])
    if not imported:
        return Failed(message="no video could be imported: " + message, data=summary)
    log.info(message)
    return Completed(message=message, data=summary)
