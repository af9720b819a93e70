"""Measured cross-modal alignment of a trained model's global embeddings.

``mutual_knn``: for every video, its k nearest videos in the *video* embedding space
and its k nearest videos in the *text* space (a video's text embedding is the mean of
its queries' embeddings); the score is the mean overlap of the two sets divided by k
(1 = the two modalities organise the videos identically, k/(V-1) = chance).
``retrieval_r1``: the fraction of queries whose nearest video is their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pipeline.datasets.records import QueryMoment


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def alignment_scores(video_embed: Mapping[str, np.ndarray], query_embed: Mapping[str, np.ndarray],
                     records: Sequence[QueryMoment], k: int = 5) -> dict[str, float]:
    """``{"mutual_knn": ..., "retrieval_r1": ..., "chance_knn": ..., "k": k}`` over ``records``' videos."""
    recs = [r for r in records if r.query_id in query_embed and r.video_id in video_embed]
    vids = sorted({r.video_id for r in recs})
    if len(vids) < 3:
        raise ValueError(f"alignment needs at least 3 videos with embeddings, got {len(vids)}")
    k = min(k, len(vids) - 1)
    index = {v: i for i, v in enumerate(vids)}
    v = _unit(np.stack([video_embed[x] for x in vids]))
    t = np.zeros_like(v)
    for r in recs:
        t[index[r.video_id]] += query_embed[r.query_id]
    t = _unit(t)

    def knn(x: np.ndarray) -> np.ndarray:
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        return np.argsort(-sim, axis=1, kind="stable")[:, :k]

    nv, nt = knn(v), knn(t)
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(nv, nt, strict=True)])
    q = _unit(np.stack([query_embed[r.query_id] for r in recs]))
    own = np.array([index[r.video_id] for r in recs])
    r1 = float(np.mean((q @ v.T).argmax(axis=1) == own))
    return {"mutual_knn": float(overlap), "retrieval_r1": r1, "chance_knn": k / (len(vids) - 1), "k": k}
