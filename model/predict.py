"""Ground sentences in a new video with a trained checkpoint: decode, features, embedding, model.

Everything comes from what the checkpoint recorded at training time:

- features: the extractor settings of the feature group (backbone, layer, patch grid,
  weights tag, sampling) -> ``pipeline.extract.extract_one`` into a temporary store;
  a checkpoint trained on features from a local weights file needs that file again
  (``weights=``; its sha256 must match the recorded tag);
- normalisation: the statistics stored in the checkpoint;
- words: the tokenizer settings of the query group (``pipeline.text``), then the word
  vectors of the dataset vocabulary carried in the checkpoint (``text.words/vectors``);
  a word outside it comes from the recorded GloVe file when it is still on disk, else
  gets the seeded out-of-vocabulary vector the embedder would have given it;
- sentences: the skip-thought encoder the query group recorded (its checkpoint file or
  release directory; ``skipthought=`` overrides the path), with the same vocabulary
  expansion as ``pipeline.embed``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import model_from_checkpoint
from model.data import GroundingData, QueryInput, VideoInput, collate, make_groups, prepare
from model.evaluate import decode_outputs, decoded_outputs
from pipeline.datasets.records import QueryMoment

log = logging.getLogger(__name__)


@dataclass
class GroundingResult:
    video: str
    duration: float
    queries: list[str]
    spans: list[list[list[float]]]  # per query: [[start, end], ...] seconds, best first
    scores: list[list[float]]
    clip_times: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"video": self.video, "duration": self.duration,
                "predictions": [{"query": q, "spans": s, "scores": c}
                                for q, s, c in zip(self.queries, self.spans, self.scores, strict=True)]}


def extraction_config(feature_attrs: dict[str, Any], weights: str | None = None, device: str = "auto") -> Any:
    """The ``ExtractionConfig`` that reproduces a feature group's settings."""
    from pipeline.backbones import weights_tag
    from pipeline.extract import ExtractionConfig

    need = ("backbone", "layer", "grid", "weights", "sampling")
    missing = [k for k in need if k not in feature_attrs]
    if missing:
        raise ValueError(f"the checkpoint's feature provenance lacks {missing}; it was not trained on a store "
                         "written by `mktn extract`, so predict cannot re-extract features")
    tag = str(feature_attrs["weights"])  # "random-init seed=N" or "sha256:<digest>" (weights_tag)
    seed = 0
    if tag.startswith("random"):
        seed = int(tag.rsplit("=", 1)[-1]) if "=" in tag else int(tag.removeprefix("random") or 0)
        if weights is not None:
            raise ValueError(f"the features used seeded random weights ({tag}); do not pass --weights")
    else:
        if weights is None:
            raise FileNotFoundError(f"the features were extracted with a local weights file ({tag}); "
                                    "pass it again with --weights PATH")
        _, got = weights_tag(weights, 0)
        if got != tag:
            raise ValueError(f"--weights {weights!r} is {got}, the checkpoint's features used {tag}")
    s = feature_attrs["sampling"]
    return ExtractionConfig(backbone=feature_attrs["backbone"], layer=feature_attrs["layer"],
                            grid=int(feature_attrs["grid"]), weights=weights, seed=seed, fps=float(s["fps"]),
                            clip_len=int(s["clip_len"]), stride=int(s["stride"]), resize=int(s["resize"]),
                            crop=int(s["crop"]), geometry=str(s.get("geometry", "crop")),
                            dtype=feature_attrs.get("dtype", "float16"),
                            dataset="predict", device=device)


