"""Word vectors: a GloVe / word2vec file read through our streaming parsers (the dataset's
vocabulary kept, cached), or the default, word2vec trained with gensim on the dataset's own
sentences; plus the out-of-vocabulary rule and the inverse of the recorded source
(:meth:`WordVectors.from_table`). This module was ``pipeline/glove.py``; that name still
imports it (deprecated: it read as "GloVe only", but it also trains word2vec).

Formats (``fmt``):

* ``glove``: the header-less text of glove.6B / 42B / 840B / twitter. Each line is
  a token and D floats separated by single spaces; 840B has tokens that contain
  spaces, so a line's *last* D fields are the vector and everything before them is
  the token. D is the most common field count - 1 over the first lines.
* ``word2vec``: word2vec text with a ``<count> <dim>`` header line.
* ``word2vec-binary``: word2vec binary with the same header, then per word the
  token, a space and D little-endian float32.
* ``gensim``: gensim's native ``KeyedVectors.save`` file. It is a pickle, so loading one can
  run code: it is refused unless the caller opts in (``trust_pickle=True``, the CLI's
  ``--trust-pickle``) for a file they trust; docs/queries.md shows a one-time conversion
  to word2vec text, which needs no trust.
* ``auto``: ``.kv``/``.model`` -> gensim, ``.bin`` -> word2vec-binary, a text file whose
  first line is two integers -> word2vec, otherwise glove (``.gz`` text is read through gzip).

The text and binary readers are our own streaming parsers rather than gensim's
``load_word2vec_format``, because that loader holds the whole matrix in memory
(2.2M x 300 x 4 B = 2.6 GB for 840B) and splits 840B's spaced tokens wrongly.
They keep only the rows of the dataset's vocabulary, parsing the floats of those
lines alone, so one pass over 840B stays far below 1 GB. Every line's field count
is checked; a wrong count raises ``GloveFormatError`` naming the file and line.
With ``lowercase_fallback`` a vocabulary word with no exact match takes the first
line whose token lower-cases to it (840B is cased, our tokens are lower-cased).

The subset is cached as two files with no pickles in them,
``cache_dir/glove-subset-<file sha256[:16]>-<vocabulary digest>-<lc|exact>.npy`` (the
float32 matrix, read with ``allow_pickle=False``) and ``.json`` beside it (the words in row
order and the source info), each written atomically, the JSON last, so a later run with
the same file and vocabulary skips the pass. A cache entry that is missing a part, does not
parse or does not match (rows, words, dimension) is a cache miss: the file is read again. The
file's sha256 is remembered per (path, size, mtime) in ``cache_dir/file-digests.json``
so a later run does not rehash a multi-GB file either.

Out-of-vocabulary words (no row in the file): by default each gets a deterministic
random vector N(0, sigma^2 I), seeded by the sha256 of the word (so the same word
gets the same vector in every run and split), with sigma the standard deviation of
the entries of the vectors that were found; ``oov="zeros"`` gives zero vectors.
Their number is reported and recorded in the store's metadata.

Without a GloVe file the documented default is word2vec vectors trained with
gensim ``Word2Vec`` on the dataset's own training sentences (300-d, skip-gram,
seeded, ``workers=1`` and a stable hash for determinism). They are logged and
recorded as not comparable to published results.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import math
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from gensim.models import KeyedVectors, Word2Vec
from tqdm import tqdm

from storage.atomic import atomic_open, atomic_write_json
from storage.fingerprint import FileFingerprint, digest_strings, file_digest, quick_unchanged

logger = logging.getLogger(__name__)

FORMATS = ("auto", "glove", "word2vec", "word2vec-binary", "gensim")
OOV_MODES = ("random", "zeros")
DEFAULT_SOURCE = "word2vec-on-dataset"
_DIGESTS_FILE = "file-digests.json"


class GloveFormatError(ValueError):
    """A word-vector file does not match its format (names the file and line)."""


@dataclass(frozen=True)
class WordVectorsConfig:
    """Where word vectors come from and how out-of-vocabulary words are treated."""

    path: str | None = None  # a GloVe / word2vec / gensim file; None -> the trained default
    fmt: str = "auto"
    cache_dir: str | None = None  # None -> $MKTN_CACHE_DIR/glove or ~/.cache/mktn/glove
    lowercase_fallback: bool = True
    trust_pickle: bool = False  # read a gensim .kv (a pickle: it can run code) only when set
    oov: str = "random"  # "random": seeded per-word N(0, sigma^2); "zeros"
    default_dim: int = 300  # the default's size matches GloVe's 300-d vectors
    # this share of the default's dimensions is a per-word identity code (seeded by the word,
    # near-orthogonal between words), the rest word2vec: word2vec trained on a few hundred
    # templated sentences gives words of one slot nearly one vector ("left"/"right" cosine 0.96,
    # 0.88 after standardising), so the code keeps every word distinguishable (docs/queries.md)
    identity_fraction: float = 0.5

    @property
    def identity_dim(self) -> int:
        """Dimensions of the default's identity code (at least one stays word2vec)."""
        if not 0.0 <= self.identity_fraction < 1.0:
            raise ValueError(f"identity_fraction must be in [0, 1), got {self.identity_fraction}")
        return min(int(round(self.default_dim * self.identity_fraction)), self.default_dim - 1)
    default_epochs: int | None = None  # None -> about 3M token updates, within [5, 50]
    seed: int = 0


