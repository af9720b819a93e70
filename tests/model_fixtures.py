"""Small in-memory grounding datasets with a planted, learnable signal (for the model tests).

Each query names one of ``num_concepts`` concepts (its word vectors include the
concept's vector); its video shows that concept's pattern inside the moment.
A model that grounds well must read the words and find the pattern.
"""

from __future__ import annotations

import numpy as np

from model.data import GroundingData, QueryInput, VideoInput
from pipeline.datasets.records import QueryMoment


def planted_data(num_videos: int = 12, queries_per_video: int = 3, *, clips: int = 24, dim: int = 32,
                 patches: int = 4, word_dim: int = 300, sentence_dim: int = 48, num_concepts: int = 6,
                 seed: int = 0, splits: tuple[float, float] = (0.7, 0.15)) -> GroundingData:
    rng = np.random.default_rng(seed)
    concept_vis = rng.normal(size=(num_concepts, dim)) * 2.0
    concept_word = rng.normal(size=(num_concepts, word_dim))
    concept_sent = rng.normal(size=(num_concepts, sentence_dim))
    filler = rng.normal(size=(20, word_dim))
    videos, queries, records = {}, {}, []
    for v in range(num_videos):
        vid = f"vid{v:03d}"
        t = clips + int(rng.integers(-4, 5))
        duration = float(t)  # one clip per second
        frames = rng.normal(size=(t, dim)) + 5.0  # an offset: standardisation must remove it
        pat = rng.normal(size=(t, patches, dim)) + 5.0
        split = "train" if v < splits[0] * num_videos else ("val" if v < sum(splits) * num_videos else "test")
        for k in range(queries_per_video):
            c = int(rng.integers(num_concepts))
            s = int(rng.integers(0, t - 4))
            e = int(rng.integers(s + 2, min(t, s + 10) + 1))
            frames[s:e] += concept_vis[c]
            pat[s:e, k % patches] += concept_vis[c]
            qid = f"{vid}#{k}"
            n = int(rng.integers(4, 9))
            words = filler[rng.integers(0, len(filler), size=n)].copy()
            words[int(rng.integers(n))] = concept_word[c]
            queries[qid] = QueryInput(qid, words.astype(np.float32),
                                      (concept_sent[c] + 0.1 * rng.normal(size=sentence_dim)).astype(np.float32))
            records.append(QueryMoment(qid, vid, f"concept {c}", float(s) + 0.25, float(e) - 0.25,
                                       duration, split))
        clip_times = np.stack([np.arange(t), np.arange(t) + 1.0], axis=1)
        videos[vid] = VideoInput(vid, frames.astype(np.float32), pat.astype(np.float32), clip_times, duration)
    return GroundingData(videos, queries, records)


def write_stores(data: GroundingData, root, *, dataset: str = "synthetic", skip: tuple[str, ...] = ()):
    """Write ``data`` into a real feature store, query store and JSONL annotation directory under
    ``root``; the videos in ``skip`` are left unextracted. -> (features, queries, annotations)."""
    import json
    from pathlib import Path

    from storage.features import FeatureStore
    from storage.queries import QueryStore

    root = Path(root)
    group = FeatureStore(root / "features").extractor(dataset, "tiny3d@test")
    for vid in sorted(set(data.videos) - set(skip)):
        v = data.videos[vid]
        group.write_video(vid, v.frames, v.patches, v.clip_times, {})
    group.compute_normalization()
    qs = QueryStore(root / "queries")
    ids = [r.query_id for r in data.records]
    qs.encoder(dataset, "enc1").write(ids, [["w"] * len(data.queries[q].words) for q in ids],
                                      [data.queries[q].words for q in ids],
                                      np.stack([data.queries[q].sentence for q in ids]), {"glove": "test"})
    qs.set_latest(dataset, "enc1")
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    for split in sorted({r.split for r in data.records}):
        with (ann / f"{split}.jsonl").open("w") as fh:
            for r in data.records:
                if r.split == split:
                    fh.write(json.dumps({"qid": r.query_id, "vid": r.video_id, "query": r.sentence,
                                         "duration": r.duration, "relevant_windows": [[r.start, r.end]]}) + "\n")
    return root / "features", root / "queries", ann
