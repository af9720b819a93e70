"""What a Prefect UI shows of the flows, read back through the Prefect client from a real server:
the training and embedding progress artifacts and the per-epoch table, the library's own log
records (``model.*``, ``pipeline.*``) in the flow-run logs, and the report artifact with its
plots inline.

Tiny real inputs the tests write (a planted-signal feature store, query store and JSONL
annotations; an 8-d GloVe file), flows run against one temporary Prefect server, as in
``tests/test_flows.py``. The artifact updates are recorded by a spy that calls Prefect's own
``update_progress_artifact`` through, with the throttle at 0 s so every epoch is sent.
"""

from __future__ import annotations

import base64
import io
import logging
import warnings
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TINY_MODEL = ["model.num_clips=16", "model.d_model=32", "model.num_heads=2"]
GLOVE_DIM = 8


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A real feature store, query store and train/val/test JSONL annotations of 8 planted videos."""
    from model_fixtures import planted_data, write_stores

    data = planted_data(num_videos=8, queries_per_video=3, clips=12, dim=12, sentence_dim=16)
    return write_stores(data, tmp_path_factory.mktemp("ui-data"))


@pytest.fixture
def progress_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[UUID, float]]:
    """Every ``update_progress_artifact`` call of ``flows.progress`` (sent on to Prefect), unthrottled."""
    import flows.progress

    calls: list[tuple[UUID, float]] = []
    real = flows.progress.update_progress_artifact

    def recording(artifact_id: UUID, progress: float, *args: Any, **kwargs: Any) -> Any:
        calls.append((artifact_id, float(progress)))
        return real(artifact_id, progress, *args, **kwargs)

    monkeypatch.setattr(flows.progress, "update_progress_artifact", recording)
    monkeypatch.setattr(flows.progress, "PROGRESS_EVERY", 0.0)
    return calls


def _artifacts(flow_run_id: UUID, key: str) -> list[Any]:
    """Every version of the artifact ``key`` of a flow run, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        newest_first = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                                           key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
        )
    return newest_first[::-1]