@dataclass
class SubsetStats:
    """What one pass over a vector file found."""

    fmt: str
    dim: int
    lines: int
    found: int
    lowercase_matches: int


@dataclass
class WordVectors:
    """The dataset's word vectors plus how they were made (``source`` goes into the store)."""

    kv: KeyedVectors
    source: dict[str, Any]
    oov: str = "random"
    oov_sigma: float = 0.0
    seed: int = 0
    oov_words: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.kv.vector_size)

    def vector(self, word: str) -> np.ndarray:
        if word in self.kv.key_to_index:
            return np.asarray(self.kv[word], dtype=np.float32)
        return oov_vector(word, self.dim, mode=self.oov, sigma=self.oov_sigma, seed=self.seed)

    def lookup(self, tokens: Sequence[str]) -> np.ndarray:
        """``[len(tokens), D]`` float32 vectors, OOV words treated as documented above."""
        out = np.empty((len(tokens), self.dim), dtype=np.float32)
        for i, t in enumerate(tokens):
            out[i] = self.vector(t)
        return out

    @classmethod
    def from_table(
        cls, source: dict[str, Any], words: Sequence[str], vectors: np.ndarray
    ) -> WordVectors:
        """The inverse of :func:`build_word_vectors`' ``source`` record: word vectors that look
        words up as the embedder did, from its table of ``words`` and their ``vectors`` (the
        query store's vocabulary, or a checkpoint's float16 copy of it).

        The table's out-of-vocabulary words (they got seeded vectors) stay out of ``kv``, named
        by ``source["oov_words"]``. A source recorded before that list existed: a word counts as
        OOV when its vector is within 1e-2 of the seeded OOV vector it would get (the checkpoint
        table is float16), the only evidence such a store left."""
        oov = str(source.get("oov", "random"))
        sigma = float(source.get("oov_sigma", 0.1))
        seed = int(source.get("oov_seed", 0))
        table = np.asarray(vectors, dtype=np.float32).reshape(len(words), -1)
        dim = int(table.shape[1]) if table.size else int(source.get("dim", 300))
        if "oov_words" in source:
            oov_set = {str(w) for w in source["oov_words"]}
        else:  # written before the list was recorded
            oov_set = {
                w for w, v in zip(words, table, strict=True)
                if np.allclose(v, oov_vector(w, dim, mode=oov, sigma=sigma, seed=seed), atol=1e-2)
            }
        known = [i for i, w in enumerate(words) if w not in oov_set]
        kv = KeyedVectors(vector_size=dim)
        if known:
            kv.add_vectors([words[i] for i in known], table[known])
        return cls(kv=kv, source=dict(source), oov=oov, oov_sigma=sigma, seed=seed,
                   oov_words=sorted(oov_set))

    def extend_from_source(self, words: Iterable[str]) -> int:
        """Read the vectors of ``words`` that are neither known nor known OOV from the recorded
        vector file, when the source is a file still on disk; returns how many were found."""
        if self.source.get("kind") != "file" or not Path(str(self.source.get("path"))).is_file():
            return 0
        done = set(self.oov_words)
        missing = sorted({w for w in words if w not in self.kv.key_to_index and w not in done})
        if not missing:
            return 0
        kv, _ = load_subset(self.source["path"], missing, progress=False)
        found = [w for w in missing if w in kv.key_to_index]
        if found:
            self.kv.add_vectors(found, np.stack([np.asarray(kv[w], np.float32) for w in found]))
        self.oov_words = sorted(done | (set(missing) - set(found)))
        return len(found)

    def count_oov(self, counts: dict[str, int]) -> tuple[int, int]:
        """(distinct OOV words, OOV token occurrences) for a vocabulary's counts."""
        words = [w for w in counts if w not in self.kv.key_to_index]
        return len(words), int(sum(counts[w] for w in words))


