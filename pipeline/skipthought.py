"""Skip-thought sentence encoder (Kiros et al., 2015) in PyTorch: model, Theano loader, trainer.

* **uni-skip**: a word table (620-d) and a GRU (2400-d); the sentence vector is the
  final hidden state after the words and ``<eos>``.
* **bi-skip**: a second word table and two GRUs (1200-d each): one reads the sentence
  forward, the other reversed; the vector is their two final states.
* **combine-skip**: uni-skip and bi-skip concatenated (4800-d), each part L2-normalised
  first as in the original ``encode(use_norm=True)``.

The dimensions are configurable (:class:`SkipThoughtConfig`; presets ``paper`` and
``demo``) so the CPU demo can train a small encoder; the store records the sizes used.

**Released parameters.** :func:`load_theano_skipthoughts` reads the original files:
``uni_skip.npz`` / ``bi_skip.npz`` with their option pickles ``uni_skip.npz.pkl`` /
``bi_skip.npz.pkl``, and ``dictionary.txt`` (one word per line, aligned with the rows of)
``utable.npy`` / ``btable.npy``. The Theano GRU of the release computes, per step,
``r, u = sigmoid(x W + b + h U)`` split in two halves, ``h~ = tanh(x Wx + bx + r * (h Ux))``,
``h = u * h_prev + (1 - u) * h~``; that is ``torch.nn.GRU`` with ``z = u``, the input
weights ``[W_r; W_u; Wx]^T``, the recurrent weights ``[U_r; U_u; Ux]^T`` and zero
recurrent bias. The backward GRU of bi-skip uses the ``encoder_r_*`` parameters.
The tables are opened with ``mmap_mode="r"`` and only the rows of the dataset's
vocabulary are copied, so the 2.2 GB tables never load whole.

**Training from scratch.** Without released parameters, :func:`train_skipthought`
trains the encoder on the dataset's own ordered sentences with the skip-thought
objective: encode sentence i and decode sentences i-1 and i+1 with two conditional
GRU decoders (the encoder's state enters every decoder gate: the decoder input is the
previous target word's vector concatenated with it), teacher-forced, with an output
layer shared by both decoders, cross-entropy per target token. uni and bi parts of
combine-skip are trained side by side with separate decoders, as two models. A
checkpoint (atomic) is written after every epoch, named by the run id (a digest of
the configuration without ``epochs``, the corpus and the initial word vectors), so
an interrupted or shorter run resumes where it stopped.

**Vocabulary expansion** (:meth:`SkipThoughtEncoder.expand_vocabulary`): as in the
paper, a linear map from the word-vector space (GloVe) into each encoder word
table, fitted by least squares on the words both know, gives a table row to every
word that has a word vector but no row of its own.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import math
import os
import pickle
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from tqdm import tqdm

from pipeline.overrides import strict_replace
from storage.atomic import atomic_open
from storage.fingerprint import digest_strings, file_digest

logger = logging.getLogger(__name__)

PAD, EOS, UNK = "<pad>", "<eos>", "UNK"  # "<eos>" and "UNK" are the release's own table keys
SPECIALS = (PAD, EOS, UNK)
MODES = ("uni", "bi", "combine")


@dataclass(frozen=True)
class SkipThoughtConfig:
    """Encoder sizes and training settings. ``paper`` reproduces Kiros et al.; ``demo`` is small."""

    mode: str = "combine"  # "uni" | "bi" | "combine" (= uni ; bi)
    word_dim: int = 620  # paper: 620-d word tables
    uni_dim: int = 2400  # paper: uni-skip GRU 2400-d
    bi_dim: int = 1200  # paper: bi-skip, 1200-d per direction
    normalize: bool = True  # L2-normalise uni and bi parts before concatenating (use_norm=True)
    use_eos: bool = True  # append "<eos>" to every sentence, as the release's encode()
    # training from scratch
    vocab_size: int = 20000  # paper: the 20k most frequent words
    max_len: int = 30  # sentences longer than this are cut for training
    epochs: int = 5
    batch_size: int = 64
    lr: float = 2e-3  # Adam
    grad_clip: float = 2.0  # paper: gradient norm clipped at 2
    init_from_word_vectors: bool = True  # start word tables from GloVe rows when dims agree
    seed: int = 0
    # small GRUs on CPU: one intra-op thread ran 4x faster than two on the shared 2-core
    # machine (6.5 s vs 26 s for the test corpus); 0 keeps torch's setting
    cpu_threads: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"skip-thought mode {self.mode!r} unknown; use one of {MODES}")

    @property
    def sentence_dim(self) -> int:
        return {
            "uni": self.uni_dim,
            "bi": 2 * self.bi_dim,
            "combine": self.uni_dim + 2 * self.bi_dim,
        }[self.mode]


PRESETS: dict[str, SkipThoughtConfig] = {
    "paper": SkipThoughtConfig(),
    # ~1-2 min on 2 CPU cores for ~1,000 queries; 300-d tables start from the word vectors.
    "demo": SkipThoughtConfig(
        word_dim=300, uni_dim=256, bi_dim=128, epochs=10, batch_size=128, lr=3e-3
    ),
}


def build_skipthought_config(preset: str = "demo", **overrides: Any) -> SkipThoughtConfig:
    """A preset with overrides; unknown keys are an error."""
    if preset not in PRESETS:
        raise ValueError(f"unknown skip-thought preset {preset!r}; use one of {sorted(PRESETS)}")
    return strict_replace(PRESETS[preset], overrides, "skip-thought config keys")


# ----------------------------------------------------------------------------------- modules
class GRUEncoder(nn.Module):
    """A word table and a GRU (``bidirectional``: forward + backward); returns final states."""

    def __init__(self, vocab_size: int, word_dim: int, hidden: int, *, bidirectional: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.gru = nn.GRU(word_dim, hidden, batch_first=True, bidirectional=bidirectional)
        self.hidden = hidden
        self.bidirectional = bidirectional

    @property
    def out_dim(self) -> int:
        return self.hidden * (2 if self.bidirectional else 1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``ids`` (B, T) padded with 0, ``lengths`` (B,) >= 1 -> final state(s) (B, out_dim)."""
        x = self.embed(ids)  # (B, T, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)  # (dirs, B, H), already in the input order
        return h.transpose(0, 1).reshape(ids.shape[0], -1)  # (B, dirs*H): forward ; backward


