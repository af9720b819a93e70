"""Queries -> the Zarr query store: tokens, GloVe word vectors and skip-thought sentence vectors.

:func:`embed_queries` is the library function behind ``mktn embed`` and the
embed-queries Prefect task. Steps: tokenize every query (a bad sentence is skipped
and reported, never fatal); word vectors for the vocabulary (a GloVe file's cached
subset, or the documented word2vec default trained on the training split); a
skip-thought encoder (the original release, a checkpoint, or one trained on the
training split's ordered sentences); then the store group
``queries/<dataset>/<encoder_id>`` written block by block and committed last.

The ``encoder_id`` names the word vectors, the sentence encoder and a digest of the
text settings and of the queries themselves, so a rerun with the same inputs finds
the complete group and returns at once (``EmbedSummary.cached``), and a change to
any input writes a new group beside the old one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipeline.datasets.records import QueryMoment
from pipeline.overrides import strict_replace
from pipeline.provenance import code_version, source_digest
from pipeline.skipthought import (
    PRESETS,
    SkipThoughtConfig,
    SkipThoughtEncoder,
    load_skipthought_checkpoint,
    load_theano_skipthoughts,
    release_weights_digest,
    skipthought_run_id,
    train_skipthought,
)
from pipeline.text import TextConfig, TokenizedCorpus, build_tokenizer, tokenize_queries
from pipeline.word_vectors import (
    WordVectors,
    WordVectorsConfig,
    build_word_vectors,
    cached_digest,
    default_cache_dir,
    lookup_digest,
)
from storage.fingerprint import digest_strings
from storage.queries import QueryStore

logger = logging.getLogger(__name__)

DOCUMENT_ORDERS = ("start", "file")
_BLOCK = 2048  # queries per write block: bounds the word-vector memory of a write


@dataclass(frozen=True)
class EmbedConfig:
    """Everything that decides a query store group's content."""

    dataset: str
    text: TextConfig = field(default_factory=TextConfig)
    vectors: WordVectorsConfig = field(default_factory=WordVectorsConfig)
    # "train" (the default: trained on the dataset), a release directory, or a .pt checkpoint
    skipthought: str = "train"
    skipthought_mode: str = "combine"  # which parts of a release to load
    skipthought_config: SkipThoughtConfig = field(default_factory=lambda: PRESETS["demo"])
    expand_vocab: bool = True  # map GloVe-only words into the encoder's tables (paper, Sec. 2.2)
    train_split: str = "train"  # default word vectors and skip-thought learn from this split only
    # order of a video's sentences for skip-thought: "start" time, or "file" (ActivityNet paragraphs)
    document_order: str = "start"
    checkpoint_dir: str | None = None  # None -> <vectors cache dir>/../skipthought
    overwrite: bool = False
    batch_size: int = 256
    device: str | None = None  # None -> cuda when available
    progress: bool = True

    def __post_init__(self) -> None:
        if self.document_order not in DOCUMENT_ORDERS:
            raise ValueError(
                f"document_order {self.document_order!r} unknown; use one of {DOCUMENT_ORDERS}"
            )


def build_embed_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    dataset: str,
    defaults: Mapping[str, Any] | None = None,
) -> EmbedConfig:
    """``EmbedConfig`` for ``dataset`` from JSON-able ``overrides`` over a caller's ``defaults``
    (the flows': ``{"progress": False}``).

    Top-level fields by name (``skipthought``, ``train_split``...); the nested ``text``,
    ``vectors`` (e.g. ``{"path": "glove.840B.300d.txt"}``) and ``skipthought_config`` sections
    as dicts of their fields. Unknown keys are an error (``dataset`` is this argument's).
    """
    config = strict_replace(EmbedConfig(dataset=dataset), defaults, "encoder default(s)",
                            exclude={"dataset"}, nested=True)
    return strict_replace(config, overrides, "encoder setting(s)", exclude={"dataset"}, nested=True)


