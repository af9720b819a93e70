"""Zarr v3 query store: tokens, word vectors and sentence vectors of every query.

Layout, one group per dataset and text-encoder configuration::

    <root>/queries/<dataset>/<encoder_id>/
        query_ids       [Q]          str     (dimension "query")
        token_offsets   [Q + 1]      int64   query i owns flat rows offsets[i]:offsets[i+1]
        tokens          [N]          str     (dimension "token"), after truncation
        words           [N, W]       float32 (dimensions "token", "word_dim"), one row per token
        sentences       [Q, S]       float32 (dimensions "query", "sentence_dim")
        full_lengths    [Q]          int32   token count before truncation

Group attributes hold the provenance the writer passes (GloVe digest or the
default used, skip-thought weights digest or training run, OOV counts, ...),
plus ``code_version`` and ``dimension_names``. The group counts as complete
only once the commit marker attribute ``commit`` exists (``storage.keys.COMMIT_ATTR``, the
feature store's name too; groups written before are committed under ``mktn_commit``, still
read); it is written
last, after every array, so a crash mid-write leaves a group that
``is_complete()`` reports as incomplete and that the next write replaces.

Every path component is built by :func:`storage.keys.join_key`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store

from storage.keys import COMMIT_ATTR, LEGACY_COMMIT_ATTRS, is_committed, join_key, safe_component
from storage.provenance import code_version
from storage.remote import is_remote_root, open_fsspec_store

logger = logging.getLogger(__name__)

STORE_FORMAT = "mktn-queries/1"
_WORD_CHUNK_ROWS = 8192  # 8192 x 300 x 4 B ~ 9.8 MB per chunk before compression
_QUERY_CHUNK = 4096

DIMENSION_NAMES: dict[str, list[str]] = {
    "query_ids": ["query"],
    "token_offsets": ["query_edge"],
    "tokens": ["token"],
    "words": ["token", "word_dim"],
    "sentences": ["query", "sentence_dim"],
    "full_lengths": ["query"],
}

StoreRoot = str | os.PathLike[str] | Store


@dataclass(frozen=True)
class QueryFeatures:
    """The features of one query: ``tokens`` (N), ``words`` [N, W], ``sentence`` [S]."""

    query_id: str
    tokens: list[str]
    words: np.ndarray
    sentence: np.ndarray
    full_length: int


@dataclass(frozen=True)
class QueryArrays:
    """Every query of a group as numpy arrays (ragged words as flat rows + offsets).

    ``words[offsets[i]:offsets[i+1]]`` are the word vectors of ``query_ids[i]``.
    """

    query_ids: list[str]
    offsets: np.ndarray  # [Q + 1] int64
    tokens: list[str]  # [N]
    words: np.ndarray  # [N, W] float32
    sentences: np.ndarray  # [Q, S] float32
    full_lengths: np.ndarray  # [Q] int32
    attrs: dict[str, Any] = field(default_factory=dict)
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({q: i for i, q in enumerate(self.query_ids)})

    def __len__(self) -> int:
        return len(self.query_ids)

    def index(self, query_id: str) -> int:
        try:
            return self._index[query_id]
        except KeyError:
            raise KeyError(f"query id {query_id!r} is not in this query store group") from None

    def query(self, query_id: str) -> QueryFeatures:
        i = self.index(query_id)
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return QueryFeatures(
            query_id=query_id,
            tokens=self.tokens[a:b],
            words=self.words[a:b],
            sentence=self.sentences[i],
            full_length=int(self.full_lengths[i]),
        )

    def __iter__(self) -> Iterator[QueryFeatures]:
        for q in self.query_ids:
            yield self.query(q)


def _open_root(
    root: StoreRoot, mode: str, storage_options: Mapping[str, Any] | None = None
) -> zarr.Group:
    if isinstance(root, Store):
        return zarr.open_group(store=root, mode=mode)  # type: ignore[arg-type]
    text = os.fspath(root)
    if text.startswith("file://"):
        return zarr.open_group(store=zarr.storage.LocalStore(text[len("file://") :]), mode=mode)  # type: ignore[arg-type]
    if is_remote_root(text):  # s3://, gs://, memory://...: through fsspec, with the options
        store = open_fsspec_store(text, storage_options)
        return zarr.open_group(store=store, mode=mode, zarr_format=3)  # type: ignore[arg-type]
    return zarr.open_group(store=str(Path(text)), mode=mode)  # type: ignore[arg-type]


class QueryStore:
    """A Zarr v3 store of query features; ``root`` is a path, an fsspec URL or a zarr Store.

    ``storage_options``: the fsspec options of a URL root (None: ``MKTN_STORAGE_OPTIONS``;
    :mod:`storage.remote`).
    """

    def __init__(
        self, root: StoreRoot, *, storage_options: Mapping[str, Any] | None = None
    ) -> None:
        self.root = root
        self._group = _open_root(root, "a", storage_options)

    def group(self, dataset: str, encoder_id: str) -> QueryGroup:
        """The group ``queries/<dataset>/<encoder_id>`` (created on first write)."""
        safe_component(dataset, what="dataset name")
        safe_component(encoder_id, what="encoder id")
        return QueryGroup(
            self._group, join_key("queries", dataset, encoder_id), dataset, encoder_id
        )

    # the name ``group`` had before (it returns a QueryGroup, not an encoder): deprecated, kept
    encoder = group

    def list_encoders(self, dataset: str, *, complete_only: bool = True) -> list[str]:
        """Encoder ids stored for ``dataset`` (only committed ones unless ``complete_only=False``)."""
        key = join_key("queries", safe_component(dataset, what="dataset name"))
        try:
            ds = self._group[key]
        except KeyError:
            return []
        assert isinstance(ds, zarr.Group)
        names = sorted(name for name, _ in ds.groups())
        if complete_only:
            names = [n for n in names if self.group(dataset, n).is_complete()]
        return names

    def set_latest(self, dataset: str, encoder_id: str) -> None:
        """Record ``encoder_id`` as the dataset's most recent complete encoding."""
        if not self.group(dataset, encoder_id).is_complete():
            raise RuntimeError(
                f"encoder {encoder_id!r} of {dataset!r} is not complete; write it first"
            )
        key = join_key("queries", safe_component(dataset, what="dataset name"))
        ds = self._group.require_group(key)
        ds.attrs.update({"latest": encoder_id})

    def latest_encoder(self, dataset: str) -> str:
        """The encoder id ``mktn embed`` wrote last for ``dataset`` (``FileNotFoundError`` if none)."""
        key = join_key("queries", safe_component(dataset, what="dataset name"))
        try:
            ds = self._group[key]
        except KeyError:
            ds = None
        latest = ds.attrs.get("latest") if isinstance(ds, zarr.Group) else None
        if not isinstance(latest, str) or not self.group(dataset, latest).is_complete():
            raise FileNotFoundError(
                f"query store {self.root!s} has no complete encoding of dataset {dataset!r}; "
                "run `mktn embed --dataset ...` first"
            )
        return latest