def extract_video(path: str | os.PathLike[str], feature_attrs: dict[str, Any], *, weights: str | None = None,
                  device: str = "auto") -> VideoInput:
    """Decode ``path`` and compute its features exactly as the training features were computed."""
    from pipeline.extract import extract_one
    from storage.features import FeatureStore

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"video {str(p)!r} does not exist")
    config = extraction_config(feature_attrs, weights, device)
    with tempfile.TemporaryDirectory(prefix="mktn-predict-") as tmp:
        store = FeatureStore(Path(tmp) / "features")
        result = extract_one(p, store, config, video_id="video")
        if result.status != "done":
            raise ValueError(f"cannot extract features from {str(p)!r}: {result.reason}")
        group = store.extractor("predict", config.resolved_extractor_id(), create=False)
        f = group.read_video("video", dtype="float32")
        duration = float(f.attrs.get("duration") or f.clip_times[-1, 1])
    return VideoInput("video", f.frames, f.patches, f.clip_times, duration)


class SentenceEmbedder:
    """Tokens, word vectors and skip-thought vectors for new sentences, as the query store made them."""

    def __init__(self, query_attrs: dict[str, Any], text: dict[str, Any] | None, *,
                 skipthought: str | None = None) -> None:
        from pipeline.text import TextConfig, build_tokenizer

        self.attrs = query_attrs
        self.text_cfg = TextConfig(**query_attrs.get("text", {}))
        self.tokenizer = build_tokenizer(self.text_cfg)
        if text is None:
            raise ValueError("the checkpoint carries no word-vector table (it was trained from in-memory "
                             "data, not from a query store); retrain with `mktn train`")
        self.table = {w: np.asarray(v, np.float32) for w, v in zip(text["words"], text["vectors"].float().numpy(),
                                                                    strict=True)}
        self.dim = len(next(iter(self.table.values())))
        self.source = dict(query_attrs.get("word_vectors", {}))
        self.skipthought_path = skipthought
        self._encoder: Any = None

    def tokens(self, sentence: str, index: int) -> list[str]:
        toks = self.tokenizer.tokenize(sentence, query_id=f"query {index}")
        return toks[: self.text_cfg.max_len]

    def word_vectors(self, tokens: Sequence[str]) -> np.ndarray:
        from pipeline.glove import load_subset

        missing = sorted({t for t in tokens if t not in self.table})
        if missing and self.source.get("kind") == "file" and Path(str(self.source.get("path"))).is_file():
            kv, _ = load_subset(self.source["path"], missing, progress=False)
            for w in missing:
                if w in kv.key_to_index:
                    self.table[w] = np.asarray(kv[w], np.float32)
        out = np.empty((len(tokens), self.dim), np.float32)
        for i, t in enumerate(tokens):
            out[i] = self.table[t] if t in self.table else self._oov(t)
        return out

    def _oov(self, word: str) -> np.ndarray:
        from pipeline.glove import oov_vector

        return oov_vector(word, self.dim, mode=str(self.source.get("oov", "random")),
                          sigma=float(self.source.get("oov_sigma", 0.1)), seed=int(self.source.get("oov_seed", 0)))

    def encoder(self) -> Any:
        if self._encoder is not None:
            return self._encoder
        from pipeline.skipthought import load_checkpoint, load_theano_skipthoughts

        info = dict(self.attrs.get("sentence_encoder", {}))
        path = self.skipthought_path or info.get("checkpoint") or info.get("directory")
        if not path:
            raise ValueError(f"the query store recorded no skip-thought weights ({info.get('kind')!r}); "
                             "pass --skipthought PATH")
        if not Path(path).exists():
            raise FileNotFoundError(f"skip-thought weights {path!r} (recorded by `mktn embed`) are gone; "
                                    "pass --skipthought PATH to where they are now")
        if Path(path).is_dir():
            enc, _ = load_theano_skipthoughts(path, mode=info.get("mode", "combine"), vocab=list(self.table))
        else:
            enc, _ = load_checkpoint(path)
        if "vocab_expansion" in info:
            from gensim.models import KeyedVectors

            # expand with the words that had real vectors, as `mktn embed` did: its OOV words
            # (seeded random vectors, recognisable by value) stayed unknown to the encoder
            known = [w for w, v in self.table.items() if not np.allclose(v, self._oov(w), atol=1e-2)]
            if known:
                kv = KeyedVectors(self.dim)
                kv.add_vectors(known, np.stack([self.table[w] for w in known]))
                enc.expand_vocabulary(kv, known)
        self._encoder = enc.eval()
        return self._encoder

    def embed(self, sentences: Sequence[str]) -> list[QueryInput]:
        toks = [self.tokens(s, i) for i, s in enumerate(sentences)]
        sent = self.encoder().encode(toks)
        return [QueryInput(f"q{i}", self.word_vectors(t), sent[i]) for i, t in enumerate(toks)]


