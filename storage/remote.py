"""Remote (fsspec) store roots: the storage options they are opened with, and a clear error when
the filesystem package of a URL scheme is not installed.

A store root that is a URL other than ``file://`` (``s3://bucket/features.zarr``,
``gs://...``, ``memory://...``) is opened through fsspec with *storage options*: the keyword
arguments of the fsspec filesystem (for s3fs: ``endpoint_url``, ``key``, ``secret``, ``anon``,
``client_kwargs``...). They come from, first match wins:

1. the ``storage_options`` argument of :class:`storage.features.FeatureStore` /
   :class:`storage.queries.QueryStore` (a dict);
2. the environment variable ``MKTN_STORAGE_OPTIONS``: a JSON object. The ``mktn`` commands
   that read or write a store set it from their repeatable ``--storage-option KEY=VALUE``
   flags (merged over what the environment already holds), so every store the command opens,
   and every process it starts (Dask local workers, Prefect task runners), sees the same
   options.

Credentials are better left to the filesystem's own sources (for s3fs: ``AWS_ACCESS_KEY_ID``
/ ``AWS_SECRET_ACCESS_KEY``, ``~/.aws/credentials``, an instance role) than put on a command line.

>>> parse_storage_options(["endpoint_url=http://127.0.0.1:9000", "anon=false",
...                        "client_kwargs.region_name=us-east-1"])
{'endpoint_url': 'http://127.0.0.1:9000', 'anon': False, 'client_kwargs': {'region_name': 'us-east-1'}}
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

STORAGE_OPTIONS_ENV = "MKTN_STORAGE_OPTIONS"

# URL scheme -> (the module fsspec needs for it, the pip requirement that provides it)
_SCHEME_PACKAGES: dict[str, tuple[str, str]] = {
    "s3": ("s3fs", "'mktn[s3]' (or s3fs)"),
    "s3a": ("s3fs", "'mktn[s3]' (or s3fs)"),
    "gs": ("gcsfs", "gcsfs"),
    "gcs": ("gcsfs", "gcsfs"),
    "az": ("adlfs", "adlfs"),
    "abfs": ("adlfs", "adlfs"),
    "abfss": ("adlfs", "adlfs"),
}


def is_remote_root(root: object) -> bool:
    """True for a URL root other than ``file://`` (opened through fsspec)."""
    if not isinstance(root, str | os.PathLike):
        return False
    text = os.fspath(root)
    return "://" in text and not text.startswith("file://")


def _value(text: str) -> Any:
    """``true``/``false``/``null``, numbers, JSON lists and objects as such; anything else a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_storage_options(items: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a storage-options dict; ``a.b=V`` nests (``{"a": {"b": V}}``).

    A value is JSON when it parses as JSON (``false``, ``3``, ``{"x": 1}``), else the string.
    A malformed item is a ``ValueError`` naming it.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ValueError(
                f"storage option {item!r} is not KEY=VALUE (e.g. endpoint_url=http://host:9000, "
                "anon=false, client_kwargs.region_name=us-east-1)"
            )
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"storage option {item!r}: {part!r} is already set to a value")
            node = child
        node[parts[-1]] = _value(raw)
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def env_storage_options() -> dict[str, Any]:
    """The options in ``MKTN_STORAGE_OPTIONS`` (``{}`` when unset); bad JSON is a ``ValueError``."""
    text = os.environ.get(STORAGE_OPTIONS_ENV, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(
            f"{STORAGE_OPTIONS_ENV} is not JSON ({exc}); set it to an object such as "
            '\'{"endpoint_url": "http://127.0.0.1:9000"}\' or unset it'
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"{STORAGE_OPTIONS_ENV} must be a JSON object, got {type(value).__name__}")
    return value


def set_env_storage_options(items: Iterable[str]) -> dict[str, Any]:
    """Merge ``KEY=VALUE`` items into ``MKTN_STORAGE_OPTIONS`` (what a command's
    ``--storage-option`` flags do) and return the merged options (``{}`` for no items: the
    variable is left as it is)."""
    extra = parse_storage_options(items)
    if not extra:  # nothing to merge: the variable is read (and checked) by the store it serves
        return {}
    merged = _merge(env_storage_options(), extra)
    os.environ[STORAGE_OPTIONS_ENV] = json.dumps(merged)
    return merged


def resolve_storage_options(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``storage_options`` when given, else ``MKTN_STORAGE_OPTIONS`` (see the module docstring)."""
    if storage_options is not None:
        return dict(storage_options)
    return env_storage_options()


def require_filesystem(url: str) -> None:
    """Raise one ``ValueError`` naming the package to install when the URL's scheme needs a
    filesystem package that is missing (``s3://`` without s3fs...)."""
    scheme = url.split("://", 1)[0].lower()
    need = _SCHEME_PACKAGES.get(scheme)
    if need is None:
        return
    module, requirement = need
    if importlib.util.find_spec(module) is None:
        raise ValueError(
            f"store root {url!r} needs the {module} package, which is not installed; "
            f"pip install {requirement}, or use a local path"
        )


def open_fsspec_store(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """A zarr ``FsspecStore`` for ``url`` with the resolved storage options.

    Directory listings are not cached by default (``use_listings_cache=False``): another
    process may add videos to the store at any time, and a cached listing would hide them.
    """
    import zarr.storage

    require_filesystem(url)
    options = {"use_listings_cache": False, **resolve_storage_options(storage_options)}
    return zarr.storage.FsspecStore.from_url(url, storage_options=options)
