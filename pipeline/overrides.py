"""Strict overrides of config dataclasses: the one place an unknown key is refused.

Every config builder (``build_extraction_config``, ``build_embed_config``,
``build_skipthought_config``, ``build_synth_config``, ``SynthConfig.from_dict``,
``model.config.MKTNConfig.from_dict`` and ``override``) checks its keys here, so a typo
in ``--set``, a flow parameter or a stored dict fails at once, naming the valid keys.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Demo:
...     size: int = 1
...     name: str = "a"
>>> strict_replace(Demo(), {"size": 3}, "demo setting(s)")
Demo(size=3, name='a')
>>> strict_replace(Demo(), {"sise": 3}, "demo setting(s)")
Traceback (most recent call last):
ValueError: unknown demo setting(s) ['sise']; valid: ['name', 'size']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def field_names(cls: Any) -> set[str]:
    """The field names of a dataclass (class or instance)."""
    return {f.name for f in dataclasses.fields(cls)}


def check_keys(cls: Any, keys: Iterable[str], what: str, *, exclude: Iterable[str] = ()) -> None:
    """Raise ``ValueError("unknown <what> [...]; valid: [...]")`` for keys that are not fields of
    ``cls`` (or are in ``exclude``: fields a caller sets itself)."""
    known = field_names(cls) - set(exclude)
    unknown = sorted(set(keys) - known)
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; valid: {sorted(known)}")


def strict_replace(base: T, overrides: Mapping[str, Any] | None, what: str, *,
                   exclude: Iterable[str] = (), nested: bool = False) -> T:
    """``dataclasses.replace(base, **overrides)`` after :func:`check_keys`.

    ``nested``: a dict given for a field that holds a dataclass overrides that dataclass's own
    fields (checked the same way, named ``"<field> setting(s)"``) instead of replacing it.
    """
    overrides = dict(overrides or {})
    check_keys(base, overrides, what, exclude=exclude)
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        current = getattr(base, key)
        if nested and dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            value = strict_replace(current, value, f"{key} setting(s)")
        changes[key] = value
    return dataclasses.replace(base, **changes)  # type: ignore[type-var]


def strict_build(cls: type[T], values: Mapping[str, Any] | None, what: str) -> T:
    """``cls(**values)`` after :func:`check_keys` (for dataclasses without a base instance)."""
    values = dict(values or {})
    check_keys(cls, values, what)
    return cls(**values)
