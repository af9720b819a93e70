"""The ``evaluate`` flow: a checkpoint on one split -> predictions JSONL, metrics JSON, a table artifact.

Keyed on the checkpoint's sha256, the feature group's content, the query
encoding, the annotation files and the split, so re-evaluating an unchanged
pair is a cache hit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows import tasks
from flows.caching import persisted
from flows.dataset import DatasetSpec
from flows.report import METRIC_ORDER
from flows.train import _latest_encoder, _only_extractor
from flows.workspace import Workspace


@flow(name="evaluate", log_prints=False)
def evaluate(
    checkpoint: str,
    annotations: dict[str, str],
    dataset: str = "default",
    split: str = "test",
    extractor_id: str | None = None,
    encoder_id: str | None = None,
    format: str | None = None,
    durations: str | None = None,
    out_dir: str | None = None,
    work_dir: str | None = None,
    feature_store: str | None = None,
    query_store: str | None = None,
    controls: bool = True,
    trained: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``split``: R@1/R@5 at IoU 0.3/0.5/0.7 and mIoU (percent), and the
    controls (``model.controls``: prior, order-aware prior, video-swapped, order-shuffled) unless
    ``controls`` is off.

    Predictions and metrics go to ``out_dir`` (default: beside the checkpoint). ``trained``: the
    train flow's summary of the run that wrote ``checkpoint`` (at least :data:`TRAINED_KEYS`):
    when that run evaluated this checkpoint on ``split`` (``train()`` evaluates its best checkpoint
    on the test split) from the same features, queries and annotations, that evaluation is reused
    (copied, and named in the log and in ``reused_from``) instead of run a second time.
    """
    log = get_run_logger()
    ws = Workspace.at(work_dir, feature_store=feature_store, query_store=query_store)
    spec = DatasetSpec.from_flow_params(annotations, dataset, format, durations)
    extractor_id = extractor_id or _only_extractor(ws.feature_store, dataset)
    encoder_id = encoder_id or _latest_encoder(ws.query_store, dataset)
    digests = tasks.fingerprint_files(sorted(set(spec.files()) | {checkpoint}), str(ws.fingerprint_index))
    spec = spec.with_digests(digests)
    ann_sha = spec.annotations_sha
    assert ann_sha is not None
    feat_sha = tasks.features_digest(ws.feature_store, dataset, extractor_id)
    out = Path(out_dir) if out_dir else Path(checkpoint).parent / f"eval-{dataset}"
    refresh = not (out / f"predictions_{split}.jsonl").is_file()
    if controls and not refresh:  # a metrics file written before the controls existed
        import json

        metrics_file = out / f"metrics_{split}.json"
        refresh = not metrics_file.is_file() or "controls" not in json.loads(metrics_file.read_text())
    reuse_from = training_evaluation(trained, checkpoint, features_sha=feat_sha, annotations_sha=ann_sha,
                                     encoder_id=encoder_id)
    fut = persisted(tasks.evaluate_checkpoint, ws.root, refresh=refresh).submit(
        checkpoint=checkpoint, checkpoint_sha=digests[checkpoint], features_sha=feat_sha,
        feature_store=ws.feature_store, query_store=ws.query_store, spec=spec,
        extractor_id=extractor_id, encoder_id=encoder_id, split=split, out_dir=str(out),
        controls=controls, reuse_from=reuse_from,
    )
    result = dict(fut.result())
    result["cached"] = tasks.was_cached(fut, result)
    result.setdefault("reused_from", None)  # a result cached before reuse existed
    if result["reused_from"] and not result["cached"]:
        log.info("evaluation of %s on %s/%s reused from training (%s), not run again",
                 Path(checkpoint).name, dataset, split, result["reused_from"])
    m = result["metrics"]
    create_table_artifact(
        key="evaluation-metrics",
        table=[{"dataset": dataset, "split": split, **{k: round(float(m[k]), 2) for k in METRIC_ORDER if k in m},
                "queries": int(m.get("num_queries", 0))}],
        description=f"{Path(checkpoint).name} on {dataset}/{split}",
    )
    return {**result, "dataset": dataset, "checkpoint_sha": digests[checkpoint],
            "features_sha": feat_sha, "annotations_sha": ann_sha, "encoder_id": encoder_id}


# what the evaluate flow reads of a train flow's summary to decide whether to reuse its evaluation
TRAINED_KEYS = ("run_dir", "best_checkpoint", "features_sha", "annotations_sha", "encoder_id")


def training_evaluation(trained: dict[str, Any] | None, checkpoint: str, *, features_sha: str,
                        annotations_sha: str, encoder_id: str) -> str | None:
    """The training run folder whose own evaluations of ``checkpoint`` may stand for this flow's
    (``trained`` wrote ``checkpoint`` from the same features, queries and annotations), else ``None``.
    Whether it holds this split's evaluation, the task checks (``model.evaluate.reuse_split_evaluation``)."""
    if not trained or any(trained.get(k) is None for k in TRAINED_KEYS):
        return None
    same = (Path(str(trained["best_checkpoint"])).resolve() == Path(checkpoint).resolve()
            and trained["features_sha"] == features_sha and trained["annotations_sha"] == annotations_sha
            and trained["encoder_id"] == encoder_id)
    return str(trained["run_dir"]) if same else None
