"""Third-party loggers that write a line per HTTP call stay quiet unless -vv asks for them."""

from __future__ import annotations

import logging

import pytest

from pipeline.cli import CHATTY_LOGGERS, main, quiet_third_party


@pytest.fixture(autouse=True)
def _restore_levels():
    before = {n: logging.getLogger(n).level for n in CHATTY_LOGGERS}
    yield
    for n, level in before.items():
        logging.getLogger(n).setLevel(level)


@pytest.mark.parametrize("flags, level", [([], logging.WARNING), (["-v"], logging.WARNING), (["-vv"], logging.NOTSET)])
def test_a_command_keeps_httpx_at_warning_unless_debug(tmp_path, flags: list[str], level: int) -> None:
    for n in CHATTY_LOGGERS:
        logging.getLogger(n).setLevel(logging.INFO)  # as a library's own set-up may leave it
    rc = main([*flags, "store", "check", "--store", str(tmp_path / "none.zarr")])
    assert rc == 2  # the command ran (and refused the missing store in one line)
    assert all(logging.getLogger(n).level == level for n in CHATTY_LOGGERS)


def test_quiet_third_party_can_be_reapplied_after_a_reset() -> None:
    logging.getLogger("httpx").setLevel(logging.INFO)
    quiet_third_party(0)
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