@dataclass
class EmbedSummary:
    dataset: str
    encoder_id: str
    store_key: str
    num_queries: int
    skipped: int
    vocab_size: int
    oov_words: int
    oov_tokens: int
    truncated: int
    max_len: int
    word_dim: int
    sentence_dim: int
    word_vectors: str
    sentence_encoder: str
    cached: bool = False
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        lines = [
            f"dataset {self.dataset}: {self.num_queries} queries -> {self.store_key}"
            + (" (already complete: reused)" if self.cached else ""),
            f"  vocabulary {self.vocab_size} words; OOV {self.oov_words} words "
            f"({self.oov_tokens} tokens); truncated to {self.max_len} tokens: {self.truncated}",
            f"  word vectors {self.word_vectors} ({self.word_dim}-d); "
            f"sentence encoder {self.sentence_encoder} ({self.sentence_dim}-d)",
        ]
        if self.skipped:
            lines.append(f"  skipped {self.skipped} queries: {self.errors[0]}")
        lines.append(f"  {self.seconds:.1f} s")
        return "\n".join(lines)


def _cache_dir(cfg: EmbedConfig) -> Path:
    return Path(cfg.vectors.cache_dir) if cfg.vectors.cache_dir else default_cache_dir()


def ordered_documents(
    records: Sequence[QueryMoment], corpus: TokenizedCorpus, order: str
) -> list[list[list[str]]]:
    """Per video, its tokenized queries in order ("start": by start then end; "file": as given)."""
    tokens = {q.query_id: q.tokens for q in corpus.queries}
    by_video: dict[str, list[tuple[int, QueryMoment]]] = defaultdict(list)
    for i, r in enumerate(records):
        if r.query_id in tokens:
            by_video[r.video_id].append((i, r))
    docs = []
    for vid in sorted(by_video):
        items = by_video[vid]
        if order == "start":
            items = sorted(items, key=lambda ir: (ir[1].start, ir[1].end, ir[0]))
        docs.append([tokens[r.query_id] for _, r in items])
    return docs


def _words_id(cfg: EmbedConfig, train_sentences: Sequence[Sequence[str]]) -> str:
    v = cfg.vectors
    if v.path is not None:
        return f"glove-{cached_digest(Path(v.path), _cache_dir(cfg))[:12]}"
    corpus = digest_strings(*(" ".join(s) for s in train_sentences if s))
    if v.identity_dim:
        return f"w2v{v.default_dim - v.identity_dim}+id{v.identity_dim}-{corpus[:8]}-s{v.seed}"
    return f"w2v{v.default_dim}-{corpus[:8]}-s{v.seed}"


def _skipthought_id(
    cfg: EmbedConfig, train_docs: Sequence[Sequence[Sequence[str]]], words_id: str
) -> str:
    st = cfg.skipthought
    if st == "train":
        sc = cfg.skipthought_config
        init = words_id if sc.init_from_word_vectors else ""
        return f"st-{sc.mode}{sc.sentence_dim}-{skipthought_run_id(sc, train_docs, init)[:8]}-e{sc.epochs}"
    p = Path(st)
    if p.is_dir():
        digest = release_weights_digest(
            p, cfg.skipthought_mode, lambda f: cached_digest(f, _cache_dir(cfg))
        )
        return f"st-{cfg.skipthought_mode}-{digest[:8]}"
    if p.is_file():
        return f"st-ckpt-{cached_digest(p, _cache_dir(cfg))[:8]}"
    raise FileNotFoundError(
        f"--skipthought {st!r}: no such file or directory; pass 'train', a directory with the "
        "original release (uni_skip.npz, bi_skip.npz, their .pkl, dictionary.txt, utable.npy, "
        "btable.npy; https://github.com/ryankiros/skip-thoughts) or a checkpoint from a previous run"
    )


def _settings_digest(cfg: EmbedConfig, records_digest: str) -> str:
    settings = {
        "text": dataclasses.asdict(cfg.text),
        "oov": cfg.vectors.oov,
        "lowercase_fallback": cfg.vectors.lowercase_fallback,
        "expand_vocab": cfg.expand_vocab,
        "train_split": cfg.train_split,
        "document_order": cfg.document_order,
        "skipthought_mode": cfg.skipthought_mode,
    }
    return digest_strings(json.dumps(settings, sort_keys=True), records_digest)[:8]


