"""The errors dataset adapters raise: each names the file (and line) and says how to fix it."""

from __future__ import annotations


class DatasetError(ValueError):
    """An annotation file that cannot be read at all: unknown format, bad JSON, no pairs.

    Problems confined to one line or one entry never raise; they are counted in the
    ``ValidationReport`` (with ``strict=True`` a malformed line raises this instead).
    """


class AnnotationFileNotFoundError(DatasetError, FileNotFoundError):
    """An annotation or durations file that does not exist (also a ``FileNotFoundError``)."""
