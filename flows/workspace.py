"""The work directory every flow writes into, and where each thing lands in it.

::

    <work>/
      data/synthetic/            the generated benchmark (when no dataset is given)
      stores/features.zarr       Zarr feature store   (or $MKTN_FEATURE_STORE)
      stores/queries.zarr        Zarr query store     (or $MKTN_QUERY_STORE)
      runs/<dataset>/<key>/      checkpoint, training history, predictions, metrics per run
      report/<dataset>/          report.md, *.png, metrics.json  (mktn reproduce)
      results/                   re-evaluation table: results.csv, results.md
      prefect-results/           Prefect's persisted task results (cache entries)
      fingerprints.json          size/mtime/sha256 of every source file seen

The default work directory is ``$MKTN_WORK``, else ``$MKTN_ARTIFACTS`` (the
Docker stack's volume), else ``./mktn-work``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from flows.caching import RESULTS_DIRNAME
from storage.keys import safe_component


def default_work_dir() -> str:
    """``$MKTN_WORK``, else ``$MKTN_ARTIFACTS``, else ``./mktn-work`` (absolute)."""
    raw = os.environ.get("MKTN_WORK") or os.environ.get("MKTN_ARTIFACTS") or "mktn-work"
    return str(Path(raw).resolve())


@dataclass(frozen=True)
class Workspace:
    """Paths inside one work directory; stores may live elsewhere (any fsspec URL)."""

    root: str
    feature_store: str
    query_store: str

    @classmethod
    def at(
        cls,
        work_dir: str | os.PathLike[str] | None = None,
        *,
        feature_store: str | None = None,
        query_store: str | None = None,
    ) -> Workspace:
        root = Path(work_dir).resolve() if work_dir else Path(default_work_dir())
        return cls(
            root=str(root),
            feature_store=feature_store
            or os.environ.get("MKTN_FEATURE_STORE")
            or str(root / "stores" / "features.zarr"),
            query_store=query_store
            or os.environ.get("MKTN_QUERY_STORE")
            or str(root / "stores" / "queries.zarr"),
        )

    @property
    def path(self) -> Path:
        return Path(self.root)

    @property
    def synthetic_dir(self) -> Path:
        return self.path / "data" / "synthetic"

    @property
    def results_storage(self) -> Path:
        return self.path / RESULTS_DIRNAME

    @property
    def fingerprint_index(self) -> Path:
        return self.path / "fingerprints.json"

    def run_dir(self, dataset: str, key: str) -> Path:
        return self.path / "runs" / safe_component(dataset, what="dataset") / safe_component(key)

    def report_dir(self, dataset: str) -> Path:
        return self.path / "report" / safe_component(dataset, what="dataset")

    @property
    def results_dir(self) -> Path:
        return self.path / "results"