def build_sentence_encoder(
    cfg: EmbedConfig,
    train_docs: Sequence[Sequence[Sequence[str]]],
    vocab_words: Sequence[str],
    vectors: WordVectors,
    words_id: str,
    on_epoch: Callable[[int, int, float], None] | None = None,
) -> tuple[SkipThoughtEncoder, dict[str, Any]]:
    """The skip-thought encoder the config names: trained, a release, or a checkpoint.

    ``on_epoch(epoch, epochs, loss)``: called after each skip-thought training epoch (training only).
    """
    st = cfg.skipthought
    if st == "train":
        ckpt_dir = (
            Path(cfg.checkpoint_dir)
            if cfg.checkpoint_dir
            else _cache_dir(cfg).parent / "skipthought"
        )
        logger.warning(
            "no skip-thought parameters given: training a %s encoder (%d-d) on the dataset's "
            "own ordered sentences; not comparable to published results",
            cfg.skipthought_config.mode,
            cfg.skipthought_config.sentence_dim,
        )
        enc, info = train_skipthought(
            train_docs,
            cfg.skipthought_config,
            checkpoint_dir=ckpt_dir,
            init_vectors=vectors.kv,
            init_vectors_id=words_id,
            device=cfg.device,
            progress=cfg.progress,
            on_epoch=on_epoch,
        )
    elif Path(st).is_dir():
        enc, info = load_theano_skipthoughts(
            st,
            mode=cfg.skipthought_mode,
            vocab=vocab_words,
            digest_fn=lambda f: cached_digest(f, _cache_dir(cfg)),
        )
    else:
        enc, info = load_skipthought_checkpoint(st)
    if cfg.expand_vocab:
        info["vocab_expansion"] = enc.expand_vocabulary(vectors.kv, vocab_words)
    return enc, info


