"""A temporary local Prefect server for one command, started before the command's own imports.

Without ``PREFECT_API_URL`` Prefect starts a temporary server (its "ephemeral"
mode) the first time a flow needs the API: a ``uvicorn`` subprocess running
Prefect's own API app, ``prefect.server.api.server:create_app``, on a free
loopback port. It boots in ~4.5 s on the 2-core development machine, all of it
on the critical path of a cached ``mktn reproduce`` rerun, whose flow is only a
few seconds of cache hits. :class:`TemporaryServer` runs the same app the same
way (same command, ``PREFECT__SERVER_EPHEMERAL=1``: no UI, no background
services) but is started *first*, so its boot overlaps the command's imports on
the other core, and is stopped after Prefect's log and event workers have
drained into it.

It keeps Prefect's database (``PREFECT_API_DATABASE_CONNECTION_URL``, by default
``$PREFECT_HOME/prefect.db``), so runs appear there as with Prefect's own
temporary server. Block-type registration at start-up is skipped: the flows keep
their results on a local path (``flows.caching.result_storage``), no saved
block, and loading every Prefect collection to register its blocks costs the
start-up ~0.3 s (``prefect server start`` registers them on its own start).

:func:`start_if_needed` is the entry point: ``None`` when an API is configured
(``PREFECT_API_URL``, from the environment or the active profile; then nothing
is started) or ephemeral mode is off.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_STARTUP_TIMEOUT = 180.0  # seconds; Prefect's default (20 s) is too short on a loaded 2-core machine
_STARTUP_FAILED = 3  # uvicorn's exit status when it cannot bind the port or the app fails to start
_PORT_RETRIES = 3
_SERVER_ENV = {
    # as Prefect's own temporary server (prefect.server.api.server.SubprocessASGIServer)
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
    # the flows save no blocks; skip loading every collection to register block types
    "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
    "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _project_root() -> str:
    """The folder holding the ``flows`` package (the server process imports :func:`create_app`)."""
    return str(Path(__file__).resolve().parents[1])


def create_app() -> Any:
    """The server's ASGI app: Prefect's own (``prefect.server.api.server.create_app``) in
    :class:`RetrySoon`. Runs in the server process (``uvicorn --factory``)."""
    from prefect.server.api.server import create_app as prefect_app

    return RetrySoon(prefect_app())


class RetrySoon:
    """ASGI middleware: a 503 answer tells the client when to retry (``Retry-After``), soon.

    On SQLite, Prefect's API answers 503 when a request's deferred transaction
    reads, then writes, and the server's task-run recorder commits in between
    (``SQLITE_BUSY_SNAPSHOT``: "database is locked", at once, without SQLite's busy
    wait). Prefect's client retries a 503 after ``2 ** attempt`` seconds unless the
    answer carries ``Retry-After``. A cached rerun opens several subflows right after
    bursts of task runs, and lost 2 s to this two or three times per run; the conflict
    itself lasts milliseconds. So a 503 says ``Retry-After: FIRST_RETRY`` seconds,
    tripled with each 503 in a row (any other answer resets it), up to ``MAX_RETRY``:
    0.1, 0.3, 0.9, 2.7, 8 s, so Prefect's 5 retries still span ~12 s. Every other
    answer passes through untouched.
    """

    FIRST_RETRY = 0.1
    GROWTH = 3.0
    MAX_RETRY = 8.0

    def __init__(self, app: Any) -> None:
        self.app = app
        self._unavailable_in_a_row = 0

    def retry_after(self) -> float:
        return min(self.MAX_RETRY, self.FIRST_RETRY * self.GROWTH ** max(0, self._unavailable_in_a_row - 1))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_retry_after(message: Any) -> None:
            if message.get("type") == "http.response.start":
                if message.get("status") == 503:
                    self._unavailable_in_a_row += 1
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"retry-after"]
                    headers.append((b"retry-after", f"{self.retry_after():.2f}".encode()))
                    message = {**message, "headers": headers}
                else:
                    self._unavailable_in_a_row = 0
            await send(message)

        await self.app(scope, receive, send_with_retry_after)


class TemporaryServer:
    """Prefect's API app in a ``uvicorn`` subprocess on ``host:port`` (a free port when ``None``).

    ``start()`` returns at once; ``wait_ready()`` blocks until ``/api/health``
    answers and returns the API URL; ``stop()`` terminates the process. Also a
    context manager (start + wait on entry, stop on exit).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        startup_timeout: float | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.startup_timeout = float(startup_timeout or _startup_timeout())
        self._env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self.started_at: float | None = None
        self.ready_after: float | None = None  # seconds from start() to a healthy API
        self._atexit = False

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    def start(self) -> TemporaryServer:
        """Launch the server process (non-blocking); a no-op when it is already running."""
        if self.process is not None and self.process.poll() is None:
            return self
        if self.port is None:
            self.port = free_port(self.host)
        import tempfile

        fd, log = tempfile.mkstemp(prefix="mktn-prefect-server-", suffix=".log")
        self._log = Path(log)
        env = {**os.environ, **(self._env or {}), **_SERVER_ENV}
        cmd = [
            sys.executable, "-m", "uvicorn", "--app-dir", _project_root(), "--factory",
            "flows.server:create_app", "--host", self.host, "--port", str(self.port),
            "--log-level", "error", "--lifespan", "on",
        ]
        with os.fdopen(fd, "wb") as out:
            self.process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        if not self._atexit:  # never outlive this process, whatever ends it
            atexit.register(self.stop)
            self._atexit = True
        self.started_at = time.perf_counter()
        self.ready_after = None
        logger.info("starting a temporary Prefect server on %s (pid %d)", self.api_url, self.process.pid)
        return self

    def _output_tail(self, limit: int = 4000) -> str:
        if self._log is None or not self._log.is_file():
            return ""
        return self._log.read_text(encoding="utf-8", errors="replace")[-limit:]

    def wait_ready(self) -> str:
        """Block until the API answers ``/health``; return :attr:`api_url`.

        Raises ``RuntimeError`` with the server's output when it exits or does not
        answer within :attr:`startup_timeout` (``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``).
        """
        if self.process is None:
            self.start()
        assert self.process is not None and self.started_at is not None
        deadline = time.perf_counter() + self.startup_timeout
        restarts = 0
        while True:
            code = self.process.poll()
            if code == _STARTUP_FAILED and restarts < _PORT_RETRIES and _port_taken(self._output_tail()):
                # another process took the port between free_port() and the bind: try another
                logger.info("port %s was taken; restarting the temporary server on another", self.port)
                restarts += 1
                self.stop()
                self.port = None
                self.start()
                continue
            if code is not None:
                raise RuntimeError(
                    f"the temporary Prefect server exited with status {code} before answering; "
                    f"its output:\n{self._output_tail()}\nstart one yourself (prefect server start) "
                    "and set PREFECT_API_URL to use it instead"
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.perf_counter() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the temporary Prefect server on {self.api_url} did not answer within "
                    f"{self.startup_timeout:.0f} s; raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS "
                    f"or start a server yourself and set PREFECT_API_URL. Its output:\n{self._output_tail()}"
                )
            time.sleep(0.05)
        self.ready_after = time.perf_counter() - self.started_at
        logger.info("temporary Prefect server ready after %.1f s", self.ready_after)
        return self.api_url

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout`` s) and remove its log.

        A server that never answered is killed at once: uvicorn defers SIGTERM until its
        app has loaded (seconds of imports), and there is nothing to shut down cleanly yet.
        """
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            if self.ready_after is None:
                proc.kill()
            else:
                proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.unlink(missing_ok=True)
            self._log = None

    def __enter__(self) -> TemporaryServer:
        self.start().wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_taken(output: str) -> bool:
    return "address already in use" in output.lower() or "errno 98" in output.lower()


def _startup_timeout() -> float:
    raw = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
    try:
        return float(raw) if raw else DEFAULT_STARTUP_TIMEOUT
    except ValueError:
        raise ValueError(
            f"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS={raw!r} is not a number of seconds"
        ) from None


def api_configured() -> tuple[bool, bool]:
    """``(api_url_set, ephemeral_enabled)`` from Prefect's settings (environment, profile, files)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    return bool(settings.api.url), bool(settings.server.ephemeral.enabled)