class QueryGroup:
    """One dataset x encoder group of a :class:`QueryStore`."""

    def __init__(self, root: zarr.Group, key: str, dataset: str, encoder_id: str) -> None:
        self._root = root
        self.key = key
        self.dataset = dataset
        self.encoder_id = encoder_id
        self._cache: QueryArrays | None = None

    # -- state ---------------------------------------------------------------------------------
    def _group(self) -> zarr.Group | None:
        try:
            g = self._root[self.key]
        except KeyError:
            return None
        return g if isinstance(g, zarr.Group) else None

    def exists(self) -> bool:
        return self._group() is not None

    def is_complete(self) -> bool:
        """True only when the commit marker (written last) is present."""
        g = self._group()
        return g is not None and is_committed(g.attrs)

    @property
    def attrs(self) -> dict[str, Any]:
        g = self._require_complete()
        return dict(g.attrs)

    def _require_complete(self) -> zarr.Group:
        g = self._group()
        if g is None:
            raise FileNotFoundError(
                f"query store has no group {self.key!r}; run `mktn embed` for dataset "
                f"{self.dataset!r} with this encoder configuration first"
            )
        if not is_committed(g.attrs):
            raise RuntimeError(
                f"query store group {self.key!r} is incomplete (no commit marker: an earlier "
                "write was interrupted); rerun `mktn embed` to rewrite it"
            )
        return g

    # -- writing -------------------------------------------------------------------------------
    def write(
        self,
        query_ids: Sequence[str],
        tokens: Sequence[Sequence[str]],
        words: Sequence[np.ndarray],
        sentences: np.ndarray,
        attrs: dict[str, Any] | None = None,
        *,
        full_lengths: Sequence[int] | None = None,
        overwrite: bool = False,
    ) -> None:
        """Write every query at once; see :meth:`writer` for block-wise writing of large sets.

        ``words[i]`` is ``[len(tokens[i]), W]``; ``sentences`` is ``[Q, S]``.
        """
        if not (len(query_ids) == len(tokens) == len(words) == len(sentences)):
            raise ValueError(
                f"query_ids ({len(query_ids)}), tokens ({len(tokens)}), words ({len(words)}) and "
                f"sentences ({len(sentences)}) must have one entry per query"
            )
        word_dim = int(words[0].shape[1]) if len(words) else 0
        lengths = [len(t) for t in tokens]
        with self.writer(
            query_ids,
            lengths,
            word_dim=word_dim,
            sentence_dim=int(np.asarray(sentences).shape[1]) if len(sentences) else 0,
            overwrite=overwrite,
        ) as w:
            w.write_block(0, tokens, words, sentences, full_lengths=full_lengths)
            w.commit(attrs or {})

    def writer(
        self,
        query_ids: Sequence[str],
        lengths: Sequence[int],
        *,
        word_dim: int,
        sentence_dim: int,
        overwrite: bool = False,
    ) -> QueryWriter:
        """Create the arrays for ``query_ids`` with ``lengths[i]`` tokens each and return a writer.

        A committed group is replaced only with ``overwrite=True``; an uncommitted leftover of
        an interrupted write is always replaced.
        """
        ids = [str(q) for q in query_ids]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dups = [q for q in ids if q in seen or seen.add(q)]  # type: ignore[func-returns-value]
            raise ValueError(f"query ids must be unique; duplicated: {dups[:5]}")
        if len(lengths) != len(ids):
            raise ValueError(f"{len(lengths)} lengths for {len(ids)} query ids")
        existing = self._group()
        if existing is not None:
            if is_committed(existing.attrs) and not overwrite:
                raise FileExistsError(
                    f"query store group {self.key!r} already exists and is complete; pass "
                    "overwrite=True (`mktn embed --overwrite`) to replace it"
                )
            if not is_committed(existing.attrs):
                logger.warning("replacing incomplete query group %s (interrupted write)", self.key)
        self._cache = None
        g = zarr.open_group(store=self._root.store_path / self.key, mode="w")  # type: ignore[arg-type]
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(np.asarray(lengths, dtype=np.int64), out=offsets[1:])
        total = int(offsets[-1])
        q = max(len(ids), 1)

        def arr(name: str, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...]) -> Any:
            return g.create_array(
                name,
                shape=shape,
                dtype=dtype,
                chunks=chunks,
                dimension_names=DIMENSION_NAMES[name],
            )

        a_ids = arr("query_ids", (len(ids),), str, (min(q, _QUERY_CHUNK),))
        if ids:
            a_ids[:] = np.array(ids, dtype=object)
        a_off = arr("token_offsets", (len(ids) + 1,), np.int64, (len(ids) + 1,))
        a_off[:] = offsets
        return QueryWriter(
            group=g,
            key=self.key,
            query_ids=ids,
            offsets=offsets,
            tokens=arr("tokens", (total,), str, (max(min(total, 65536), 1),)),
            words=arr(
                "words",
                (total, word_dim),
                np.float32,
                (max(min(total, _WORD_CHUNK_ROWS), 1), max(word_dim, 1)),
            ),
            sentences=arr(
                "sentences",
                (len(ids), sentence_dim),
                np.float32,
                (min(q, _QUERY_CHUNK), max(sentence_dim, 1)),
            ),
            full_lengths=arr("full_lengths", (len(ids),), np.int32, (q,)),
            dataset=self.dataset,
            encoder_id=self.encoder_id,
        )

    # -- reading -------------------------------------------------------------------------------
    def read_all(self) -> QueryArrays:
        """Every query's features as numpy arrays (raises if the group is incomplete)."""
        if self._cache is not None:
            return self._cache
        g = self._require_complete()

        def get(name: str) -> np.ndarray:
            a = g[name]
            assert isinstance(a, zarr.Array)
            return np.asarray(a[...])

        ids = [str(x) for x in get("query_ids").tolist()]
        self._cache = QueryArrays(
            query_ids=ids,
            offsets=get("token_offsets").astype(np.int64),
            tokens=[str(x) for x in get("tokens").tolist()],
            words=get("words").astype(np.float32, copy=False),
            sentences=get("sentences").astype(np.float32, copy=False),
            full_lengths=get("full_lengths").astype(np.int32),
            attrs=dict(g.attrs),
        )
        return self._cache

    def read_query(self, query_id: str) -> QueryFeatures:
        """One query's tokens, word vectors [N, W] and sentence vector [S]."""
        return self.read_all().query(query_id)

    def query_ids(self) -> list[str]:
        return list(self.read_all().query_ids)


