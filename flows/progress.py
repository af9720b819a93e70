"""Progress of the long library steps (training, query embedding) as Prefect artifacts.

The library takes plain callbacks (``model.train.train(on_epoch=)``,
``pipeline.embed.embed_queries(on_progress=)``) and imports no Prefect; the classes
here are those callbacks, run inside a task, turning each call into artifacts the
Prefect UI shows on the flow run's *Artifacts* tab:

- ``training-progress`` (progress, percent of the planned epochs) and ``training-epochs``
  (a table: one row per epoch with the mean train loss and the validation R1@0.5, R1@0.7
  and mIoU, the best epoch marked);
- ``embedding-progress`` (progress: the skip-thought training epochs, then the query
  blocks written).

Like ``extraction-progress`` (``flows/extract.py``) they are updated at most every
:data:`PROGRESS_EVERY` seconds, and always at the end: a run of many sub-second
epochs costs a few API calls, not two per epoch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

logger = logging.getLogger(__name__)

PROGRESS_EVERY = 2.0  # seconds between artifact updates (the last update is always sent)
TRAINING_PROGRESS = "training-progress"
TRAINING_EPOCHS = "training-epochs"
EMBEDDING_PROGRESS = "embedding-progress"
# share of the embedding progress bar for the skip-thought training (when it trains); the rest is
# the encoding of the query blocks
SKIPTHOUGHT_SHARE = 80.0
EPOCH_METRICS = ("R1@0.5", "R1@0.7", "mIoU")


class ProgressArtifact:
    """A Prefect progress artifact: created at ``start`` percent, then :meth:`update`-d, throttled.

    ``every``: seconds between updates (default :data:`PROGRESS_EVERY`, read when created);
    ``clock``: seconds (``time.monotonic``).
    """

    def __init__(self, key: str, description: str, *, start: float = 0.0, every: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.key = key
        self.every = PROGRESS_EVERY if every is None else float(every)
        self._clock = clock
        self.percent = _clamp(start)
        artifact_id = create_progress_artifact(progress=self.percent, key=key, description=description)
        # None (or a coroutine) outside a run: the updates then go nowhere
        self.artifact_id = artifact_id if isinstance(artifact_id, UUID) else None
        self._last = clock()
        self._sent = self.percent
        self.updates = 0

    def due(self, force: bool = False) -> bool:
        """Whether an update now would be sent (``force``, or :attr:`every` s since the last)."""
        return force or self._clock() - self._last >= self.every

    def update(self, percent: float, *, force: bool = False) -> bool:
        """Set the progress to ``percent`` (0-100); sent when due or ``force``d and not the value the
        artifact already shows. -> whether it was sent."""
        self.percent = _clamp(percent)
        if self.artifact_id is None or self.percent == self._sent or not self.due(force):
            return False
        update_progress_artifact(self.artifact_id, self.percent)
        self._last = self._clock()
        self._sent = self.percent
        self.updates += 1
        return True


def _clamp(percent: float) -> float:
    return max(0.0, min(100.0, float(percent)))


def epoch_rows(history: Sequence[Mapping[str, Any]], best_epoch: int | None = None) -> list[dict[str, Any]]:
    """The ``training-epochs`` table: one row per epoch of a trainer history (``TrainResult.history``,
    ``result.json["history"]``): ``epoch``, ``train loss`` (the epoch's mean total loss), the
    validation ``R1@0.5``, ``R1@0.7``, ``mIoU`` and ``best`` (``*`` on the selected epoch).

    >>> epoch_rows([{"epoch": 1, "train": {"total": 2.34567}, "val": {"R1@0.5": 12.345, "mIoU": 20.0}}], 1)
    [{'epoch': 1, 'train loss': 2.3457, 'R1@0.5': 12.35, 'R1@0.7': None, 'mIoU': 20.0, 'best': '*'}]
    """
    rows = []
    for i, h in enumerate(history):
        epoch = int(h.get("epoch", i + 1))
        loss = dict(h.get("train") or {}).get("total")
        val = dict(h.get("val") or {})
        row: dict[str, Any] = {"epoch": epoch,
                               "train loss": round(float(loss), 4) if isinstance(loss, (int, float)) else None}
        for k in EPOCH_METRICS:
            v = val.get(k)
            row[k] = round(float(v), 2) if isinstance(v, (int, float)) else None
        row["best"] = "*" if best_epoch is not None and epoch == best_epoch else ""
        rows.append(row)
    return rows


class TrainingArtifacts:
    """``model.train.train``'s ``on_epoch`` callback: the ``training-progress`` and
    ``training-epochs`` artifacts of one training run; :meth:`finish` sends the final state."""

    def __init__(self, description: str, *, every: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.description = description
        self.progress = ProgressArtifact(TRAINING_PROGRESS, description, every=every, clock=clock)
        self.tables = 0
        self._table_sent: tuple[int, Any] | None = None

    def __call__(self, record: Mapping[str, Any]) -> None:
        epochs = max(1, int(record.get("epochs") or 1))
        done = int(record.get("epoch") or 0)
        final = done >= epochs or bool(record.get("stopped_early"))
        if self.progress.due(final):
            # the table with the progress: both at most every PROGRESS_EVERY seconds
            self.progress.update(100.0 * done / epochs, force=final)
            self._table(record.get("history") or [], record.get("best_epoch"))

    def finish(self, history: Sequence[Mapping[str, Any]], best_epoch: int | None) -> None:
        """The run ended (or a finished run was reused): progress 100 %, the whole epoch table."""
        self.progress.update(100.0, force=True)
        if self.progress.artifact_id is not None:
            self._table(history, best_epoch)

    def _table(self, history: Sequence[Mapping[str, Any]], best_epoch: Any) -> None:
        best = int(best_epoch) if isinstance(best_epoch, int) and best_epoch > 0 else None
        if not history or self._table_sent == (len(history), best):
            return  # nothing to show, or the table the UI shows already
        self._table_sent = (len(history), best)
        create_table_artifact(
            key=TRAINING_EPOCHS, table=epoch_rows(history, best),
            description=f"{self.description}: per epoch, mean train loss and validation metrics"
                        " (best: the selected checkpoint)",
        )
        self.tables += 1


class EmbeddingProgress:
    """``pipeline.embed.embed_queries``' ``on_progress`` callback: the ``embedding-progress`` artifact.

    The skip-thought epochs fill the first :data:`SKIPTHOUGHT_SHARE` percent (when the encoder
    trains), the query blocks the rest; :meth:`finish` sends 100 %.
    """

    def __init__(self, description: str, *, every: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.progress = ProgressArtifact(EMBEDDING_PROGRESS, description, every=every, clock=clock)
        self._encode_from = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        frac = done / max(1, total)
        if stage == "skip-thought":
            self._encode_from = SKIPTHOUGHT_SHARE
            self.progress.update(SKIPTHOUGHT_SHARE * frac)
        else:
            self.progress.update(self._encode_from + (100.0 - self._encode_from) * frac,
                                 force=done >= total)

    def finish(self) -> None:
        self.progress.update(100.0, force=True)
