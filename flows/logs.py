"""The library's own log records in the Prefect flow-run logs.

Prefect sends the records of its run loggers (``get_run_logger()``) to the API; a
library's ``logging.getLogger(__name__)`` records reach only the console, unless the
logger is named in Prefect's ``logging.extra_loggers`` setting
(``PREFECT_LOGGING_EXTRA_LOGGERS``), which Prefect reads once, when it is first
imported, and whose handler warns for every record logged outside a run.

So :func:`send_library_logs_to_runs` (run when ``flows.tasks`` is imported, as every
flow module does: in ``mktn reproduce``, ``mktn serve``'s flow-run processes, a
worker's flow-run process, a Dask worker running a task) gives each of :data:`LIBRARY_LOGGERS` a
:class:`RunLogHandler`: Prefect's API log handler, which links a record to the flow
or task run it was logged in, and drops (silently) a record logged outside any run,
as when the library runs from ``mktn train``. It sends records at
``PREFECT_LOGGING_LEVEL`` (default INFO) and above; a library logger with no level
of its own is lowered to that level when its effective level is higher (Prefect's
process leaves the root logger at WARNING), never raised.

A logger that already has Prefect's API handler (named in
``PREFECT_LOGGING_EXTRA_LOGGERS``) is left alone, so no record is sent twice. More
loggers (a third-party library's) go through Prefect's own setting.
"""

from __future__ import annotations

import logging
import sys

from prefect.exceptions import MissingContextError
from prefect.logging.handlers import APILogHandler

LIBRARY_LOGGERS = ("pipeline", "model", "storage", "flows")


class RunLogHandler(APILogHandler):
    """Prefect's API log handler, quiet outside a run: a record with no flow or task run is dropped
    without Prefect's per-record warning (the library also runs outside flows)."""

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], MissingContextError):
            return
        super().handleError(record)


def _prefect_level() -> int:
    from prefect.settings import PREFECT_LOGGING_LEVEL

    level = logging.getLevelName(str(PREFECT_LOGGING_LEVEL.value()).upper())
    return level if isinstance(level, int) else logging.INFO


_HANDLER: RunLogHandler | None = None


def send_library_logs_to_runs(names: tuple[str, ...] = LIBRARY_LOGGERS) -> list[str]:
    """Attach the (one, shared) :class:`RunLogHandler` to each logger of ``names`` that has no API
    handler yet; -> the names it was added to (none on a second call)."""
    global _HANDLER
    level = _prefect_level()
    if _HANDLER is None:
        _HANDLER = RunLogHandler()
        _HANDLER.setLevel(level)
    added = []
    for name in names:
        lib = logging.getLogger(name)
        if any(isinstance(h, APILogHandler) for h in lib.handlers):
            continue  # ours already, or Prefect's (PREFECT_LOGGING_EXTRA_LOGGERS)
        lib.addHandler(_HANDLER)
        if lib.level == logging.NOTSET and lib.getEffectiveLevel() > level:
            lib.setLevel(level)
        added.append(name)
    return added