class QueryWriter:
    """Fills the arrays of one group block by block; :meth:`commit` writes the marker last."""

    def __init__(
        self,
        *,
        group: zarr.Group,
        key: str,
        query_ids: list[str],
        offsets: np.ndarray,
        tokens: Any,
        words: Any,
        sentences: Any,
        full_lengths: Any,
        dataset: str,
        encoder_id: str,
    ) -> None:
        self.group = group
        self.key = key
        self.query_ids = query_ids
        self.offsets = offsets
        self._tokens = tokens
        self._words = words
        self._sentences = sentences
        self._full_lengths = full_lengths
        self._written = np.zeros(len(query_ids), dtype=bool)
        self._committed = False
        self.dataset = dataset
        self.encoder_id = encoder_id

    def __enter__(self) -> QueryWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None and not self._committed:
            logger.warning("query group %s left uncommitted: commit() was not called", self.key)

    def write_block(
        self,
        start: int,
        tokens: Sequence[Sequence[str]],
        words: Sequence[np.ndarray],
        sentences: np.ndarray,
        *,
        full_lengths: Sequence[int] | None = None,
    ) -> None:
        """Write queries ``start : start + len(tokens)`` (in ``query_ids`` order)."""
        n = len(tokens)
        if n == 0:
            return
        stop = start + n
        if start < 0 or stop > len(self.query_ids):
            raise IndexError(f"block {start}:{stop} outside the {len(self.query_ids)} queries")
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        for j in range(n):
            expect = int(self.offsets[start + j + 1] - self.offsets[start + j])
            qid = self.query_ids[start + j]
            if len(tokens[j]) != expect or np.asarray(words[j]).shape[0] != expect:
                raise ValueError(
                    f"query {qid!r}: {len(tokens[j])} tokens and {np.asarray(words[j]).shape[0]} "
                    f"word vectors, but the writer was created with length {expect}"
                )
        flat_tokens = [t for toks in tokens for t in toks]
        if b > a:
            self._tokens[a:b] = np.array(flat_tokens, dtype=object)
            self._words[a:b] = np.concatenate(
                [np.asarray(w, dtype=np.float32) for w in words], axis=0
            )
        self._sentences[start:stop] = np.asarray(sentences, dtype=np.float32)
        fl = [len(t) for t in tokens] if full_lengths is None else list(full_lengths)
        self._full_lengths[start:stop] = np.asarray(fl, dtype=np.int32)
        self._written[start:stop] = True

    def commit(self, attrs: dict[str, Any]) -> None:
        """Write provenance attributes and then the commit marker; refuses if a block is missing."""
        missing = np.flatnonzero(~self._written)
        if missing.size:
            raise RuntimeError(
                f"cannot commit {self.key!r}: {missing.size} queries were never written "
                f"(first: {self.query_ids[int(missing[0])]!r})"
            )
        meta = dict(attrs)
        if COMMIT_ATTR in meta or any(k in meta for k in LEGACY_COMMIT_ATTRS):
            raise ValueError(f"the {COMMIT_ATTR!r} attribute is written only by commit()")
        meta.setdefault("code_version", code_version())
        meta["store_format"] = STORE_FORMAT
        meta["dataset"] = self.dataset
        meta["encoder_id"] = self.encoder_id
        meta["dimension_names"] = DIMENSION_NAMES
        meta["num_queries"] = len(self.query_ids)
        meta["num_tokens"] = int(self.offsets[-1])
        self.group.attrs.update(meta)
        # The marker goes in a separate, final update so it is never written before the rest.
        self.group.attrs.update(
            {
                COMMIT_ATTR: {
                    "written_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                    "num_queries": len(self.query_ids),
                }
            }
        )
        self._committed = True