def _run_logs(flow_run_id: UUID) -> list[Any]:
    """The flow run's log records as the UI reads them (after Prefect's log worker has sent them)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from flows.server import drain_prefect_workers

    drain_prefect_workers()
    with get_client(sync_client=True) as client:
        return client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))


def test_train_flow_shows_progress_epoch_table_and_model_logs(
    prefect_harness: str, stores: tuple[Path, Path, Path], tmp_path: Path, progress_calls: list, one_thread: None
) -> None:
    from flows.train import train

    features, queries, ann = stores
    state = train(
        annotations={s: str(ann / f"{s}.jsonl") for s in ("train", "val", "test")}, dataset="synthetic",
        extractor_id="tiny3d@test", encoder_id="enc1", overrides=TINY_MODEL, epochs=3,
        work_dir=str(tmp_path / "work"), feature_store=str(features), query_store=str(queries),
        return_state=True,
    )
    assert state.is_completed(), state
    run = state.result()
    history = run["result"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    flow_run_id = state.state_details.flow_run_id

    # progress: one update per epoch (a third of the bar each), the last at 100 %
    (progress,) = _artifacts(flow_run_id, "training-progress")
    assert progress.type == "progress" and float(progress.data) == 100.0
    assert [round(p, 1) for a, p in progress_calls if a == progress.id] == [33.3, 66.7, 100.0]
    # the epoch table: a version per epoch, growing; the last holds the trainer's own numbers
    tables = _artifacts(flow_run_id, "training-epochs")
    assert [t.type for t in tables] == ["table"] * 3
    import json

    rows = [json.loads(t.data) if isinstance(t.data, str) else t.data for t in tables]
    assert [len(r) for r in rows] == [1, 2, 3]
    last = rows[-1]
    assert [r["epoch"] for r in last] == [1, 2, 3]
    for row, h in zip(last, history, strict=True):
        assert row["R1@0.5"] == round(h["val"]["R1@0.5"], 2) and row["mIoU"] == round(h["val"]["mIoU"], 2)
        assert row["R1@0.7"] == round(h["val"]["R1@0.7"], 2)
        assert row["train loss"] == round(h["train"]["total"], 4) and row["train loss"] > 0
    assert [r["best"] for r in last] == ["*" if r["epoch"] == run["result"]["best_epoch"] else "" for r in last]

    # the trainer's own log lines (logger model.train, logged inside the train-model task) are in
    # the flow run's logs, linked to the task run
    logs = _run_logs(flow_run_id)
    epoch_lines = [r for r in logs if r.name == "model.train" and r.message.startswith("epoch ")]
    assert len(epoch_lines) >= 3, sorted({r.name for r in logs})
    assert all(r.task_run_id is not None and r.level == logging.INFO for r in epoch_lines)

    # the same run again is the cached task: nothing new is trained, no new artifacts
    again = train(
        annotations={s: str(ann / f"{s}.jsonl") for s in ("train", "val", "test")}, dataset="synthetic",
        extractor_id="tiny3d@test", encoder_id="enc1", overrides=TINY_MODEL, epochs=3,
        work_dir=str(tmp_path / "work"), feature_store=str(features), query_store=str(queries),
    )
    assert again["cached"] and again["run_key"] == run["run_key"]


def _glove(path: Path) -> Path:
    rng = np.random.default_rng(0)
    words = ["concept", *map(str, range(10))]
    path.write_text("".join(w + " " + " ".join(f"{x:.4f}" for x in rng.standard_normal(GLOVE_DIM)) + "\n"
                            for w in words), encoding="utf-8")
    return path


def test_embed_flow_shows_progress_and_pipeline_logs(
    prefect_harness: str, stores: tuple[Path, Path, Path], tmp_path: Path, progress_calls: list, one_thread: None
) -> None:
    from flows.embed import embed_queries

    _, _, ann = stores
    encoder = {
        "vectors": {"path": str(_glove(tmp_path / "glove.txt")), "cache_dir": str(tmp_path / "cache")},
        "skipthought_config": {"word_dim": GLOVE_DIM, "uni_dim": 12, "bi_dim": 6, "epochs": 3, "batch_size": 8},
        "checkpoint_dir": str(tmp_path / "st"), "device": "cpu",
    }
    state = embed_queries(
        annotations={s: str(ann / f"{s}.jsonl") for s in ("train", "val", "test")}, dataset="ui-embed",
        work_dir=str(tmp_path / "work"), encoder=encoder, return_state=True,
    )
    assert state.is_completed(), state
    assert state.result()["num_queries"] == 24
    flow_run_id = state.state_details.flow_run_id
    (progress,) = _artifacts(flow_run_id, "embedding-progress")
    assert progress.type == "progress" and float(progress.data) == 100.0
    # the three skip-thought epochs fill the first 80 %, the one block of queries the rest
    assert [round(p, 1) for a, p in progress_calls if a == progress.id] == [26.7, 53.3, 80.0, 100.0]

    logs = _run_logs(flow_run_id)
    names = {r.name for r in logs}
    st_epochs = [r for r in logs if r.name == "pipeline.skipthought" and "skip-thought epoch" in r.message]
    assert len(st_epochs) == 3, names
    assert any(r.name == "pipeline.embed" and r.message.startswith("embedded 24 queries") for r in logs), names


def test_library_records_outside_a_run_are_dropped_quietly() -> None:
    """The handler that sends library records to runs says nothing when there is no run
    (``mktn train`` and the other library commands log through the same loggers)."""
    import flows.tasks  # noqa: F401  (attaches the handler, as every flow module does)
    from flows.logs import LIBRARY_LOGGERS, RunLogHandler, send_library_logs_to_runs

    for name in LIBRARY_LOGGERS:
        assert sum(isinstance(h, RunLogHandler) for h in logging.getLogger(name).handlers) == 1, name
    assert send_library_logs_to_runs() == []  # once per process
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logging.getLogger("model.train").warning("a record outside any flow run")


def _report(tmp_path: Path) -> Any:
    """A real report (flows.report.write_report) with its three plots."""
    from flows.report import write_report
    from pipeline.datasets.records import QueryMoment

    truth = [QueryMoment(f"q{i}", f"v{i % 3}", f"concept {i}", 2.0 + i, 6.0 + i, 20.0, "test") for i in range(6)]
    preds = [{"query_id": g.query_id, "video_id": g.video_id, "spans": [[g.start, g.end], [0.0, 3.0]]}
             for g in truth]
    history = [{"epoch": e, "loss/total": 3.0 - e, "val_R1@0.5": 10.0 * e} for e in (1, 2, 3)]
    metrics = {"R1@0.3": 60.0, "R1@0.5": 50.0, "R1@0.7": 30.0, "R5@0.5": 80.0, "mIoU": 45.0, "num_queries": 6}
    return write_report(tmp_path / "report", title="UI report", metrics=metrics, history=history,
                        predictions=preds, ground_truth=truth)


def _inline_pngs(markdown: str) -> list[bytes]:
    import re

    return [base64.b64decode(m) for m in re.findall(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)]


def test_report_artifact_inlines_its_plots_under_the_cap(tmp_path: Path) -> None:
    from PIL import Image

    from flows.report import ARTIFACT_MAX_WIDTH, artifact_markdown

    paths = _report(tmp_path)
    assert set(paths.figures) == {"loss_curves", "recall", "timelines"}
    md = artifact_markdown(paths.markdown, files={"metrics": paths.metrics_json})
    pngs = _inline_pngs(md)
    assert len(pngs) == 3 and ".png)" not in md.replace("base64,", "")  # no relative path left
    widths = []
    for data in pngs:
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "PNG"
            widths.append(img.width)
    # the loss curves (two panels, 1300+ px wide as written) are scaled down to the width cap
    assert max(widths) == ARTIFACT_MAX_WIDTH
    with Image.open(paths.figures["loss_curves"]) as img:
        assert img.width > ARTIFACT_MAX_WIDTH
    assert f"- report: `{paths.markdown}`" in md and f"- metrics: `{paths.metrics_json}`" in md
    assert md.startswith("# UI report\n")

    # a cap that holds only the first plot: the others are named, with their files, not inlined
    first = len(base64.b64encode(pngs[0]))
    capped = artifact_markdown(paths.markdown, max_bytes=first + 10)
    assert len(_inline_pngs(capped)) == 1
    assert capped.count("left out of this artifact") == 2
    assert str(Path(paths.figures["timelines"])) in capped and " MB;" in capped

    # a plot whose file is gone is named as missing
    Path(paths.figures["recall"]).unlink()
    gone = artifact_markdown(paths.markdown)
    assert "is missing" in gone and len(_inline_pngs(gone)) == 2


def test_report_artifact_round_trips_through_the_api(prefect_harness: str, tmp_path: Path) -> None:
    """The markdown artifact with its inline plots is stored and read back whole by the API."""
    from prefect import flow
    from prefect.artifacts import create_markdown_artifact

    from flows.report import artifact_markdown

    md = artifact_markdown(_report(tmp_path).markdown)

    @flow(name="ui-report-artifact")
    def publish(text: str) -> None:
        create_markdown_artifact(key="reproduce-summary", markdown=text, description="report")

    state = publish(md, return_state=True)
    assert state.is_completed(), state
    (art,) = _artifacts(state.state_details.flow_run_id, "reproduce-summary")
    assert art.type == "markdown" and art.data == md and len(_inline_pngs(art.data)) == 3
