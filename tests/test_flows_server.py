"""The temporary Prefect server of ``mktn reproduce`` (flows/server.py): a real server process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_stop_ends_the_server_process_and_restores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``using_api`` stops its server, ready or not, and leaves ``PREFECT_API_URL`` as it found it.

    (A flow run against a ready server: tests/test_flows.py, whose flows all run on one.)
    """
    from flows.server import TemporaryServer, using_api

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    server = TemporaryServer().start()
    proc = server.process
    assert proc is not None and proc.poll() is None and server.port is not None
    server.wait_ready = lambda: server.api_url  # type: ignore[method-assign]  # not waiting for the boot
    with using_api(server) as url:
        assert url == server.api_url and os.environ["PREFECT_API_URL"] == url
    assert server.process is None and proc.poll() is not None
    assert "PREFECT_API_URL" not in os.environ


def test_server_failure_is_reported_with_its_output(tmp_path: Path) -> None:
    from flows.server import TemporaryServer

    # an unusable database location: the app's start-up fails and uvicorn exits
    bad = {"PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/x.db"}
    server = TemporaryServer(startup_timeout=120, env=bad).start()
    with pytest.raises(RuntimeError, match=r"exited with status \d+ before answering(.|\n)*PREFECT_API_URL"):
        server.wait_ready()
    server.stop()


def test_configured_api_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.server import start_if_needed, using_api

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert start_if_needed() is None
    with using_api(None) as url:
        assert url is None


def test_bad_startup_timeout_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.server import TemporaryServer

    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "soon")
    with pytest.raises(ValueError, match="PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS='soon'"):
        TemporaryServer()


def test_retry_soon_adds_a_growing_retry_after_to_503s_only() -> None:
    """The middleware on a real ASGI exchange: 503s get Retry-After 0.1, 0.3, 0.9 ... s; others pass."""
    import asyncio

    from flows.server import RetrySoon

    statuses = iter([503, 503, 503, 200, 503, 404])

    async def app(scope: dict, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": next(statuses), "headers": [(b"x", b"1")]})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"{}"})  # type: ignore[operator]

    middleware = RetrySoon(app)

    def exchange() -> dict[bytes, bytes]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        asyncio.run(middleware({"type": "http", "method": "POST"}, None, send))
        assert sent[1]["type"] == "http.response.body"
        return dict(sent[0]["headers"])

    got = [exchange().get(b"retry-after") for _ in range(6)]
    assert got == [b"0.10", b"0.30", b"0.90", None, b"0.10", None]
    assert middleware.retry_after() == 0.1  # the 404 reset the run of 503s
