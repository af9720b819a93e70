"""Dataset adapters: parse each benchmark's annotation files into ``QueryMoment`` records.

>>> from pipeline.datasets import load_annotations
>>> # res = load_annotations("charades-sta", "charades_sta_train.txt")
>>> # res.records[0].query_id, res.report.summary()
"""

from pipeline.datasets.durations import DurationTable, load_durations
from pipeline.datasets.errors import AnnotationFileNotFoundError, DatasetError
from pipeline.datasets.records import QueryMoment
from pipeline.datasets.registry import (
    FORMATS,
    AnnotationFormat,
    LoadResult,
    infer_split,
    load_annotations,
    load_splits,
    parse_split_arg,
    parse_split_args,
    sniff_format,
)
from pipeline.datasets.report import (
    FIXUP_REASONS,
    REJECTION_REASONS,
    ValidationIssue,
    ValidationReport,
)

__all__ = [
    "FIXUP_REASONS",
    "FORMATS",
    "REJECTION_REASONS",
    "AnnotationFileNotFoundError",
    "AnnotationFormat",
    "DatasetError",
    "DurationTable",
    "LoadResult",
    "QueryMoment",
    "ValidationIssue",
    "ValidationReport",
    "infer_split",
    "load_annotations",
    "load_durations",
    "load_splits",
    "parse_split_arg",
    "parse_split_args",
    "sniff_format",
]
