"""Which task failures Prefect retries: the shared policy (``pipeline/scaleout.py``) as Prefect options.

What is transient, how many retries and the backoff are decided once, in
``pipeline.scaleout`` (the Prefect-free ``extract_on_dask`` applies the same policy);
this module re-exports them for the flows and adds Prefect's ``retry_condition_fn``.

>>> is_transient(TimeoutError("read timed out")), reason_is_transient("[Errno 5] Input/output error")
(True, True)
>>> RETRIES, RETRY_DELAYS
(3, [2.0, 10.0, 30.0])
"""

from __future__ import annotations

from typing import Any

from pipeline.scaleout import (
    RETRIES,
    RETRY_DELAYS,
    RETRY_JITTER,
    is_transient,
    reason_is_transient,
)

__all__ = [
    "RETRIES", "RETRY_DELAYS", "RETRY_JITTER", "PermanentTaskError", "TransientTaskError",
    "is_transient", "reason_is_transient", "retry_transient",
]


class TransientTaskError(OSError):
    """A failure worth retrying (transient I/O), raised by a task from a library's reason string."""


class PermanentTaskError(ValueError):
    """A failure that would repeat (corrupt input, bad configuration): not retried."""


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure's exception is transient.

    A task that ran over its ``timeout_seconds`` is not retried: a hung input hangs again.
    """
    exc = getattr(state, "data", None)
    if not isinstance(exc, BaseException):
        try:
            state.result(raise_on_failure=True)
        except BaseException as raised:  # we only classify it
            exc = raised
        else:
            return False
    if type(exc).__name__ == "TaskRunTimeoutError":
        return False
    return is_transient(exc)