def oov_vector(
    word: str, dim: int, *, mode: str = "random", sigma: float, seed: int = 0
) -> np.ndarray:
    """The vector of an out-of-vocabulary word: seeded by sha256(word) (and ``seed``), or zeros."""
    if mode == "zeros":
        return np.zeros(dim, dtype=np.float32)
    if mode != "random":
        raise ValueError(f"unknown OOV treatment {mode!r}; use one of {OOV_MODES}")
    h = int.from_bytes(hashlib.sha256(f"{seed}\0{word}".encode()).digest()[:8], "little")
    return (np.random.default_rng(h).standard_normal(dim) * sigma).astype(np.float32)


# ------------------------------------------------------------------------------------- formats
def _open_text(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def detect_format(path: str | os.PathLike[str]) -> str:
    """Guess the format of a vector file (see the module docstring)."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".kv", ".model")):
        return "gensim"
    if name.endswith(".bin"):
        return "word2vec-binary"
    with _open_text(p) as fh:
        first = fh.readline(1 << 16).split()
    if len(first) == 2 and all(f.isdigit() for f in first):
        return "word2vec"
    return "glove"


def infer_glove_dim(path: str | os.PathLike[str], sample: int = 200) -> int:
    """D of a header-less GloVe file: the most common (fields - 1) over its first lines."""
    counts: dict[int, int] = {}
    with _open_text(Path(path)) as fh:
        for i, line in enumerate(fh):
            if i >= sample:
                break
            n = len(line.rstrip(b"\r\n").rstrip(b" ").split(b" ")) - 1
            counts[n] = counts.get(n, 0) + 1
    if not counts or max(counts) < 1:
        raise GloveFormatError(
            f"{path}: empty or not a GloVe text file (no 'token v1 v2 ...' lines)"
        )
    return max(counts, key=lambda k: counts[k])


def _is_number(field: bytes) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _iter_text(
    path: Path, dim: int, *, header: bool, progress: bool, hasher: Any | None = None
) -> Iterator[tuple[int, bytes, bytes]]:
    """Yield (line number, token bytes, vector field bytes) for each line, checking field counts."""
    size = None if path.suffix == ".gz" else path.stat().st_size
    with (
        _open_text(path) as fh,
        tqdm(
            total=size, unit="B", unit_scale=True, desc=f"reading {path.name}", disable=not progress
        ) as bar,
    ):
        expected_count: int | None = None
        if header:
            head = fh.readline()
            if hasher is not None:
                hasher.update(head)
            bar.update(len(head))
            expected_count = int(head.split()[0])
        lineno = 1 if header else 0
        seen = 0
        pending = 0
        for raw in fh:
            lineno += 1
            if hasher is not None:
                hasher.update(raw)
            pending += len(raw)
            if pending >= 1 << 22:
                bar.update(pending)
                pending = 0
            line = raw.rstrip(b"\r\n").rstrip(b" ")
            if not line:
                continue
            seen += 1
            n = line.count(b" ") + 1
            if n == dim + 1:
                cut = line.index(b" ")
            elif n < dim + 1:
                raise GloveFormatError(
                    f"{path}:{lineno}: {n - 1} values after the token, expected {dim}; "
                    "the file is truncated or not a D-dimensional vector file (check --glove-format)"
                )
            else:
                cut = len(line.rsplit(b" ", dim)[0])
                head_fields = line[:cut].split(b" ")
                if all(_is_number(f) for f in head_fields[1:]):
                    raise GloveFormatError(
                        f"{path}:{lineno}: {n - 1} values after the token {head_fields[0][:40]!r}, "
                        f"expected {dim}; fix or remove this line"
                    )
            yield lineno, line[:cut], line[cut + 1 :]
        bar.update(pending)
    if expected_count is not None and seen != expected_count:
        raise GloveFormatError(
            f"{path}: header says {expected_count} vectors but the file has {seen}; "
            "the file is truncated or its header is wrong"
        )


def _iter_binary(
    path: Path, *, progress: bool, hasher: Any | None = None
) -> Iterator[tuple[int, bytes, bytes]]:
    """Yield (record number, token bytes, raw float32 bytes) of a word2vec binary file."""
    size = path.stat().st_size
    with (
        path.open("rb") as fh,
        tqdm(
            total=size, unit="B", unit_scale=True, desc=f"reading {path.name}", disable=not progress
        ) as bar,
    ):
        head = fh.readline()
        try:
            count, dim = (int(x) for x in head.split())
        except ValueError:
            raise GloveFormatError(
                f"{path}:1: word2vec binary header must be '<count> <dim>', got {head[:60]!r}"
            ) from None
        bar.update(len(head))
        if hasher is not None:
            hasher.update(head)
        rec = 4 * dim
        buf = b""
        pos = 0
        for i in range(count):
            while True:
                sp = buf.find(b" ", pos)
                if sp != -1 and len(buf) - sp - 1 >= rec:
                    break
                more = fh.read(1 << 20)
                if not more:
                    raise GloveFormatError(
                        f"{path}: record {i + 1} of {count} is truncated (file ends early); "
                        "re-download or re-export the file"
                    )
                bar.update(len(more))
                if hasher is not None:
                    hasher.update(more)
                buf = buf[pos:] + more
                pos = 0
            token = buf[pos:sp].lstrip(b"\n")
            yield i + 1, token, buf[sp + 1 : sp + 1 + rec]
            pos = sp + 1 + rec
        while hasher is not None and (rest := fh.read(1 << 20)):  # trailing bytes, if any
            hasher.update(rest)


def _binary_dim(path: Path) -> int:
    with path.open("rb") as fh:
        head = fh.readline().split()
    if len(head) != 2 or not all(h.isdigit() for h in head):
        raise GloveFormatError(f"{path}:1: word2vec header must be '<count> <dim>', got {head!r}")
    return int(head[1])


def stream_subset(
    path: str | os.PathLike[str],
    vocab: Iterable[str],
    *,
    fmt: str = "auto",
    lowercase_fallback: bool = True,
    progress: bool = True,
    hasher: Any | None = None,
    trust_pickle: bool = False,
) -> tuple[KeyedVectors, SubsetStats]:
    """One pass over ``path`` keeping only the rows of ``vocab``; never holds the whole matrix.

    ``hasher`` (a ``hashlib`` object), when given, is fed every byte of the file on the way,
    so the first run reads a multi-GB file once for both its digest and its rows (not for
    ``gensim`` or ``.gz`` files). A ``gensim`` file is refused unless ``trust_pickle``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"word-vector file {str(p)!r} not found; download a GloVe release (e.g. "
            "https://nlp.stanford.edu/data/glove.840B.300d.zip), unzip it and pass the .txt path"
        )
    if fmt not in FORMATS:
        raise ValueError(f"unknown word-vector format {fmt!r}; use one of {FORMATS}")
    fmt = detect_format(p) if fmt == "auto" else fmt
    wanted = set(vocab)

    if fmt == "gensim":
        if not trust_pickle:
            raise GloveFormatError(
                f"{p}: a gensim .kv/.model file is a pickle and loading it can run code; "
                "convert it once to word2vec text (docs/queries.md) or, for a file you "
                "trust, pass --trust-pickle"
            )
        try:
            full = KeyedVectors.load(str(p), mmap="r")
        except Exception as exc:
            raise GloveFormatError(
                f"{p}: not a readable gensim KeyedVectors file ({type(exc).__name__}: "
                f"{str(exc)[:120]}); check the file or --glove-format"
            ) from None
        if not isinstance(full, KeyedVectors):
            raise GloveFormatError(f"{p}: holds a {type(full).__name__}, not KeyedVectors")
        exact = {w: np.array(full[w]) for w in wanted if w in full.key_to_index}
        folded: dict[str, np.ndarray] = {}
        if lowercase_fallback and len(exact) < len(wanted):
            missing = wanted - exact.keys()
            for key in full.index_to_key:
                low = str(key).lower()
                if low in missing and low not in folded:
                    folded[low] = np.array(full[key])
        stats = SubsetStats(fmt, int(full.vector_size), len(full), len(exact), len(folded))
        return _to_kv(exact, folded, stats.dim), stats

    wanted_b = {w.encode("utf-8"): w for w in wanted}
    exact = {}
    folded = {}
    if fmt == "word2vec-binary":
        dim = _binary_dim(p)
        records: Iterator[tuple[int, bytes, bytes]] = _iter_binary(
            p, progress=progress, hasher=hasher
        )
    else:
        if hasher is not None and p.suffix == ".gz":
            raise ValueError("hashing during the pass needs the raw file, not a .gz stream")
        dim = infer_glove_dim(p) if fmt == "glove" else _binary_dim_text(p)
        records = _iter_text(p, dim, header=(fmt == "word2vec"), progress=progress, hasher=hasher)

    def parse(lineno: int, raw: bytes) -> np.ndarray:
        if fmt == "word2vec-binary":
            return np.frombuffer(raw, dtype="<f4").astype(np.float32)
        try:
            vec = np.array(raw.split(b" "), dtype=np.float32)
        except ValueError:
            raise GloveFormatError(
                f"{p}:{lineno}: a value is not a number ({raw[:60]!r}...); fix or remove this line"
            ) from None
        return vec

    lines = 0
    for lineno, tok, raw in records:
        lines += 1
        word = wanted_b.get(tok)
        if word is not None:
            if word not in exact:
                exact[word] = parse(lineno, raw)
            continue
        if lowercase_fallback:
            low = tok.decode("utf-8", "replace").lower()
            if low in wanted and low not in exact and low not in folded:
                folded[low] = parse(lineno, raw)
    stats = SubsetStats(fmt, dim, lines, len(exact), len(folded.keys() - exact.keys()))
    logger.info(
        "%s: %d lines, kept %d of %d vocabulary words (%d by lower-casing)",
        p.name,
        lines,
        len(exact) + len(folded),
        len(wanted),
        len(folded),
    )
    return _to_kv(exact, folded, dim), stats


