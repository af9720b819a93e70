"""Code version and source digests recorded in every artifact's metadata.

``code_version()`` is the package version; ``source_digest()`` hashes the
project's Python sources so cache keys change when any helper a task calls is
edited (Prefect's ``TASK_SOURCE`` only sees the task function itself).

It lives in ``storage`` (the bottom layer) because the stores stamp ``code_version()``
on every group they commit; ``pipeline.provenance`` re-exports it for older imports.
The package version is written once, here (``pipeline.__version__`` and
``mktn --version`` read it); keep it equal to ``version`` in ``pyproject.toml``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from collections.abc import Iterable
from pathlib import Path

__version__ = "0.1.0"

PROJECT_PACKAGES = ("pipeline", "model", "flows", "storage")


def code_version() -> str:
    """The installed package version, e.g. ``"0.1.0"``."""
    return __version__


@functools.cache
def _package_digest(package: str) -> str:
    module = importlib.import_module(package)
    if module.__file__ is None:
        raise ValueError(f"package {package!r} has no source files to digest")
    root = Path(module.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def source_digest(packages: Iterable[str] = PROJECT_PACKAGES) -> str:
    """A sha256 over the ``.py`` files of ``packages`` (first 16 hex digits)."""
    h = hashlib.sha256()
    for package in sorted(packages):
        h.update(package.encode())
        h.update(_package_digest(package).encode())
    return h.hexdigest()[:16]
