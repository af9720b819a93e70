"""The ``embed-queries`` flow: validate a dataset's annotations, embed its queries into the query store.

A malformed annotation line is counted and named (``file:line``) in the
``annotation-issues`` artifact and in the summary; the other lines go on. The
embedding task is keyed on the annotation files' sha256, the encoder settings
and the query store, and the library itself reuses a complete store group, so
a rerun with nothing changed embeds nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows import tasks
from flows.caching import config_hash, persisted
from flows.dataset import DatasetSpec
from flows.workspace import Workspace


@flow(name="embed-queries", log_prints=False)
def embed_queries(
    annotations: dict[str, str],
    dataset: str = "default",
    format: str | None = None,
    durations: str | None = None,
    work_dir: str | None = None,
    query_store: str | None = None,
    feature_store: str | None = None,
    encoder: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Embed the queries of ``annotations`` (``{split: path}``) under ``queries/<dataset>/<encoder_id>``.

    ``format``: an annotation format name (``None``: sniffed from each file);
    ``encoder``: ``pipeline.embed.EmbedConfig`` overrides, e.g.
    ``{"vectors": {"path": "/data/glove.840B.300d.txt"}}``. Returns the embed summary
    plus the annotation validation summary.
    """
    log = get_run_logger()
    ws = Workspace.at(work_dir, query_store=query_store, feature_store=feature_store)
    spec = DatasetSpec.from_flow_params(annotations, dataset, format, durations)  # the flow boundary
    spec = spec.with_digests(tasks.fingerprint_files(spec.files(), str(ws.fingerprint_index)))
    ann_sha = spec.annotations_sha
    check = persisted(tasks.validate_annotations, ws.root)(spec=spec)
    issues = _issue_rows(check["report"])
    if issues:
        create_table_artifact(
            key="annotation-issues",
            table=issues,
            description=f"{dataset}: annotation lines fixed or dropped ({check['summary']})",
        )
        log.warning("%s annotations: %s", dataset, check["summary"])
    # the overrides, not the resolved EmbedConfig: its defaults are code, already in the key's
    # source digest, and resolving it would import gensim/torch even on a cache hit
    # (named files, such as a GloVe file, enter by content)
    enc_files = _encoder_files(encoder)
    enc_digests = tasks.fingerprint_files(enc_files, str(ws.fingerprint_index)) if enc_files else {}
    enc_hash = config_hash({"dataset": dataset, "encoder": encoder or {}, "files": enc_digests})
    fut = persisted(tasks.embed_dataset_queries, ws.root).submit(
        spec=spec, query_store=ws.query_store, encoder=encoder, encoder_hash=enc_hash,
    )
    summary = dict(fut.result())
    summary["task_cached"] = tasks.was_cached(fut, summary)
    if not tasks.query_group_complete(ws.query_store, dataset, summary["encoder_id"]):
        # the cache entry is trusted only while the store group it names is complete
        summary = persisted(tasks.embed_dataset_queries, ws.root, refresh=True)(
            spec=spec, query_store=ws.query_store, encoder=encoder, encoder_hash=enc_hash,
        )
    return {**summary, "annotations_sha": ann_sha, "annotations": check}


def _encoder_files(encoder: dict[str, Any] | None) -> list[str]:
    """Local files named by the encoder settings (word vectors, a skip-thought checkpoint)."""
    enc = encoder or {}
    candidates = [dict(enc.get("vectors") or {}).get("path"), enc.get("skipthought")]
    return sorted(str(p) for p in candidates if isinstance(p, str) and Path(p).is_file())


def _issue_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The listed validation issues (each names ``file:line`` in ``where``) as table rows."""
    keys = ("kind", "reason", "video_id", "where", "detail")
    return [{k: issue.get(k) for k in keys} for issue in report.get("issues", [])]
