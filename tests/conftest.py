"""Shared fixtures: the real reference data in ../shared/data, small, fast torch settings, and one
temporary Prefect server for the flow tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (PROJECT_ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real annotation files and video of ``../shared/data`` (never copied into the repo)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"reference data not found at {SHARED_DATA}; the project expects ../shared/data beside it")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _no_batch_size_cache() -> Iterator[None]:
    """Every test's CPU extraction measures its batch size: nothing is read from or written to
    the user's cache (tests of the cache turn it on with a temporary MKTN_CACHE_DIR)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MKTN_BATCH_PROBE_CACHE", "0")
    yield
    mp.undo()


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(2)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test on one torch thread: tiny models run faster that way than on two busy shared cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One temporary Prefect server for every flow test of the session, as `mktn reproduce` runs it.

    ``flows.server.TemporaryServer`` (Prefect's API app in a uvicorn subprocess) with its own
    SQLite database under a temporary ``PREFECT_HOME``; the flows reach it through
    ``using_api`` (``PREFECT_API_URL``), which drains Prefect's workers and stops it at the end.
    """
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from flows.server import TemporaryServer, using_api

    home = tmp_path_factory.mktemp("prefect-home")
    server = TemporaryServer(startup_timeout=180, env={"PREFECT_HOME": str(home)}).start()
    with using_api(server) as url:
        assert url is not None
        yield url
