"""The one place store keys are made. Every Zarr path component goes through ``safe_component``.

Also the one name of the commit marker both stores write last (``COMMIT_ATTR``) and the
test for it (``is_committed``), which still reads the name query groups were committed under
before the two stores agreed (``LEGACY_COMMIT_ATTRS``).

A video id or dataset name that could escape the store (``/``, ``\\``, ``..``,
absolute paths, control characters, empty) is rejected with a ``ValueError``
that names it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

COMMIT_ATTR = "commit"  # the commit marker of a feature-store video and of a query-store group
LEGACY_COMMIT_ATTRS = ("mktn_commit",)  # query-store groups written before the one name: still read


def is_committed(attrs: Mapping[str, Any] | None) -> bool:
    """Whether ``attrs`` (a group's attributes) hold a commit marker, under any of its names."""
    return attrs is not None and (COMMIT_ATTR in attrs or any(k in attrs for k in LEGACY_COMMIT_ATTRS))

_ALLOWED = re.compile(r"^[A-Za-z0-9_.@+=,-][A-Za-z0-9 _.@+=,-]*$")


def safe_component(value: str, *, what: str = "key") -> str:
    """Return ``value`` unchanged if it is a safe single path component, else raise ``ValueError``.

    >>> safe_component("v_ZNVhz7ctTq0", what="video id")
    'v_ZNVhz7ctTq0'
    >>> safe_component("../etc", what="video id")
    Traceback (most recent call last):
    ...
    ValueError: video id '../etc' cannot be used as a store key: it contains '/' or '\\', is '.' or '..', or has characters outside [A-Za-z0-9 _.@+=,-]
    """
    if (
        not isinstance(value, str)
        or not value
        or value in (".", "..")
        or value.startswith("..")
        or "/" in value
        or "\\" in value
        or not _ALLOWED.match(value)
    ):
        raise ValueError(
            f"{what} {value!r} cannot be used as a store key: it contains '/' or '\\', "
            "is '.' or '..', or has characters outside [A-Za-z0-9 _.@+=,-]"
        )
    return value


def join_key(*components: str, what: str = "key") -> str:
    """Join validated components with ``/``: ``join_key("charades", "c3d@random-0")``."""
    return "/".join(safe_component(c, what=what) for c in components)
