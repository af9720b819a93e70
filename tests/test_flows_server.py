"""The temporary Prefect server of ``mktn reproduce`` (flows/server.py): a real server process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_temporary_server_runs_a_flow_then_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    from flows.server import TemporaryServer, using_api

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))  # the server's own database
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    @flow(name="tiny-on-temporary-server")
    def tiny(x: int) -> int:
        return x + 1

    server = TemporaryServer(startup_timeout=180).start()
    proc = server.process
    assert proc is not None and proc.poll() is None
    with using_api(server) as url:
        assert url == server.api_url and url.startswith("http://127.0.0.1:")
        settings = get_current_settings()
        assert settings.api.url == url and os.environ["PREFECT_API_URL"] == url
        assert settings.flows.heartbeat_frequency is None  # nothing on this server reads them
        state = tiny(1, return_state=True)
        assert state.is_completed() and state.result() == 2
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(state.state_details.flow_run_id)
        assert run.state is not None and run.state.is_completed() and run.name
    assert (tmp_path / "prefect-home" / "prefect.db").is_file()  # runs were recorded there
    assert server.process is None and proc.poll() is not None  # stopped with the block
    assert "PREFECT_API_URL" not in os.environ
    assert server.ready_after is not None and server.ready_after > 0


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