class SkipThoughtEncoder(nn.Module):
    """Sentences (token lists) -> skip-thought vectors [B, sentence_dim]."""

    def __init__(
        self,
        words: Sequence[str],
        *,
        mode: str = "combine",
        word_dim: int = 620,
        uni_dim: int = 2400,
        bi_dim: int = 1200,
        normalize: bool = True,
        use_eos: bool = True,
    ) -> None:
        super().__init__()
        if tuple(words[:3]) != SPECIALS:
            raise ValueError(
                f"the encoder vocabulary must start with {SPECIALS}, got {list(words[:3])}"
            )
        if mode not in MODES:
            raise ValueError(f"skip-thought mode {mode!r} unknown; use one of {MODES}")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.mode = mode
        self.normalize = normalize
        self.use_eos = use_eos
        v = len(self.words)
        self.uni = GRUEncoder(v, word_dim, uni_dim, bidirectional=False) if mode != "bi" else None
        self.bi = GRUEncoder(v, word_dim, bi_dim, bidirectional=True) if mode != "uni" else None

    @property
    def sentence_dim(self) -> int:
        return sum(p.out_dim for p in self.parts())

    def parts(self) -> list[GRUEncoder]:
        return [p for p in (self.uni, self.bi) if p is not None]

    def config_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "word_dim": self.parts()[0].embed.embedding_dim,
            "uni_dim": self.uni.hidden if self.uni is not None else 0,
            "bi_dim": self.bi.hidden if self.bi is not None else 0,
            "normalize": self.normalize,
            "use_eos": self.use_eos,
            "sentence_dim": self.sentence_dim,
            "vocab_size": len(self.words),
        }

    def token_ids(self, tokens: Sequence[str]) -> list[int]:
        unk = self.index[UNK]
        ids = [self.index.get(t, unk) for t in tokens]
        if self.use_eos or not ids:
            ids.append(self.index[EOS])
        return ids

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``ids`` (B, T), ``lengths`` (B,) -> (B, sentence_dim)."""
        outs = [p(ids, lengths) for p in self.parts()]
        if self.normalize:
            outs = [F.normalize(o, dim=-1) for o in outs]
        return torch.cat(outs, dim=-1)

    @torch.no_grad()
    def encode(
        self, sentences: Sequence[Sequence[str]], *, batch_size: int = 256, progress: bool = False
    ) -> np.ndarray:
        """Skip-thought vectors of token lists, float32 [len(sentences), sentence_dim]."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = np.zeros((len(sentences), self.sentence_dim), dtype=np.float32)
        for start in tqdm(
            range(0, len(sentences), batch_size), desc="skip-thought encode", disable=not progress
        ):
            batch = [self.token_ids(s) for s in sentences[start : start + batch_size]]
            ids, lengths = pad_batch(batch, device)
            out[start : start + len(batch)] = self(ids, lengths).float().cpu().numpy()
        self.train(was_training)
        return out

    @torch.no_grad()
    def expand_vocabulary(self, vectors: Any, words: Iterable[str]) -> dict[str, Any]:
        """Give ``words`` missing from the tables a row mapped from ``vectors`` (word -> array).

        Fits, per word table, W minimising ||G W - E||^2 over the words both know (least
        squares, as the paper maps word2vec into the encoder's space) and appends G[w] W for
        every new word. ``vectors`` is a gensim ``KeyedVectors`` (anything with
        ``key_to_index`` and ``__getitem__``). Returns counts for the provenance record.
        """
        known = [w for w in self.words[len(SPECIALS) :] if w in vectors.key_to_index]
        new = sorted({w for w in words if w not in self.index and w in vectors.key_to_index})
        info: dict[str, Any] = {"fit_words": len(known), "added_words": 0}
        if not new:
            return info
        if len(known) < 2:
            logger.warning("vocabulary expansion skipped: only %d shared words to fit", len(known))
            return info
        g_known = np.stack([np.asarray(vectors[w], dtype=np.float64) for w in known])
        g_new = np.stack([np.asarray(vectors[w], dtype=np.float64) for w in new])
        if len(known) < g_known.shape[1]:
            logger.warning(
                "vocabulary expansion fits a %d-d map on only %d words: underdetermined, "
                "using the minimum-norm least-squares solution",
                g_known.shape[1],
                len(known),
            )
        rows = torch.tensor([self.index[w] for w in known])
        residuals = []
        for part in self.parts():
            e_known = part.embed.weight[rows].double().cpu().numpy()
            w_map, *_ = np.linalg.lstsq(g_known, e_known, rcond=None)
            residuals.append(float(np.mean((g_known @ w_map - e_known) ** 2)))
            added = torch.from_numpy(g_new @ w_map).to(part.embed.weight)
            weight = torch.cat([part.embed.weight.data, added], dim=0)
            part.embed = nn.Embedding.from_pretrained(weight, freeze=False, padding_idx=0)
        for w in new:
            self.index[w] = len(self.words)
            self.words.append(w)
        info.update(added_words=len(new), fit_mse=residuals)
        logger.info("vocabulary expansion: %d words mapped from the word vectors", len(new))
        return info


