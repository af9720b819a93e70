"""The ``re-evaluate`` flow (scheduled): new or changed datasets -> fill the stores -> score checkpoints.

Each run scans ``datasets_root`` for dataset directories (see
``flows/dataset.py``), fingerprints each one (every video and annotation file;
re-hashing only what moved), and for each dataset whose fingerprint is new
extracts and embeds only what is missing (the ``extract-features`` and
``embed-queries`` flows, cached and resumable). Then every chosen checkpoint
(default: every ``best.pt`` under ``<work>/runs``) is evaluated on every
dataset for which the (dataset fingerprint, checkpoint sha256) pair has no
row yet, and the rows are appended to ``<work>/results/results.csv``, mirrored
as ``results.md`` and published as the ``re-evaluation-results`` table artifact.

A dataset or checkpoint that fails (no test split, a checkpoint trained on
features of another width) adds a row with its error and does not stop the others.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows import tasks
from flows.dataset import DatasetSpec, scan_root
from flows.embed import embed_queries
from flows.evaluate import evaluate
from flows.extract import extract_features
from flows.report import METRIC_ORDER
from flows.runners import DEFAULT_MAX_WORKERS
from flows.workspace import Workspace
from storage.atomic import atomic_write_text
from storage.fingerprint import digest_strings

logger = logging.getLogger(__name__)

COLUMNS = (
    "time", "dataset", "dataset_sha", "split", "checkpoint", "checkpoint_sha", "status",
    *METRIC_ORDER, "num_queries", "error",
)


def read_results(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_results(results_dir: Path, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Rewrite ``results.csv`` and ``results.md`` atomically with ``rows`` (old + new)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in COLUMNS})
    csv_path, md_path = results_dir / "results.csv", results_dir / "results.md"
    atomic_write_text(csv_path, buf.getvalue())
    shown = ("time", "dataset", "split", "checkpoint", "status", *METRIC_ORDER, "error")
    md = ["# Re-evaluation results", "", "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        md.append("| " + " | ".join(str(row.get(k, "")) for k in shown) + " |")
    atomic_write_text(md_path, "\n".join(md) + "\n")
    return csv_path, md_path


def append_results(results_dir: Path, new_rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Add ``new_rows`` to the table: read-modify-write under ``results.csv``'s lock file.

    The table is re-read inside the lock, so rows another run appended since this run
    started are kept (an overlapping run never loses rows), and a pair both runs scored is
    written once.
    """
    from storage.features import file_lock

    results_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(results_dir / ".results.csv.lock", timeout=600.0):
        rows: list[dict[str, Any]] = read_results(results_dir / "results.csv")
        seen = {(r.get("dataset_sha"), r.get("checkpoint_sha")) for r in rows
                if r.get("status") == "ok"}
        for row in new_rows:
            pair = (row.get("dataset_sha"), row.get("checkpoint_sha"))
            if row.get("status") == "ok" and pair in seen:
                continue
            seen.add(pair)
            rows.append(row)
        return write_results(results_dir, rows)


