"""The ``train`` flow: train MKTN on a dataset's features and queries, resuming an interrupted run.

The run directory is ``<work>/runs/<dataset>/<run_key>``, where ``run_key``
digests the model configuration, the feature group's content (every video's
source sha256 and the normalisation statistics), the query group (its encoder
id names its settings and queries) and the annotation files. Changing a model
setting gives a new key, so the model retrains while extraction and embedding
stay cached; an interrupted run picks up from its ``last.pt``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows import tasks
from flows.caching import persisted
from flows.dataset import DatasetSpec
from flows.workspace import Workspace
from storage.fingerprint import digest_strings


@flow(name="train", log_prints=False)
def train(
    annotations: dict[str, str],
    dataset: str = "default",
    extractor_id: str | None = None,
    encoder_id: str | None = None,
    format: str | None = None,
    durations: str | None = None,
    preset: str = "synthetic",
    overrides: list[str] | None = None,
    epochs: int | None = None,
    work_dir: str | None = None,
    feature_store: str | None = None,
    query_store: str | None = None,
) -> dict[str, Any]:
    """Train on ``dataset`` (train split; val for model selection); return the run summary.

    ``extractor_id``/``encoder_id``: the store groups to read (default: the only
    feature group of the dataset, the latest query encoding); ``preset`` and
    ``overrides`` (``["model.use_csm=false", "train.lr=1e-3"]``) make the config.
    """
    log = get_run_logger()
    ws = Workspace.at(work_dir, feature_store=feature_store, query_store=query_store)
    spec = DatasetSpec.from_flow_params(annotations, dataset, format, durations)
    cfg = tasks.model_config(preset, overrides, epochs)
    extractor_id = extractor_id or _only_extractor(ws.feature_store, dataset)
    encoder_id = encoder_id or _latest_encoder(ws.query_store, dataset)
    spec = spec.with_digests(tasks.fingerprint_files(spec.files(), str(ws.fingerprint_index)))
    ann_sha = spec.annotations_sha
    assert ann_sha is not None
    feat_sha = tasks.features_digest(ws.feature_store, dataset, extractor_id)
    run_key = digest_strings(cfg.digest(), feat_sha, encoder_id, ann_sha)
    run_dir = ws.run_dir(dataset, f"{cfg.name}-{run_key}")
    refresh = not (run_dir / "result.json").is_file()
    fut = persisted(tasks.train_model, ws.root, refresh=refresh).submit(
        run_key=run_key, run_dir=str(run_dir), config=cfg.to_dict(),
        feature_store=ws.feature_store, query_store=ws.query_store, spec=spec,
        extractor_id=extractor_id, encoder_id=encoder_id,
    )
    result = dict(fut.result())
    result["cached"] = tasks.was_cached(fut, result)
    log.info("run %s: best checkpoint %s", run_key, result["best_checkpoint"])
    return {
        **result,
        "config_digest": cfg.digest(),
        "config": cfg.to_dict(),
        "config_name": cfg.name,
        "features_sha": feat_sha,
        "encoder_id": encoder_id,
        "extractor_id": extractor_id,
        "annotations_sha": ann_sha,
    }


def _only_extractor(feature_store: str, dataset: str) -> str:
    from storage.features import FeatureStore

    group = FeatureStore(feature_store).select_group(
        dataset, hint="pass extractor_id (run extract-features first if there are none)")
    return group.extractor_id


def _latest_encoder(query_store: str, dataset: str) -> str:
    from storage.queries import QueryStore

    return QueryStore(query_store).latest_encoder(dataset)
