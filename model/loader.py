"""Build ``GroundingData`` from the feature store, the query store and annotation files.

The model reads features and queries only through ``storage.features.FeatureStore``
and ``storage.queries.QueryStore``, and records only through ``pipeline.datasets``.
A record whose video has no committed features, or whose query is not in the
query store, is skipped and counted (one broken video never stops a run).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from model.data import GroundingData, QueryInput, VideoInput
from pipeline.datasets.records import QueryMoment

log = logging.getLogger(__name__)


def annotation_paths(specs: Sequence[str]) -> dict[str, Path]:
    """``--annotations`` values -> ``{split: path}``.

    Each value is a directory (every ``*.jsonl``/``*.json``/``*.txt`` in it, split from
    the file name), a file (split from its name), or ``SPLIT=PATH``; parsed by
    ``pipeline.datasets.parse_split_args``.
    """
    from pipeline.datasets.registry import parse_split_args

    return parse_split_args(specs, expand_dirs=True)


def load_records_from_specs(specs: Sequence[str], fmt: str | None = None,
                 durations: str | None = None) -> list[QueryMoment]:
    """Records of every split named by ``specs`` (see ``annotation_paths``)."""
    from pipeline.datasets.registry import load_splits

    res = load_splits(fmt, annotation_paths(specs), durations=durations)
    return res.records


def load_grounding_data(features: str | os.PathLike[str], queries: str | os.PathLike[str],
                        records: Sequence[QueryMoment], *, dataset: str | None = None,
                        extractor_id: str | None = None, encoder_id: str | None = None,
                        show_progress: bool = True) -> GroundingData:
    """Read the videos and queries ``records`` need; record the stores' provenance in ``meta``."""
    from storage.features import FeatureStore
    from storage.queries import QueryStore

    group = FeatureStore(features).select_group(dataset, extractor_id)
    ds, ex = group.dataset, group.extractor_id
    qstore = QueryStore(queries)
    enc = encoder_id or qstore.latest_encoder(ds)
    qgroup = qstore.group(ds, enc)
    arrays = qgroup.read_all()

    durations: dict[str, float] = {}
    for r in records:
        durations[r.video_id] = max(durations.get(r.video_id, 0.0), r.duration)
    complete = set(group.list_videos())
    videos: dict[str, VideoInput] = {}
    missing = 0
    for vid in tqdm(sorted(durations), desc="reading features", disable=not show_progress, leave=False):
        if vid not in complete:
            missing += 1
            continue
        f = group.read_video(vid, dtype="float32")
        videos[vid] = VideoInput(vid, f.frames, f.patches, f.clip_times, durations[vid])
    if missing:
        log.warning("%d of %d videos have no committed features in %s/%s; their queries are skipped "
                    "(run `mktn extract` for them)", missing, len(durations), ds, ex)
    qs: dict[str, QueryInput] = {}
    for r in records:
        try:
            q = arrays.query(r.query_id)
        except KeyError:
            continue
        qs[r.query_id] = QueryInput(r.query_id, np.asarray(q.words), np.asarray(q.sentence))
    if len(qs) < len(records):
        log.warning("%d of %d queries are not in query group %s/%s; they are skipped (run `mktn embed`)",
                    len(records) - len(qs), len(records), ds, enc)
    meta = {
        "features": {"root": str(features), "dataset": ds, "extractor_id": ex, "attrs": _jsonable(group.attrs)},
        "queries": {"root": str(queries), "dataset": ds, "encoder_id": enc, "attrs": _jsonable(arrays.attrs)},
    }
    # norm=None: the store's "normalization" attribute covers every committed video (val and test
    # included); `prepare` fits the train split's statistics instead (model.data.fit_norm_stats)
    return GroundingData(videos, qs, list(records), None, meta, vocab=word_table(arrays.tokens, arrays.words))


def word_table(tokens: Sequence[str], words: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Unique tokens and their vectors (first occurrence) from the query store's flat arrays."""
    first: dict[str, int] = {}
    for i, t in enumerate(tokens):
        first.setdefault(t, i)
    names = list(first)
    return names, np.asarray(words, dtype=np.float32)[[first[t] for t in names]]


def _jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    """Provenance attrs without the bulky normalisation vectors (the checkpoint stores those itself)."""
    return {k: v for k, v in attrs.items() if k != "normalization"}


# the name load_records_from_specs had (deprecated, kept): flows.tasks.load_records is a task
load_records = load_records_from_specs