def _one_line(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dataset_fingerprint(spec: DatasetSpec, digests: dict[str, str], videos: list[str]) -> str:
    """One digest over every video's and annotation file's sha256 and the dataset's format."""
    parts = [f"video:{Path(p).name}:{digests[p]}" for p in sorted(videos)]
    parts += [f"ann:{split}:{digests[p]}" for split, p in sorted(spec.annotations.items())]
    return digest_strings(spec.name, spec.format, *parts)


def default_checkpoints(ws: Workspace) -> list[str]:
    runs = ws.path / "runs"
    return sorted(str(p) for p in runs.glob("*/*/best.pt")) if runs.is_dir() else []


@flow(name="re-evaluate", log_prints=False)
def reevaluate(
    datasets_root: str | None = None,
    checkpoints: list[str] | None = None,
    work_dir: str | None = None,
    feature_store: str | None = None,
    query_store: str | None = None,
    extractor: dict[str, Any] | None = None,
    encoder: dict[str, Any] | None = None,
    dask: str | None = None,
    max_workers: int = DEFAULT_MAX_WORKERS,
) -> dict[str, Any]:
    """Scan ``datasets_root`` (default ``<work>/data``), fill the stores, evaluate new pairs, append rows."""
    from pipeline.extract import find_videos

    log = get_run_logger()
    ws = Workspace.at(work_dir, feature_store=feature_store, query_store=query_store)
    root = Path(datasets_root) if datasets_root else ws.path / "data"
    specs = scan_root(root)
    ckpts = list(checkpoints or []) or default_checkpoints(ws)
    results_csv = ws.results_dir / "results.csv"
    rows: list[dict[str, Any]] = read_results(results_csv)
    done_pairs = {(r["dataset_sha"], r["checkpoint_sha"]) for r in rows if r.get("status") == "ok"}
    new_rows: list[dict[str, Any]] = []
    ckpt_digests = tasks.fingerprint_files(ckpts, str(ws.fingerprint_index)) if ckpts else {}
    if not ckpts:
        log.warning("no checkpoints given and none under %s/runs: only the stores are filled", ws.root)
    stores: dict[str, Any] = {"work_dir": ws.root, "feature_store": ws.feature_store}

    for spec in specs:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            videos = [str(p) for p in find_videos(spec.videos_dir)]
            digests = tasks.fingerprint_files(
                videos + sorted(spec.annotations.values()), str(ws.fingerprint_index)
            )
            ds_sha = dataset_fingerprint(spec, digests, videos)
            split = spec.eval_split()
            pending = [c for c in ckpts if (ds_sha, ckpt_digests[c]) not in done_pairs]
            if not pending and ckpts:
                log.info("%s: unchanged (%s) and every checkpoint scored; skipped", spec.name, ds_sha)
                continue
            ext = extract_features(
                videos_dir=spec.videos_dir, dataset=spec.name, extractor=extractor,
                dask=dask, max_workers=max_workers, **stores,
            )
            emb = embed_queries(**spec.flow_params(), query_store=ws.query_store, encoder=encoder, **stores)
        except Exception as exc:  # one broken dataset must not stop the others
            log.error("dataset %s failed: %s", spec.name, exc)
            new_rows.append({"time": now, "dataset": spec.name, "status": "failed", "error": _one_line(exc)})
            continue
        for ckpt in pending:
            row: dict[str, Any] = {
                "time": now, "dataset": spec.name, "dataset_sha": ds_sha, "split": split,
                "checkpoint": ckpt, "checkpoint_sha": ckpt_digests[ckpt],
            }
            try:
                ev = evaluate(
                    checkpoint=ckpt, **spec.flow_params(), split=split,
                    extractor_id=ext["extractor_id"], encoder_id=emb["encoder_id"], query_store=ws.query_store,
                    out_dir=str(ws.results_dir / spec.name / ckpt_digests[ckpt][:16]), **stores,
                )
                m = ev["metrics"]
                row.update({k: round(float(m[k]), 2) for k in METRIC_ORDER if k in m}, status="ok",
                           num_queries=int(m["num_queries"]))
            except Exception as exc:  # a bad checkpoint must not stop the others
                log.error("%s on %s failed: %s", ckpt, spec.name, exc)
                row.update(status="failed", error=_one_line(exc))
            new_rows.append(row)

    csv_path, md_path = append_results(ws.results_dir, new_rows)
    if new_rows:
        create_table_artifact(
            key="re-evaluation-results",
            table=[{k: r.get(k, "") for k in COLUMNS if k not in ("dataset_sha", "checkpoint_sha")} for r in new_rows],
            description=f"{len(new_rows)} new rows; the full table: {csv_path}",
        )
    log.info("%d datasets scanned, %d new rows -> %s", len(specs), len(new_rows), csv_path)
    return {
        "datasets": [s.name for s in specs],
        "new_rows": new_rows,
        "results_csv": str(csv_path),
        "results_md": str(md_path),
    }