def predict_video(checkpoint: str | os.PathLike[str], video: str | os.PathLike[str], sentences: Sequence[str],
                  *, device: str | None = None, weights: str | None = None, skipthought: str | None = None,
                  top_k: int = 5) -> GroundingResult:
    """Top-``top_k`` spans (seconds) for each sentence in ``video``."""
    if not sentences:
        raise ValueError("give at least one query sentence (--query TEXT)")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, ckpt, cfg, norm = model_from_checkpoint(checkpoint, dev)
    meta = ckpt.get("meta", {})
    v = extract_video(video, meta.get("features", {}).get("attrs", {}), weights=weights, device=str(dev))
    embedder = SentenceEmbedder(meta.get("queries", {}).get("attrs", {}), ckpt.get("text"), skipthought=skipthought)
    queries = embedder.embed(sentences)
    records = [QueryMoment(q.query_id, "video", s, 0.0, min(1.0, v.duration), v.duration, "predict")
               for q, s in zip(queries, sentences, strict=True)]
    data = GroundingData({"video": v}, {q.query_id: q for q in queries}, records, norm)
    prepared, _ = prepare(data, cfg.model.num_clips, cfg.model.max_words, norm=norm)
    spans: dict[str, list[list[float]]] = {}
    scores: dict[str, list[float]] = {}
    model.eval()
    with torch.inference_mode():
        # grouped as in training: single-pair checkpoints see one query at a time; the order of the
        # --query arguments is read only by query_order="annotation" models
        for group in make_groups(prepared, records, multi_pair=cfg.train.multi_pair,
                                 max_queries=cfg.model.max_queries_per_video,
                                 query_order=cfg.model.query_order):
            batch = collate(prepared, [group]).to(dev)
            out = decoded_outputs(model(batch, 1.0))
            for j, qid in enumerate(batch.query_ids):
                spans[qid], scores[qid] = decode_outputs(
                    out, j, prepared.videos["video"].clip_times, replace(cfg.eval, top_k=top_k))
    return GroundingResult(str(video), v.duration, list(sentences), [spans[q.query_id] for q in queries],
                           [scores[q.query_id] for q in queries], v.clip_times)


def plot_grounding(result: GroundingResult, path: str | os.PathLike[str]) -> None:
    """The video's timeline with each query's top spans (the best one solid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(result.queries)
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.6 * n))
    for i, (_q, spans, scores) in enumerate(zip(result.queries, result.spans, result.scores, strict=True)):
        y = n - 1 - i
        for rank, ((s, e), _sc) in enumerate(zip(spans, scores, strict=True)):
            ax.barh(y, e - s, left=s, height=0.5 if rank == 0 else 0.25,
                    color="tab:blue" if rank == 0 else "tab:gray", alpha=1.0 if rank == 0 else 0.4)
        if spans:
            ax.text(spans[0][1] + 0.01 * result.duration, y, f"{scores[0]:.2f}", va="center", fontsize=8)
    ax.set_yticks(range(n))
    ax.set_yticklabels([q if len(q) < 50 else q[:47] + "..." for q in reversed(result.queries)], fontsize=8)
    ax.set_xlim(0, result.duration)
    ax.set_xlabel("time (s)")
    ax.set_title(Path(result.video).name + ": predicted moments (best solid, next ranks grey)", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, out)
