"""What both scale-out paths for extraction share: the ``--dask`` address and the retry policy.

Extraction reaches Dask workers two ways (``docs/deploy.md`` "Distributed extraction"):

- the ``extract-features`` Prefect flow on ``prefect_dask.DaskTaskRunner``
  (``flows/runners.py``; ``mktn reproduce --dask``, ``mktn serve --dask``, deployments),
  with Prefect's caching, retries, artifacts and UI;
- ``pipeline/distributed_extract.py`` (``mktn extract --dask``, ``extract_on_dask``) without
  Prefect: no server, no result store, a plain ``distributed.Client``, for a script, a notebook
  or a cluster where no Prefect API runs.

Both read a ``--dask`` value with :func:`parse_dask_address` and decide what to retry, how often
and after how long with the policy below; the flow hands it to Prefect
(``flows/retry.py``: ``retry_condition_fn``, ``retries``, ``retry_delay_seconds``), the
Prefect-free path applies it itself. A corrupt video, a malformed annotation line or a bad
configuration fails the same way every time, so retrying only wastes minutes: those raise
``ValueError``/``RuntimeError``/decord's ``DECORDError`` and are not retried. A network
filesystem hiccup, a timeout or a dropped connection (``OSError`` other than "no such
file"/"permission denied", ``TimeoutError``, ``ConnectionError``) is retried with backoff
(:data:`RETRY_DELAYS`).
"""

from __future__ import annotations

import random

LOCAL = "local"

RETRIES = 3
RETRY_DELAYS: list[float] = [2.0, 10.0, 30.0]  # backoff between attempts, seconds
RETRY_JITTER = 0.3  # each delay is stretched by up to this fraction (Prefect's retry_jitter_factor)

_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)

# errno values of failures that can pass on a second try (EIO, EAGAIN, EBUSY, ECONNRESET,
# ETIMEDOUT, ESTALE: a flaky disk or network filesystem), as they appear in a reason string
_TRANSIENT_ERRNOS = (5, 11, 16, 104, 110, 116)
_TRANSIENT_NAMES = ("TimeoutError", "ConnectionError", "ConnectionResetError", "BrokenPipeError")


def parse_dask_address(value: str) -> str:
    """A ``--dask`` value -> ``"local"`` (a ``LocalCluster`` here) or a scheduler URL.

    >>> parse_dask_address("local")
    'local'
    >>> parse_dask_address("10.0.0.5:8786")
    'tcp://10.0.0.5:8786'
    >>> parse_dask_address("tls://sched:8786")
    'tls://sched:8786'
    >>> parse_dask_address("sched")
    Traceback (most recent call last):
    ...
    ValueError: --dask 'sched' is neither 'local' nor a scheduler address; give host:port, e.g. tcp://10.0.0.5:8786
    """
    if value == LOCAL:
        return LOCAL
    address = value if "://" in value else f"tcp://{value}"
    if ":" not in address.split("://", 1)[1]:
        raise ValueError(
            f"--dask {value!r} is neither 'local' nor a scheduler address; give host:port, "
            "e.g. tcp://10.0.0.5:8786"
        )
    return address


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


def retry_delay(attempt: int, *, jitter: float = RETRY_JITTER) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): :data:`RETRY_DELAYS`, the last
    one repeated, stretched by up to ``jitter``.

    >>> [retry_delay(i, jitter=0.0) for i in range(4)]
    [2.0, 10.0, 30.0, 30.0]
    """
    base = RETRY_DELAYS[min(max(attempt, 0), len(RETRY_DELAYS) - 1)]
    return base * (1.0 + random.uniform(0.0, max(0.0, jitter)))