def _binary_dim_text(path: Path) -> int:
    with _open_text(path) as fh:
        head = fh.readline().split()
    if len(head) != 2 or not all(h.isdigit() for h in head):
        raise GloveFormatError(f"{path}:1: word2vec header must be '<count> <dim>', got {head!r}")
    return int(head[1])


def _to_kv(exact: dict[str, np.ndarray], folded: dict[str, np.ndarray], dim: int) -> KeyedVectors:
    merged = dict(folded)
    merged.update(exact)  # an exact match wins over a lower-cased one
    keys = sorted(merged)
    kv = KeyedVectors(vector_size=dim, count=0, dtype=np.float32)
    if keys:
        kv.add_vectors(keys, np.stack([merged[k] for k in keys]).astype(np.float32))
    return kv


# --------------------------------------------------------------------------------------- cache
def default_cache_dir() -> Path:
    base = os.environ.get("MKTN_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "mktn") / "glove"


def _read_index(cache_dir: Path) -> dict[str, Any]:
    index_path = cache_dir / _DIGESTS_FILE
    if index_path.is_file():
        with contextlib.suppress(ValueError, OSError):
            loaded = json.loads(index_path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                return loaded
    return {}


def lookup_digest(path: Path, cache_dir: Path) -> str | None:
    """The recorded sha256 of ``path`` when its size and mtime are unchanged, else ``None``."""
    if not path.is_file():
        return None
    rec = _read_index(cache_dir).get(str(path.resolve()))
    if rec:
        fp = FileFingerprint.from_dict(rec)
        if quick_unchanged(path, fp):
            return fp.sha256
    return None


def record_digest(path: Path, sha256: str, cache_dir: Path, stat: os.stat_result) -> None:
    """Remember ``sha256`` for ``path`` as it was at ``stat`` (skipped if it changed since)."""
    now = path.stat()
    if (now.st_size, now.st_mtime_ns) != (stat.st_size, stat.st_mtime_ns):
        logger.warning("%s changed while it was read; its digest is not recorded", path)
        return
    index = _read_index(cache_dir)
    fp = FileFingerprint(str(path.resolve()), stat.st_size, stat.st_mtime_ns, sha256)
    index[fp.path] = fp.to_dict()
    atomic_write_json(cache_dir / _DIGESTS_FILE, index)


def cached_digest(path: Path, cache_dir: Path) -> str:
    """sha256 of ``path``, rehashed only when its size or mtime changed since it was recorded."""
    sha = lookup_digest(path, cache_dir)
    if sha is not None:
        return sha
    logger.info("hashing %s (once; remembered by size and mtime)", path)
    stat = path.stat()
    sha = file_digest(path)
    record_digest(path, sha, cache_dir, stat)
    return sha


def load_subset(
    path: str | os.PathLike[str],
    vocab: Iterable[str],
    *,
    fmt: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    lowercase_fallback: bool = True,
    progress: bool = True,
    trust_pickle: bool = False,
) -> tuple[KeyedVectors, dict[str, Any]]:
    """The vocabulary's rows of a vector file, from the cache when this file+vocabulary was seen.

    Returns the vectors and an info dict (file sha256, format, dim, lines, found, cache path,
    ``cache_hit``).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"word-vector file {str(p)!r} not found; download a GloVe release (e.g. "
            "https://nlp.stanford.edu/data/glove.840B.300d.zip), unzip it and pass the .txt path"
        )
    words = sorted(set(vocab))
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    vocab_digest = digest_strings(*words)
    flag = "lc" if lowercase_fallback else "exact"

    def cache_path(sha: str) -> Path:
        return cdir / f"glove-subset-{sha[:16]}-{vocab_digest}-{flag}.npy"

    resolved = detect_format(p) if fmt == "auto" else fmt
    if resolved == "gensim" and not trust_pickle:  # refuse before hashing or caching anything
        stream_subset(p, (), fmt=resolved, trust_pickle=False)
    sha = lookup_digest(p, cdir)
    hasher = None
    if sha is None and resolved != "gensim" and p.suffix != ".gz":
        hasher = hashlib.sha256()  # first sight of this file: hash it during the one pass
    elif sha is None:
        sha = cached_digest(p, cdir)
    if sha is not None:
        hit = _read_cache(cache_path(sha))
        if hit is not None:
            kv, info = hit
            info.update(cache=str(cache_path(sha)), cache_hit=True)
            logger.info("GloVe subset cache hit: %s", cache_path(sha))
            return kv, info
    stat = p.stat()
    kv, stats = stream_subset(
        p,
        words,
        fmt=resolved,
        lowercase_fallback=lowercase_fallback,
        progress=progress,
        hasher=hasher,
        trust_pickle=trust_pickle,
    )
    if hasher is not None:
        sha = hasher.hexdigest()
        record_digest(p, sha, cdir, stat)
    assert sha is not None
    cache = cache_path(sha)
    info = {
        "path": str(p.resolve()),
        "sha256": sha,
        "format": stats.fmt,
        "dim": stats.dim,
        "lines": stats.lines,
        "found": stats.found + stats.lowercase_matches,
        "lowercase_matches": stats.lowercase_matches,
        "vocab_size": len(words),
        "vocab_digest": vocab_digest,
    }
    _write_cache(cache, kv, info)
    return kv, {**info, "cache": str(cache), "cache_hit": False}


def _write_cache(cache: Path, kv: KeyedVectors, info: dict[str, Any]) -> None:
    """The subset as ``<cache>.npy`` (float32 rows) + ``<cache>.json`` (words, info); no pickles.

    The JSON is written last and names the row count, so a reader never pairs it with a
    half-written or foreign matrix.
    """
    matrix = np.ascontiguousarray(kv.vectors[: len(kv.index_to_key)], dtype=np.float32)
    with atomic_open(cache, "wb") as fh:
        np.save(fh, matrix, allow_pickle=False)
    meta = {"words": [str(w) for w in kv.index_to_key], "shape": list(matrix.shape), "info": info}
    atomic_write_json(cache.with_suffix(".json"), meta)


def _read_cache(cache: Path) -> tuple[KeyedVectors, dict[str, Any]] | None:
    """A cache entry written by :func:`_write_cache`, or None (a miss) if any part is off."""
    meta_path = cache.with_suffix(".json")
    if not (cache.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        words, info = meta["words"], dict(meta["info"])
        matrix = np.load(cache, allow_pickle=False)
        ok = (
            isinstance(words, list)
            and all(isinstance(w, str) for w in words)
            and len(set(words)) == len(words)
            and matrix.dtype == np.float32
            and matrix.ndim == 2
            and list(matrix.shape) == [len(words), int(info["dim"])] == list(meta["shape"])
        )
    except Exception as exc:  # unreadable, truncated, tampered: recompute, never trust
        logger.warning("ignoring the unreadable GloVe subset cache %s (%s)", cache, exc)
        return None
    if not ok:
        logger.warning("ignoring the GloVe subset cache %s: its parts do not match", cache)
        return None
    kv = KeyedVectors(vector_size=int(info["dim"]), count=0, dtype=np.float32)
    if words:
        kv.add_vectors(words, matrix)
    return kv, info


# ------------------------------------------------------------------------------------ defaults
def _stable_hash(text: str) -> int:
    """gensim seeds each word's initial vector with ``hashfxn``; Python's hash() is salted."""
    return zlib.crc32(text.encode("utf-8"))


def identity_vector(word: str, dim: int, seed: int = 0) -> np.ndarray:
    """A word's identity code: ``N(0, 1/dim)`` entries seeded by ``sha256(seed, "id", word)``.

    Codes of different words are near-orthogonal (cosine ~ N(0, 1/dim)), the same word gets
    the same code in every split, run and machine, and a word only in val/test gets one too."""
    h = int.from_bytes(hashlib.sha256(f"{seed}\0id\0{word}".encode()).digest()[:8], "little")
    return (np.random.default_rng(h).standard_normal(dim) / math.sqrt(dim)).astype(np.float32)


def train_default_vectors(
    sentences: Sequence[Sequence[str]],
    *,
    dim: int = 300,
    seed: int = 0,
    epochs: int | None = None,
    identity_dim: int = 0,
) -> tuple[KeyedVectors, dict[str, Any]]:
    """Word2vec (skip-gram) vectors trained on ``sentences``: deterministic for a seed.

    With ``identity_dim`` > 0 the last ``identity_dim`` of the ``dim`` dimensions are each
    word's :func:`identity_vector` (scaled to the word2vec part's entry spread) and word2vec
    has ``dim - identity_dim``. Words not in the sentences stay out-of-vocabulary (their
    seeded random vectors are identity codes of their own)."""
    sents = [list(s) for s in sentences if s]
    if not sents:
        raise ValueError("cannot train default word vectors: no training sentences")
    if not 0 <= identity_dim < dim:
        raise ValueError(f"identity_dim must be in [0, {dim}), got {identity_dim}")
    n_tokens = sum(len(s) for s in sents)
    if epochs is None:
        epochs = int(min(50, max(5, math.ceil(3_000_000 / max(n_tokens, 1)))))
    w2v_dim = dim - identity_dim
    model = Word2Vec(
        sentences=sents,
        vector_size=w2v_dim,
        window=5,
        min_count=1,
        sg=1,
        negative=5,
        seed=seed,
        workers=1,
        epochs=epochs,
        hashfxn=_stable_hash,
    )
    info = {
        "kind": DEFAULT_SOURCE,
        "dim": dim,
        "seed": seed,
        "epochs": epochs,
        "sentences": len(sents),
        "tokens": n_tokens,
        "corpus_digest": digest_strings(*(" ".join(s) for s in sents)),
        "comparable_to_published": False,
    }
    logger.info("word2vec: %d-d skip-gram vectors for %d words, %d epochs over %d sentences (%d tokens)",
                w2v_dim, len(model.wv.index_to_key), epochs, len(sents), n_tokens)
    if identity_dim == 0:
        return model.wv, info
    wv = model.wv
    scale = float(np.std(wv.vectors)) * math.sqrt(identity_dim)
    words = list(wv.index_to_key)
    rows = np.zeros((len(words), dim), dtype=np.float32)
    for i, w in enumerate(words):
        rows[i, :w2v_dim] = wv[w]
        rows[i, w2v_dim:] = identity_vector(w, identity_dim, seed) * scale
    kv = KeyedVectors(vector_size=dim)
    kv.add_vectors(words, rows)
    info.update(kind=DEFAULT_SOURCE + "+identity", word2vec_dim=w2v_dim, identity_dim=identity_dim)
    return kv, info


def build_word_vectors(
    cfg: WordVectorsConfig,
    vocab: Iterable[str],
    train_sentences: Sequence[Sequence[str]],
    *,
    progress: bool = True,
) -> WordVectors:
    """Word vectors for ``vocab``: the GloVe file's subset (cached) or the trained default."""
    if cfg.oov not in OOV_MODES:
        raise ValueError(f"unknown OOV treatment {cfg.oov!r}; use one of {OOV_MODES}")
    words = sorted(set(vocab))
    if cfg.path is not None:
        kv, info = load_subset(
            cfg.path,
            words,
            fmt=cfg.fmt,
            cache_dir=cfg.cache_dir,
            lowercase_fallback=cfg.lowercase_fallback,
            progress=progress,
            trust_pickle=cfg.trust_pickle,
        )
        source = {"kind": "file", **info}
    else:
        logger.warning(
            "no GloVe file given: %d-d word vectors = %d-d word2vec trained on the dataset's own "
            "%d training sentences + a %d-d per-word identity code; results are NOT comparable "
            "to published ones (pass --glove)",
            cfg.default_dim,
            cfg.default_dim - cfg.identity_dim,
            len(train_sentences),
            cfg.identity_dim,
        )
        kv, source = train_default_vectors(
            train_sentences,
            dim=cfg.default_dim,
            seed=cfg.seed,
            epochs=cfg.default_epochs,
            identity_dim=cfg.identity_dim,
        )
    found = [w for w in words if w in kv.key_to_index]
    sigma = float(np.std(np.stack([kv[w] for w in found]))) if found else 0.1
    oov_words = [w for w in words if w not in kv.key_to_index]
    if oov_words:
        logger.info(
            "%d of %d vocabulary words have no vector; they get %s vectors (e.g. %s)",
            len(oov_words),
            len(words),
            "seeded random" if cfg.oov == "random" else "zero",
            ", ".join(oov_words[:5]),
        )
    # everything WordVectors.from_table needs to look words up again as they were looked up here
    source = {**source, "oov": cfg.oov, "oov_sigma": sigma, "oov_seed": cfg.seed, "oov_words": oov_words}
    return WordVectors(
        kv=kv, source=source, oov=cfg.oov, oov_sigma=sigma, seed=cfg.seed, oov_words=oov_words
    )
