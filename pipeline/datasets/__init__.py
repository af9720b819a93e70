"""Dataset adapters: parse each benchmark's annotation files into ``QueryMoment`` records."""

from pipeline.datasets.records import QueryMoment

__all__ = ["QueryMoment"]