def embed_queries(
    records: Sequence[QueryMoment],
    store: QueryStore,
    config: EmbedConfig,
    *,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> EmbedSummary:
    """Embed ``records``' sentences into ``store`` under ``queries/<dataset>/<encoder_id>``.

    ``on_progress(stage, done, total)``: a progress hook for any UI, called after each unit of
    work: ``("skip-thought", epoch, epochs)`` while the sentence encoder trains (only when it
    trains), then ``("encode", block, blocks)`` per block of queries written. Not called for a
    complete group that is reused.
    """
    t0 = time.perf_counter()
    if not records:
        raise ValueError(f"dataset {config.dataset!r}: no query records to embed")
    tokenizer = build_tokenizer(config.text)
    corpus = tokenize_queries(
        [(r.query_id, r.sentence) for r in records],
        tokenizer,
        max_len=config.text.max_len,
        skip_invalid=True,
    )
    if not corpus.queries:
        raise ValueError(
            f"dataset {config.dataset!r}: none of the {len(records)} queries could be tokenized "
            f"(first error: {corpus.errors[0]})"
        )
    kept = {q.query_id for q in corpus.queries}
    train_records = [r for r in records if r.split == config.train_split and r.query_id in kept]
    if not train_records:
        logger.warning(
            "no %r split among the records: word vectors / skip-thought learn from all splits",
            config.train_split,
        )
        train_records = [r for r in records if r.query_id in kept]
    train_docs = ordered_documents(train_records, corpus, config.document_order)
    train_sentences = [s for doc in train_docs for s in doc]

    records_digest = digest_strings(*(f"{r.query_id}\t{r.sentence}\t{r.split}" for r in records))
    vectors: WordVectors | None = None
    if (
        config.vectors.path is not None
        and lookup_digest(Path(config.vectors.path), _cache_dir(config)) is None
    ):
        # a vector file seen for the first time: one pass both hashes it and keeps our rows
        vectors = build_word_vectors(
            config.vectors, corpus.vocab.words, train_sentences, progress=config.progress
        )
    words_id = _words_id(config, train_sentences)
    st_id = _skipthought_id(config, train_docs, words_id)
    encoder_id = f"{words_id}+{st_id}+{_settings_digest(config, records_digest)}"
    group = store.group(config.dataset, encoder_id)

    if group.is_complete() and not config.overwrite:
        attrs = group.attrs
        logger.info("query store group %s is complete: reusing it", group.key)
        store.set_latest(config.dataset, encoder_id)
        summary = EmbedSummary(**attrs["summary"])
        summary.cached = True
        summary.seconds = time.perf_counter() - t0
        return summary

    if vectors is None:
        vectors = build_word_vectors(
            config.vectors, corpus.vocab.words, train_sentences, progress=config.progress
        )
    encoder, st_info = build_sentence_encoder(
        config, train_docs, corpus.vocab.words, vectors, words_id,
        on_epoch=None if on_progress is None else _skipthought_progress(on_progress),
    )
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = encoder.to(device)
    oov_words, oov_tokens = vectors.count_oov(corpus.vocab.counts)
    st_unknown = sum(c for w, c in corpus.vocab.counts.items() if w not in encoder.index)

    queries = corpus.queries
    with group.writer(
        [q.query_id for q in queries],
        [len(q.tokens) for q in queries],
        word_dim=vectors.dim,
        sentence_dim=encoder.sentence_dim,
        overwrite=True,
    ) as writer:
        for start in tqdm(
            range(0, len(queries), _BLOCK),
            desc=f"embedding {config.dataset}",
            unit="block",
            disable=not config.progress,
        ):
            block = queries[start : start + _BLOCK]
            toks = [q.tokens for q in block]
            writer.write_block(
                start,
                toks,
                [vectors.lookup(t) for t in toks],
                encoder.encode(toks, batch_size=config.batch_size),
                full_lengths=[q.full_length for q in block],
            )
            if on_progress is not None:
                blocks = -(-len(queries) // _BLOCK)
                on_progress("encode", start // _BLOCK + 1, blocks)
        summary = EmbedSummary(
            dataset=config.dataset,
            encoder_id=encoder_id,
            store_key=group.key,
            num_queries=len(queries),
            skipped=len(corpus.errors),
            vocab_size=len(corpus.vocab),
            oov_words=oov_words,
            oov_tokens=oov_tokens,
            truncated=corpus.num_truncated,
            max_len=config.text.max_len,
            word_dim=vectors.dim,
            sentence_dim=encoder.sentence_dim,
            word_vectors=str(vectors.source.get("kind")),
            sentence_encoder=str(st_info.get("kind")),
            errors=corpus.errors[:20],
        )
        comparable = (
            vectors.source.get("kind") == "file" and st_info.get("kind") == "theano-release"
        )
        writer.commit(
            {
                "word_vectors": _jsonable(vectors.source),
                "sentence_encoder": _jsonable({**st_info, "unknown_tokens": int(st_unknown)}),
                "text": dataclasses.asdict(config.text),
                "tokenizer": "nltk.tokenize.NLTKWordTokenizer",
                "oov": {"words": oov_words, "tokens": oov_tokens, "treatment": config.vectors.oov},
                "truncated": {"count": corpus.num_truncated, "first": corpus.truncated_ids[:20]},
                "skipped": {"count": len(corpus.errors), "errors": corpus.errors[:20]},
                "train_split": config.train_split,
                "document_order": config.document_order,
                "records_digest": records_digest,
                "comparable_to_published": comparable,
                "code_version": code_version(),
                "source_digest": source_digest(),
                "summary": summary.to_dict(),
            }
        )
    store.set_latest(config.dataset, encoder_id)
    summary.seconds = time.perf_counter() - t0
    logger.info("embedded %d queries into %s in %.1f s", len(queries), group.key, summary.seconds)
    return summary


def _skipthought_progress(
    on_progress: Callable[[str, int, int], None],
) -> Callable[[int, int, float], None]:
    """``train_skipthought``'s ``on_epoch`` as ``embed_queries``' ``("skip-thought", epoch, epochs)``."""

    def on_epoch(epoch: int, epochs: int, loss: float) -> None:
        on_progress("skip-thought", epoch, epochs)

    return on_epoch


def _jsonable(obj: Any) -> Any:
    """Provenance dicts -> JSON types (numpy scalars and paths become plain values)."""
    return json.loads(
        json.dumps(obj, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))
    )


# ------------------------------------------------------------------ the inverse: new sentences


def sentence_encoder_from_attrs(
    info: dict[str, Any],
    vectors: WordVectors,
    vocab: Sequence[str],
    *,
    path: str | None = None,
) -> SkipThoughtEncoder:
    """The inverse of :func:`build_sentence_encoder`'s provenance record (a query group's
    ``"sentence_encoder"`` attribute): the same encoder, with the same vocabulary expansion.

    ``path`` overrides the recorded checkpoint file or release directory (moved weights).
    The expansion maps the words that had real vectors (``vectors.kv``, as
    :meth:`WordVectors.from_table` rebuilds it), as ``embed_queries`` did; the OOV words
    stayed unknown to the encoder then and stay so now.
    """
    path = path or info.get("checkpoint") or info.get("directory")
    if not path:
        raise ValueError(
            f"the query store recorded no skip-thought weights ({info.get('kind')!r}); "
            "pass --skipthought PATH"
        )
    if not Path(path).exists():
        raise FileNotFoundError(
            f"skip-thought weights {path!r} (recorded by `mktn embed`) are gone; "
            "pass --skipthought PATH to where they are now"
        )
    if Path(path).is_dir():
        enc, _ = load_theano_skipthoughts(
            path, mode=str(info.get("mode", "combine")), vocab=list(vocab)
        )
    else:
        enc, _ = load_skipthought_checkpoint(path)
    if "vocab_expansion" in info:
        enc.expand_vocabulary(vectors.kv, list(vectors.kv.key_to_index))
    return enc


class QueryEmbedder:
    """New sentences -> (tokens, word vectors, skip-thought vector), exactly as the query store
    group with attributes ``attrs`` embedded its queries: the inverse of
    :func:`embed_queries`' attributes (``text``, ``word_vectors``, ``sentence_encoder``).

    ``words``/``vectors``: the group's vocabulary table (``model.loader.word_table`` of the
    group, or a checkpoint's copy); ``skipthought`` overrides the recorded weights path.
    """

    def __init__(
        self,
        attrs: dict[str, Any],
        words: Sequence[str],
        vectors: np.ndarray,
        *,
        skipthought: str | None = None,
    ) -> None:
        self.attrs = attrs
        self.text_cfg = TextConfig(**attrs.get("text", {}))
        self.tokenizer = build_tokenizer(self.text_cfg)
        self.words = list(words)
        self._source = dict(attrs.get("word_vectors", {}))
        self._table_vectors = np.asarray(vectors, np.float32)
        self.vectors = WordVectors.from_table(self._source, self.words, self._table_vectors)
        self.table = {
            w: np.asarray(v, np.float32)
            for w, v in zip(self.words, np.asarray(vectors, np.float32), strict=True)
        }
        self.skipthought_path = skipthought
        self._encoder: SkipThoughtEncoder | None = None

    @property
    def dim(self) -> int:
        return self.vectors.dim

    def tokens(self, sentence: str, index: int = 0) -> list[str]:
        toks = self.tokenizer.tokenize(sentence, query_id=f"query {index}")
        return toks[: self.text_cfg.max_len]

    def word_vectors(self, tokens: Sequence[str]) -> np.ndarray:
        """``[len(tokens), D]``: the table's vector (OOV words included, as stored), else the
        recorded vector file's when it is still on disk, else the seeded OOV vector."""
        self.vectors.extend_from_source(t for t in tokens if t not in self.table)
        out = np.empty((len(tokens), self.dim), np.float32)
        for i, t in enumerate(tokens):
            out[i] = self.table[t] if t in self.table else self.vectors.vector(t)
        return out

    def encoder(self) -> SkipThoughtEncoder:
        if self._encoder is None:
            info = dict(self.attrs.get("sentence_encoder", {}))
            # the table's own vectors (self.vectors may have grown from the vector file since)
            table = WordVectors.from_table(self._source, self.words, self._table_vectors)
            self._encoder = sentence_encoder_from_attrs(
                info, table, self.words, path=self.skipthought_path
            ).eval()
        return self._encoder

    def embed(self, sentences: Sequence[str]) -> list[tuple[list[str], np.ndarray, np.ndarray]]:
        """``(tokens, words [N, D], sentence [S])`` per sentence."""
        toks = [self.tokens(s, i) for i, s in enumerate(sentences)]
        sent = self.encoder().encode(toks)
        return [(t, self.word_vectors(t), np.asarray(sent[i])) for i, t in enumerate(toks)]
