"""Which task failures are worth retrying: transient I/O yes, deterministic errors no.

A corrupt video, a malformed annotation line or a bad configuration fails the
same way every time, so retrying only wastes minutes: those raise
``ValueError``/``RuntimeError``/decord's ``DECORDError`` and are not retried.
A network filesystem hiccup, a timeout or a dropped connection (``OSError``
other than "no such file"/"permission denied", ``TimeoutError``,
``ConnectionError``) is retried with backoff (:data:`RETRY_DELAYS`).
"""

from __future__ import annotations

from typing import Any

RETRIES = 3
RETRY_DELAYS: list[float] = [2.0, 10.0, 30.0]  # backoff between attempts, seconds
RETRY_JITTER = 0.3

_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def is_transient(exc: BaseException) -> bool:
    """True for errors that may pass on a second try.

    >>> is_transient(TimeoutError("read timed out"))
    True
    >>> is_transient(FileNotFoundError("a.mp4"))
    False
    >>> is_transient(ValueError("corrupt video"))
    False
    """
    if isinstance(exc, _PERMANENT_OS_ERRORS):
        return False
    return isinstance(exc, (OSError, TimeoutError, ConnectionError))


# errno values of failures that can pass on a second try (EIO, EAGAIN, EBUSY, ECONNRESET,
# ETIMEDOUT, ESTALE: a flaky disk or network filesystem), as they appear in a reason string
_TRANSIENT_ERRNOS = (5, 11, 16, 104, 110, 116)
_TRANSIENT_NAMES = ("TimeoutError", "ConnectionError", "ConnectionResetError", "BrokenPipeError")


def reason_is_transient(reason: str) -> bool:
    """Classify a library's failure *reason string* (``pipeline.extract`` reports, never raises).

    >>> reason_is_transient("write failed: [Errno 5] Input/output error")
    True
    >>> reason_is_transient("OSError: [Errno 2] No such file or directory: 'a.mp4'")
    False
    >>> reason_is_transient("cannot decode frame 12: invalid data")
    False
    """
    if any(name in reason for name in _TRANSIENT_NAMES):
        return True
    return any(f"[Errno {n}]" in reason for n in _TRANSIENT_ERRNOS)


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
