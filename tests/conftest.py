"""Shared fixtures: the real reference data in ../shared/data and small, fast torch settings."""

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