def start_if_needed() -> TemporaryServer | None:
    """Start a :class:`TemporaryServer` now when the command will need one, else ``None``.

    With ``PREFECT_API_URL`` in the environment nothing is started. Otherwise the
    server is launched at once, *before* Prefect is imported to read the profile
    (the import costs ~0.8 s the server's boot can overlap); if the profile turns
    out to name an API, or ephemeral mode is off, it is stopped again.
    """
    if os.environ.get("PREFECT_API_URL"):
        return None
    server = TemporaryServer().start()
    try:
        api_set, ephemeral = api_configured()
    except BaseException:
        server.stop()
        raise
    if api_set or not ephemeral:
        server.stop()
        return None
    return server


def drain_prefect_workers() -> None:
    """Flush Prefect's log and event workers to the API (before the server they talk to stops)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=30)
        except RuntimeError:  # never started
            pass


@contextmanager
def using_api(server: TemporaryServer | None) -> Iterator[str | None]:
    """Run the block against ``server`` (``PREFECT_API_URL`` pointed at it), then drain and stop it.

    With ``server=None`` the configured API is used as it is (yields ``None``).
    """
    if server is None:
        yield None
        return
    try:
        url = server.wait_ready()
        from prefect.settings import PREFECT_API_URL, temporary_settings

        # the setting for this process, the variable for any subprocess (Dask workers)
        os.environ["PREFECT_API_URL"] = url
        # No flow-run heartbeats: they let a server's services mark crashed runs, and this
        # server runs none and ends with the command. Each flow run's heartbeat thread sleeps
        # in 1 s steps and is joined at the run's end: ~0.5 s per flow run, 7 of them here.
        updates = {PREFECT_API_URL: url, "flows.heartbeat_frequency": None}
        with temporary_settings(updates=updates):
            try:
                yield url
            finally:
                drain_prefect_workers()
    finally:
        if os.environ.get("PREFECT_API_URL") == server.api_url:
            del os.environ["PREFECT_API_URL"]
        server.stop()
