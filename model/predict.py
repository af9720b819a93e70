"""Ground sentences in a new video with a trained checkpoint: decode, features, embedding, model.

Everything comes from what the checkpoint recorded at training time:

- features: the extractor settings of the feature group (backbone, layer, patch grid,
  weights tag, sampling) -> ``pipeline.extract.extract_one`` into a temporary store;
  a checkpoint trained on features from a local weights file needs that file again
  (``weights=``; its sha256 must match the recorded tag). The config is rebuilt by the
  writer's inverse, ``ExtractionConfig.from_feature_config``;
- normalisation: the statistics stored in the checkpoint;
- words and sentences: ``pipeline.embed.QueryEmbedder``, the inverse of the query group's
  attributes: the recorded tokenizer settings, the word vectors of the dataset vocabulary
  carried in the checkpoint (``text.words/vectors``; a word outside it comes from the
  recorded GloVe file when it is still on disk, else gets the seeded out-of-vocabulary
  vector the embedder would have given it: ``WordVectors.from_table``), and the skip-thought
  encoder the query group recorded with the same vocabulary expansion
  (``sentence_encoder_from_attrs``; ``skipthought=`` overrides the path).
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
from model.timeline import QueryTimeline, VideoTimeline, timeline_png
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
    """The ``ExtractionConfig`` that reproduces a feature group's settings (deprecated name:
    ``pipeline.extract.ExtractionConfig.from_feature_config`` is the inverse builder)."""
    from pipeline.extract import ExtractionConfig

    return ExtractionConfig.from_feature_config(feature_attrs, weights=weights, dataset="predict", device=device)


def extract_video(path: str | os.PathLike[str], feature_attrs: dict[str, Any], *, weights: str | None = None,
                  device: str = "auto") -> VideoInput:
    """Decode ``path`` and compute its features exactly as the training features were computed."""
    from pipeline.extract import extract_one
    from storage.features import FeatureStore

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"video {str(p)!r} does not exist")
    from pipeline.extract import ExtractionConfig

    config = ExtractionConfig.from_feature_config(feature_attrs, weights=weights, dataset="predict", device=device)
    with tempfile.TemporaryDirectory(prefix="mktn-predict-") as tmp:
        store = FeatureStore(Path(tmp) / "features")
        result = extract_one(p, store, config, video_id="video")
        if result.status != "done":
            raise ValueError(f"cannot extract features from {str(p)!r}: {result.reason}")
        group = store.group("predict", config.resolved_extractor_id(), create=False)
        f = group.read_video("video", dtype="float32")
        duration = float(f.attrs.get("duration") or f.clip_times[-1, 1])
    return VideoInput("video", f.frames, f.patches, f.clip_times, duration)


class SentenceEmbedder:
    """Tokens, word vectors and skip-thought vectors for new sentences, as the query store made
    them: ``pipeline.embed.QueryEmbedder`` (the inverse of ``embed_queries``' attributes) over
    the word-vector table the checkpoint carries (``ckpt["text"]``)."""

    def __init__(self, query_attrs: dict[str, Any], text: dict[str, Any] | None, *,
                 skipthought: str | None = None) -> None:
        if text is None:
            raise ValueError("the checkpoint carries no word-vector table (it was trained from in-memory "
                             "data, not from a query store); retrain with `mktn train`")
        from pipeline.embed import QueryEmbedder

        self.inner = QueryEmbedder(query_attrs, list(text["words"]), text["vectors"].float().numpy(),
                                   skipthought=skipthought)

    def tokens(self, sentence: str, index: int) -> list[str]:
        return self.inner.tokens(sentence, index)

    def word_vectors(self, tokens: Sequence[str]) -> np.ndarray:
        return self.inner.word_vectors(tokens)

    def encoder(self) -> Any:
        return self.inner.encoder()

    def embed(self, sentences: Sequence[str]) -> list[QueryInput]:
        return [QueryInput(f"q{i}", words, sentence)
                for i, (_, words, sentence) in enumerate(self.inner.embed(sentences))]


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


def grounding_timeline(result: GroundingResult) -> VideoTimeline:
    """The result as a ``model.timeline.VideoTimeline`` (no ground truth: a new video)."""
    queries = [QueryTimeline(q, [(float(a), float(b)) for a, b in spans], [float(x) for x in scores],
                             None, f"query {i + 1}")
               for i, (q, spans, scores) in enumerate(zip(result.queries, result.spans, result.scores,
                                                          strict=True))]
    path = result.video if Path(result.video).is_file() else None
    return VideoTimeline(Path(result.video).name, float(result.duration), queries, path,
                         "" if path else "the video file is no longer on disk")


def plot_grounding(result: GroundingResult, path: str | os.PathLike[str]) -> None:
    """The video's timeline with each query's top spans under a strip of its frames
    (``model.timeline``: rank 1 solid, ranks 2-5 thin bars below it)."""
    from storage.atomic import atomic_write_bytes

    png = timeline_png([grounding_timeline(result)], title=f"{Path(result.video).name}: predicted moments")
    if png is not None:
        atomic_write_bytes(path, png)


def write_grounding_html(result: GroundingResult, path: str | os.PathLike[str]) -> None:
    """The HTML view of the result (``model.html_report.write_video_page``): the video's player and
    each query's ranked spans on a timeline; clicking a span plays the video from its start."""
    from model.html_report import write_video_page

    timeline = grounding_timeline(result)
    figure = timeline_png([timeline], title=f"{Path(result.video).name}: predicted moments")
    write_video_page(path, title=f"Predicted moments in {Path(result.video).name}", videos=[timeline],
                     figures=[("timeline with thumbnails", figure)] if figure else [])
