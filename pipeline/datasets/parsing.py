"""Small readers shared by the parsers: numbers, text lines and whole JSON files, with places."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.datasets.errors import AnnotationFileNotFoundError, DatasetError


def to_float(value: Any, what: str) -> float:
    """A JSON number (or numeric string) as float; ``ValueError`` naming ``what`` otherwise.

    NaN and infinities pass through: the validator rejects them as ``non_finite_time``.
    """
    if type(value) is float or type(value) is int:  # the common case, first
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{what} must be a number, not {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{what} must be a number, not {value!r}") from None


def require_file(path: Path, fmt: str) -> None:
    if not path.is_file():
        hint = " (it is a directory; name the annotation file inside it)" if path.is_dir() else ""
        raise AnnotationFileNotFoundError(
            f"{fmt} annotation file {str(path)!r} does not exist{hint}; check the path"
        )


def iter_lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(1-based line number, text) for each line; text is None when it is not UTF-8.

    Works with LF or CRLF endings, with or without a trailing newline or a byte-order mark.
    """
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                # utf-8-sig on the first line drops a byte-order mark some editors write
                yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                yield lineno, None


def read_json_object(path: Path, fmt: str) -> dict[str, Any]:
    """The top-level JSON object of ``path``; ``DatasetError`` with line and column if it is not one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{path}: not UTF-8 text at byte {e.start}; is this a {fmt} file?"
        ) from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); a {fmt} file is one JSON "
            "object keyed by video id"
        ) from e
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: the top level is a JSON {type(data).__name__}, but a {fmt} file is one "
            "JSON object keyed by video id"
        )
    return data