def pad_batch(
    batch: Sequence[Sequence[int]], device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Id lists -> (B, T) padded with 0 and lengths (B,)."""
    lengths = torch.tensor([len(b) for b in batch], dtype=torch.long)
    ids = torch.zeros(len(batch), int(lengths.max()) if len(batch) else 0, dtype=torch.long)
    for i, b in enumerate(batch):
        ids[i, : len(b)] = torch.tensor(b, dtype=torch.long)
    return ids.to(device), lengths.to(device)


class SkipThoughtObjective(nn.Module):
    """One encoder part plus its two conditional GRU decoders (previous and next sentence)."""

    def __init__(self, encoder: GRUEncoder, vocab_size: int) -> None:
        super().__init__()
        e, c = encoder.embed.embedding_dim, encoder.out_dim
        self.encoder = encoder
        self.dec_prev = nn.GRU(e + c, c, batch_first=True)
        self.dec_next = nn.GRU(e + c, c, batch_first=True)
        self.out = nn.Linear(c, vocab_size)  # shared by both decoders

    def _decode(
        self, dec: nn.GRU, ctx: torch.Tensor, tgt: torch.Tensor
    ) -> tuple[torch.Tensor, int]:
        b, t = tgt.shape
        if t == 0:  # no sentence in this batch has that neighbour
            return ctx.new_zeros(()), 0
        emb = self.encoder.embed(tgt)  # (B, T, E): decoders share the encoder's word table
        shifted = torch.cat([emb.new_zeros(b, 1, emb.shape[-1]), emb[:, :-1]], dim=1)  # (B, T, E)
        inp = torch.cat(
            [shifted, ctx[:, None, :].expand(b, t, ctx.shape[-1])], dim=-1
        )  # (B, T, E+C)
        hidden, _ = dec(inp)  # (B, T, C); causal, so padding after the end never leaks back
        logits = self.out(hidden)  # (B, T, V)
        loss = F.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=0, reduction="sum")
        return loss, int((tgt != 0).sum())

    def forward(
        self, cur: torch.Tensor, cur_len: torch.Tensor, prev: torch.Tensor, nxt: torch.Tensor
    ) -> tuple[torch.Tensor, int]:
        """Summed cross-entropy of both neighbours and the number of target tokens."""
        ctx = self.encoder(cur, cur_len)  # (B, C)
        lp, n_p = self._decode(self.dec_prev, ctx, prev)
        ln, n_n = self._decode(self.dec_next, ctx, nxt)
        return lp + ln, n_p + n_n


# --------------------------------------------------------------------------- Theano release
class _NoGlobalsUnpickler(pickle.Unpickler):
    """The release's option pickles are plain dicts: refuse anything that imports code."""

    def find_class(self, module: str, name: str) -> Any:  # pragma: no cover - refusal path
        raise pickle.UnpicklingError(f"refusing to import {module}.{name} from an options pickle")


def _load_options(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(
            f"skip-thought options {str(path)!r} not found (it ships beside the .npz)"
        )
    with path.open("rb") as fh:
        try:
            opts = _NoGlobalsUnpickler(fh, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError) as exc:
            raise ValueError(f"{path}: not a skip-thought options pickle ({exc})") from None
    if not isinstance(opts, dict) or "dim" not in opts or "dim_word" not in opts:
        raise ValueError(
            f"{path}: expected a dict with 'dim' and 'dim_word' (the release's options)"
        )
    return opts


def _gru_state(
    params: Any, prefix: str, path: Path, dim_word: int, dim: int
) -> dict[str, torch.Tensor]:
    """Theano ``<prefix>_{W,b,U,Wx,Ux,bx}`` -> ``torch.nn.GRU`` weights (gates r, z=u, n)."""
    want = {
        "W": (dim_word, 2 * dim),
        "b": (2 * dim,),
        "U": (dim, 2 * dim),
        "Wx": (dim_word, dim),
        "Ux": (dim, dim),
        "bx": (dim,),
    }
    p: dict[str, np.ndarray] = {}
    for name, shape in want.items():
        key = f"{prefix}_{name}"
        if key not in params:
            raise ValueError(
                f"{path}: parameter {key!r} missing; is this a skip-thought encoder file?"
            )
        arr = np.asarray(params[key], dtype=np.float32)
        if arr.shape != shape:
            raise ValueError(
                f"{path}: {key} has shape {arr.shape}, expected {shape} from its options"
            )
        p[name] = arr
    w_ih = np.concatenate([p["W"][:, :dim].T, p["W"][:, dim:].T, p["Wx"].T], axis=0)  # (3H, E)
    w_hh = np.concatenate([p["U"][:, :dim].T, p["U"][:, dim:].T, p["Ux"].T], axis=0)  # (3H, H)
    b_ih = np.concatenate([p["b"], p["bx"]])  # (3H,)
    return {
        "weight_ih": torch.from_numpy(w_ih),
        "weight_hh": torch.from_numpy(w_hh),
        "bias_ih": torch.from_numpy(b_ih),
        "bias_hh": torch.zeros(3 * dim),
    }


def release_files(directory: str | os.PathLike[str], mode: str) -> list[Path]:
    """The release files a ``mode`` reads (parameters, tables, dictionary), in a fixed order."""
    d = Path(directory)
    parts = {"uni": ["uni"], "bi": ["bi"], "combine": ["uni", "bi"]}[mode]
    files = [d / f"{p}_skip.npz" for p in parts] + [d / f"{p[0]}table.npy" for p in parts]
    return [*files, d / "dictionary.txt"]


def release_weights_digest(
    directory: str | os.PathLike[str], mode: str, digest_fn: Callable[[Path], str] = file_digest
) -> str:
    """A short digest over the digests of :func:`release_files` (the store's weights id)."""
    return digest_strings(
        *sorted(f"{f.name}={digest_fn(f)}" for f in release_files(directory, mode))
    )


def load_theano_skipthoughts(
    directory: str | os.PathLike[str],
    *,
    mode: str = "combine",
    vocab: Iterable[str] | None = None,
    normalize: bool = True,
    digest_fn: Callable[[Path], str] = file_digest,
) -> tuple[SkipThoughtEncoder, dict[str, Any]]:
    """Build an encoder from the original release in ``directory`` (see the module docstring).

    With ``vocab`` only those words' table rows are kept (plus ``UNK`` and ``<eos>``).
    Returns the encoder and provenance (file digests, sizes); ``digest_fn`` hashes each file
    (pass a cached one to avoid rehashing the multi-GB tables on every run).
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(
            f"skip-thought directory {str(d)!r} not found; it should hold uni_skip.npz(.pkl), "
            "bi_skip.npz(.pkl), dictionary.txt, utable.npy and btable.npy from the original release"
        )
    parts = {"uni": ["uni"], "bi": ["bi"], "combine": ["uni", "bi"]}[mode]
    dict_path = d / "dictionary.txt"
    if not dict_path.is_file():
        raise FileNotFoundError(f"{dict_path} not found (the release's word list)")
    dictionary = [
        line.decode("utf-8", "replace").strip() for line in dict_path.read_bytes().splitlines()
    ]
    for special in (UNK, EOS):
        if special not in dictionary:
            raise ValueError(f"{dict_path}: the word list has no {special!r} entry")
    first_row: dict[str, int] = {}
    for i, w in enumerate(dictionary):
        first_row.setdefault(w, i)
    keep = [w for w in dictionary if w not in SPECIALS]
    if vocab is not None:
        wanted = set(vocab)
        keep = [w for w in dict.fromkeys(keep) if w in wanted]
    else:
        keep = list(dict.fromkeys(keep))
    words = [*SPECIALS, *keep]
    rows = [first_row[w] for w in words[1:]]  # row 0 (PAD) stays zero

    provenance: dict[str, Any] = {
        "kind": "theano-release",
        "directory": str(d.resolve()),
        "files": {},
    }
    states: dict[str, dict[str, Any]] = {}
    dims: dict[str, tuple[int, int]] = {}
    for part in parts:
        npz_path = d / f"{part}_skip.npz"
        opts = _load_options(d / f"{part}_skip.npz.pkl")
        if not npz_path.is_file():
            raise FileNotFoundError(f"{npz_path} not found (the release's {part}-skip parameters)")
        table_path = d / f"{part[0]}table.npy"
        if not table_path.is_file():
            raise FileNotFoundError(
                f"{table_path} not found (the release's {part}-skip word table)"
            )
        dim_word, dim = int(opts["dim_word"]), int(opts["dim"])  # bi: dim is per direction
        table = np.load(table_path, mmap_mode="r", allow_pickle=False)
        if table.ndim != 2 or table.shape[1] != dim_word or table.shape[0] < len(dictionary):
            raise ValueError(
                f"{table_path}: shape {table.shape} does not match {len(dictionary)} dictionary "
                f"words x dim_word={dim_word}"
            )
        emb = np.zeros((len(words), dim_word), dtype=np.float32)
        emb[1:] = table[rows]
        with np.load(npz_path, allow_pickle=False) as params:
            state = {"embed.weight": torch.from_numpy(emb)}
            for key, val in _gru_state(params, "encoder", npz_path, dim_word, dim).items():
                state[f"gru.{key}_l0"] = val
            if part == "bi":
                for key, val in _gru_state(params, "encoder_r", npz_path, dim_word, dim).items():
                    state[f"gru.{key}_l0_reverse"] = val
        states[part] = state
        dims[part] = (dim_word, dim)
        for f in (npz_path, table_path):
            provenance["files"][f.name] = digest_fn(f)
    provenance["files"]["dictionary.txt"] = digest_fn(dict_path)
    word_dims = {v[0] for v in dims.values()}
    if len(word_dims) != 1:
        raise ValueError(f"{d}: uni and bi word tables differ in width {sorted(word_dims)}")
    enc = SkipThoughtEncoder(
        words,
        mode=mode,
        word_dim=word_dims.pop(),
        uni_dim=dims.get("uni", (0, 1))[1],
        bi_dim=dims.get("bi", (0, 1))[1],
        normalize=normalize,
    )
    for part, state in states.items():
        target = enc.uni if part == "uni" else enc.bi
        assert target is not None
        target.load_state_dict(state)
    provenance["weights_digest"] = digest_strings(
        *sorted(f"{k}={v}" for k, v in provenance["files"].items())
    )  # equals release_weights_digest(directory, mode)
    provenance.update(enc.config_dict())
    return enc, provenance


# --------------------------------------------------------------------------------- training
def build_training_vocab(documents: Sequence[Sequence[Sequence[str]]], size: int) -> list[str]:
    """Specials + the ``size`` most frequent words (ties alphabetical)."""
    counts: Counter[str] = Counter(t for doc in documents for s in doc for t in s)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [*SPECIALS, *(w for w, _ in ranked[:size] if w not in SPECIALS)]


def training_triples(
    documents: Sequence[Sequence[Sequence[str]]],
) -> list[tuple[int, int, int, int]]:
    """(doc, i-1 or -1, i, i+1 or -1) for every sentence with at least one neighbour."""
    out = []
    for d, doc in enumerate(documents):
        if len(doc) < 2:
            continue
        for i in range(len(doc)):
            out.append((d, i - 1 if i > 0 else -1, i, i + 1 if i + 1 < len(doc) else -1))
    return out


def corpus_digest(documents: Sequence[Sequence[Sequence[str]]]) -> str:
    return digest_strings(*("\n".join(" ".join(s) for s in doc) for doc in documents))


def skipthought_run_id(
    cfg: SkipThoughtConfig, documents: Sequence[Sequence[Sequence[str]]], init_id: str
) -> str:
    """Identity of a training run: config (less epochs/threads), corpus, initial vectors, and
    this module's source, so a resumable checkpoint written by other training code is never
    resumed (nor its vectors reused) after the code changes."""
    conf = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("epochs", "cpu_threads")}
    return digest_strings(
        json.dumps(conf, sort_keys=True), corpus_digest(documents), init_id, _module_source_digest()
    )


@functools.cache
def _module_source_digest() -> str:
    return file_digest(__file__)[:16]


def _encoder_for(words: Sequence[str], cfg: SkipThoughtConfig) -> SkipThoughtEncoder:
    """A fresh encoder over ``words`` with the sizes and switches of ``cfg``."""
    return SkipThoughtEncoder(
        list(words),
        mode=cfg.mode,
        word_dim=cfg.word_dim,
        uni_dim=cfg.uni_dim,
        bi_dim=cfg.bi_dim,
        normalize=cfg.normalize,
        use_eos=cfg.use_eos,
    )


def _init_tables(enc: SkipThoughtEncoder, vectors: Any) -> int:
    hits = 0
    with torch.no_grad():
        for part in enc.parts():
            if part.embed.embedding_dim != vectors.vector_size:
                return 0
            for i, w in enumerate(enc.words):
                if w in vectors.key_to_index:
                    part.embed.weight[i] = torch.tensor(np.array(vectors[w]), dtype=torch.float32)
                    hits += 1
    return hits // max(len(enc.parts()), 1)


def train_skipthought(
    documents: Sequence[Sequence[Sequence[str]]],
    cfg: SkipThoughtConfig,
    *,
    checkpoint_dir: str | os.PathLike[str],
    init_vectors: Any | None = None,
    init_vectors_id: str = "",
    device: str | torch.device | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, int, float], None] | None = None,
) -> tuple[SkipThoughtEncoder, dict[str, Any]]:
    """Train an encoder on ordered ``documents`` (each a list of token lists); resumable.

    Returns the encoder (in eval mode, on CPU) and a record with the run id, the checkpoint
    path, the per-epoch mean loss per target token and the epoch it resumed from.
    ``on_epoch(epoch, epochs, loss)`` runs after each epoch's checkpoint (``epoch`` 1-based;
    a resumed run starts after its checkpoint's epoch): a progress hook for any UI.
    """
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    before = torch.get_num_threads()
    if dev.type == "cpu" and cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    try:
        return _train(documents, cfg, checkpoint_dir, init_vectors, init_vectors_id, dev, progress,
                      on_epoch)
    finally:
        torch.set_num_threads(before)


def _train(
    documents: Sequence[Sequence[Sequence[str]]],
    cfg: SkipThoughtConfig,
    checkpoint_dir: str | os.PathLike[str],
    init_vectors: Any | None,
    init_vectors_id: str,
    dev: torch.device,
    progress: bool,
    on_epoch: Callable[[int, int, float], None] | None = None,
) -> tuple[SkipThoughtEncoder, dict[str, Any]]:
    triples = training_triples(documents)
    if not triples:
        raise ValueError(
            "cannot train skip-thought: no document has two or more sentences (each video's "
            "queries, ordered by start time, form one document); pass released parameters instead"
        )
    use_init = cfg.init_from_word_vectors and init_vectors is not None
    run_id = skipthought_run_id(cfg, documents, init_vectors_id if use_init else "")
    ckpt_path = Path(checkpoint_dir) / f"skipthought-{run_id}.pt"

    torch.manual_seed(cfg.seed)
    words = build_training_vocab(documents, cfg.vocab_size)
    enc = _encoder_for(words, cfg)
    init_hits = _init_tables(enc, init_vectors) if use_init else 0
    objectives = nn.ModuleList(SkipThoughtObjective(p, len(words)) for p in enc.parts()).to(dev)
    optim = torch.optim.Adam(objectives.parameters(), lr=cfg.lr)
    losses: list[float] = []
    start_epoch = 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=dev, weights_only=True)
        if state.get("words") != words:
            raise ValueError(
                f"{ckpt_path}: checkpoint vocabulary differs from this corpus; delete it"
            )
        objectives.load_state_dict(state["objectives"])
        optim.load_state_dict(state["optimizer"])
        losses = list(state["losses"])
        start_epoch = int(state["epoch"])
        init_hits = int(state.get("init_hits", init_hits))
        logger.info("resuming skip-thought run %s at epoch %d (%s)", run_id, start_epoch, ckpt_path)

    seqs = [[enc.token_ids(s[: cfg.max_len]) for s in doc] for doc in documents]
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(start_epoch):  # replay the shuffles so a resumed run sees the same order
        torch.randperm(len(triples), generator=gen)
    n_batches = math.ceil(len(triples) / cfg.batch_size)
    objectives.train()
    for epoch in range(start_epoch, cfg.epochs):
        order = torch.randperm(len(triples), generator=gen).tolist()
        total, count = 0.0, 0
        bar = tqdm(
            range(n_batches),
            desc=f"skip-thought epoch {epoch + 1}/{cfg.epochs}",
            disable=not progress,
        )
        for b in bar:
            chunk = [triples[j] for j in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
            cur, cur_len = pad_batch([seqs[d][i] for d, _, i, _ in chunk], dev)
            prev, _ = pad_batch([seqs[d][p] if p >= 0 else [] for d, p, _, _ in chunk], dev)
            nxt, _ = pad_batch([seqs[d][n] if n >= 0 else [] for d, _, _, n in chunk], dev)
            optim.zero_grad(set_to_none=True)
            loss = cur.new_zeros((), dtype=torch.float32)
            n_tok = 0
            for obj in objectives:
                part_loss, n = obj(cur, cur_len, prev, nxt)
                loss = loss + part_loss
                n_tok += n
            (loss / max(n_tok, 1)).backward()
            nn.utils.clip_grad_norm_(objectives.parameters(), cfg.grad_clip)
            optim.step()
            total += float(loss.detach())
            count += n_tok
            bar.set_postfix(loss=f"{total / max(count, 1):.3f}")
        losses.append(total / max(count, 1))
        logger.info(
            "skip-thought epoch %d/%d: loss %.4f per token", epoch + 1, cfg.epochs, losses[-1]
        )
        buf = io.BytesIO()
        torch.save(
            {
                "run_id": run_id,
                "config": dataclasses.asdict(cfg),
                "words": words,
                "epoch": epoch + 1,
                "objectives": objectives.state_dict(),
                "optimizer": optim.state_dict(),
                "losses": losses,
                "init_hits": init_hits,
                "encoder": {k: v.cpu() for k, v in enc.state_dict().items()},
            },
            buf,
        )
        with atomic_open(ckpt_path, "wb") as fh:
            fh.write(buf.getvalue())
        if on_epoch is not None:
            on_epoch(epoch + 1, cfg.epochs, losses[-1])

    enc = enc.cpu().eval()
    record = {
        "kind": "trained",
        "run_id": run_id,
        "checkpoint": str(ckpt_path),
        "epochs": len(losses),
        "resumed_from_epoch": start_epoch,
        "losses": losses,
        "triples": len(triples),
        "documents": len(documents),
        "corpus_digest": corpus_digest(documents),
        "init_vectors": init_vectors_id if use_init else None,
        "init_table_rows": init_hits,
        **enc.config_dict(),
    }
    return enc, record


def load_skipthought_checkpoint(path: str | os.PathLike[str]) -> tuple[SkipThoughtEncoder, dict[str, Any]]:
    """An encoder from a checkpoint written by :func:`train_skipthought`."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"skip-thought checkpoint {str(p)!r} not found; train one with --skipthought train"
        )
    state = torch.load(p, map_location="cpu", weights_only=True)
    if "encoder" not in state or "words" not in state:
        raise ValueError(f"{p}: not a skip-thought checkpoint written by mktn (no encoder/words)")
    cfg = SkipThoughtConfig(**state["config"])
    enc = _encoder_for(state["words"], cfg)
    enc.load_state_dict(state["encoder"])
    record = {
        "kind": "checkpoint",
        "checkpoint": str(p.resolve()),
        "weights_digest": file_digest(p),
        "run_id": state.get("run_id"),
        "epochs_trained": state.get("epoch"),
        **enc.config_dict(),
    }
    return enc.eval(), record


# the name this function had (deprecated, kept): it read like model.checkpoint.load_checkpoint
load_checkpoint = load_skipthought_checkpoint
