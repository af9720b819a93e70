"""Model inputs: standardisation, resampling, targets, groups, batches, sampler, the store loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_fixtures import planted_data, write_stores

from model.data import (
    GroundingData,
    GroupSampler,
    NormStats,
    QueryInput,
    Splice,
    VideoInput,
    collate,
    drop_words,
    iterate_batches,
    make_groups,
    prepare,
    prepare_video,
)
from model.loader import annotation_paths, load_grounding_data, load_records
from pipeline.datasets.records import QueryMoment


def _norm(d: int) -> NormStats:
    return NormStats(np.zeros(d, np.float32), np.ones(d, np.float32), np.zeros(d, np.float32), np.ones(d, np.float32))


def test_prepare_video_pools_and_pads():
    t, d = 10, 3
    frames = np.arange(t * d, dtype=np.float32).reshape(t, d)
    patches = np.repeat(frames[:, None], 2, axis=1)
    times = np.stack([np.arange(t), np.arange(t) + 1.0], 1)
    v = VideoInput("v", frames, patches, times, 10.0)
    pooled = prepare_video(v, _norm(d), 5)
    assert pooled.valid == 5
    assert torch.allclose(pooled.frames[0], torch.tensor(frames[:2].mean(0)))
    assert pooled.clip_times.tolist()[0] == [0.0, 2.0] and pooled.clip_times.tolist()[-1] == [8.0, 10.0]
    padded = prepare_video(v, _norm(d), 16)
    assert padded.valid == 10 and float(padded.frames[10:].abs().sum()) == 0.0
    shifted = NormStats(np.full(d, 5.0, np.float32), np.full(d, 2.0, np.float32), np.zeros(d, np.float32),
                        np.ones(d, np.float32))
    assert torch.allclose(prepare_video(v, shifted, 16).frames[0], torch.tensor((frames[0] - 5.0) / 2.0))
    bad = VideoInput("broken", frames, patches, times[::-1].copy(), 10.0)
    with pytest.raises(ValueError, match="'broken'.*increasing time order"):
        prepare_video(bad, _norm(d), 16)


def test_targets_and_skipped_records():
    data = planted_data(num_videos=3, queries_per_video=2, clips=12, dim=4)
    rec = data.records[0]
    data.records.append(QueryMoment("lost", "no-such-video", "x", 0.0, 1.0, 5.0, "train"))
    data.records.append(QueryMoment("noq", rec.video_id, "x", 0.0, 1.0, rec.duration, "train"))
    prepared, norm = prepare(data, 32, 32)
    assert prepared.skipped == {"video features missing": 1, "query features missing": 1}
    pq = prepared.queries[rec.query_id]
    assert pq.start_idx == int(rec.start) and pq.start_frac == pytest.approx(rec.start - int(rec.start))
    assert pq.end_idx + pq.end_frac == pytest.approx(rec.end)
    train = [v for v in data.videos.values() if any(r.video_id == v.video_id and r.split == "train"
                                                    for r in data.records)]
    allf = np.concatenate([v.frames for v in train])
    assert np.allclose(norm.frame_mean, allf.mean(0), atol=1e-4)  # statistics from the train split


def test_groups_split_long_videos_and_single_pair():
    data = planted_data(num_videos=2, queries_per_video=7, clips=20, dim=4)
    prepared, _ = prepare(data, 32, 32)
    groups = make_groups(prepared, data.records, multi_pair=True, max_queries=3)
    assert [len(g.query_ids) for g in groups] == [2, 2, 3, 2, 2, 3]
    assert [q for g in groups[:3] for q in g.query_ids] == [f"vid000#{k}" for k in range(7)]
    single = make_groups(prepared, data.records, multi_pair=False, max_queries=3)
    assert len(single) == 14 and all(len(g.query_ids) == 1 for g in single)


def test_collate_shapes_and_same_video():
    data = planted_data(num_videos=3, queries_per_video=3, clips=20, dim=4, sentence_dim=6)
    prepared, _ = prepare(data, 16, 32)
    groups = make_groups(prepared, data.records, multi_pair=True, max_queries=2)  # vid000 -> 2 groups
    b = collate(prepared, groups[:3])
    assert b.video_ids == ["vid000", "vid000", "vid001"]
    assert b.frames.shape == (3, 16, 4) and b.patches.shape == (3, 16, 4, 4)
    assert b.words.shape[0] == b.num_queries == 1 + 2 + 1 and b.sentence.shape == (4, 6)  # chunks of 1, 2
    assert b.group_index.tolist() == [[0, -1], [1, 2], [3, -1]]
    assert b.query_video.tolist() == [0, 1, 1, 2] and b.query_order.tolist() == [0, 1, 2, 0]
    assert b.same_video[0].tolist() == [True, True, False]  # the other item shows the same video
    assert bool((b.span_norm[:, 1] >= b.span_norm[:, 0]).all())


def test_splice_puts_other_clips_beside_and_moves_targets():
    data = planted_data(num_videos=3, queries_per_video=2, clips=10, dim=4)
    prepared, _ = prepare(data, 16, 32)
    groups = make_groups(prepared, data.records, multi_pair=True, max_queries=4)[:2]
    own = collate(prepared, groups)
    crops = [(0, 10), (0, 10)]
    sp = [Splice("vid002", 3, 5, before=True), Splice("vid002", 0, 6, before=False)]
    b = collate(prepared, groups, crops, sp)
    other = prepared.videos["vid002"].frames
    assert torch.equal(b.frames[0, :5], other[3:8]) and torch.equal(b.frames[0, 5:15], own.frames[0, :10])
    assert torch.equal(b.frames[1, :10], own.frames[1, :10]) and torch.equal(b.frames[1, 10:16], other[:6])
    assert b.video_mask.sum(1).tolist() == [15, 16]
    q0 = [k for k, v in enumerate(b.query_video.tolist()) if v == 0]
    q1 = [k for k, v in enumerate(b.query_video.tolist()) if v == 1]
    # the moments move with their clips (item 0: 5 clips later) and stay in place after
    assert (b.start_idx[q0] == own.start_idx[q0] + 5).all() and (b.end_idx[q0] == own.end_idx[q0] + 5).all()
    assert torch.equal(b.start_idx[q1], own.start_idx[q1])
    # normalised spans are over the longer sequence
    ref = (own.start_idx[q0] + 5 + own.start_frac[q0]) / 15
    assert torch.allclose(b.span_norm[q0, 0], ref)
    with pytest.raises(ValueError, match="does not fit"):
        collate(prepared, groups, crops, [Splice("vid002", 0, 7, before=True), None])


def test_splice_draws_only_other_training_videos_and_is_seeded():
    data = planted_data(num_videos=6, queries_per_video=2, clips=10, dim=4)
    prepared, _ = prepare(data, 16, 32)
    train = [r for r in data.records if r.video_id in {"vid000", "vid001", "vid002", "vid003"}]
    groups = make_groups(prepared, train, multi_pair=True, max_queries=4)
    sampler = GroupSampler(groups, 2, seed=1)
    runs = [list(iterate_batches(prepared, sampler, 0, splice_probability=1.0)) for _ in range(2)]
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a.frames, b.frames) and torch.equal(a.start_idx, b.start_idx)
    pool = ("vid000", "vid001", "vid002", "vid003")
    train_frames = {v: prepared.videos[v].frames[:prepared.videos[v].valid] for v in pool}
    for batch in runs[0]:
        for i, vid in enumerate(batch.video_ids):
            own, length = prepared.videos[vid].valid, int(batch.video_mask[i].sum())
            assert length > own  # every item got a stretch (no crop here: its own clips are whole)
            extra = [batch.frames[i, :length - own], batch.frames[i, own:length]]
            sources = [v for v, f in train_frames.items() if v not in batch.video_ids
                       and any(torch.equal(x, f[k:k + len(x)]) for x in extra
                               for k in range(0, len(f) - len(x) + 1))]
            assert sources, f"item {vid}: spliced clips come from no other training video"


def test_word_dropout_keeps_one_word_per_query():
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    rng = np.random.default_rng(0)
    for _ in range(20):
        kept = drop_words(mask, rng, 0.9)
        assert bool((kept <= mask).all()) and bool(kept.any(dim=1).all())
    assert torch.equal(drop_words(mask, rng, 0.0), mask)


def test_sampler_seeded_and_sharded():
    groups = list(range(23))
    s = GroupSampler(groups, 4, seed=3)  # type: ignore[arg-type]
    assert s.batches(0) == GroupSampler(groups, 4, seed=3).batches(0)  # type: ignore[arg-type]
    assert s.batches(0) != s.batches(1)
    assert sorted(x for b in s.batches(2) for x in b) == groups
    shards = [GroupSampler(groups, 4, seed=3, rank=r, world_size=2).batches(0) for r in range(2)]  # type: ignore[arg-type]
    assert sorted(x for sh in shards for b in sh for x in b) == groups
    assert not set(x for b in shards[0] for x in b) & set(x for b in shards[1] for x in b)


def test_loader_reads_stores(tmp_path):
    data = planted_data(num_videos=8, queries_per_video=2, clips=10, dim=6, sentence_dim=8)
    features, queries, ann = write_stores(data, tmp_path, skip=("vid003",))  # never extracted
    assert set(annotation_paths([str(ann)])) == {"train", "val", "test"}
    assert set(annotation_paths([f"dev={ann / 'val.jsonl'}"])) == {"dev"}
    records = load_records([str(ann)])
    assert len(records) == len(data.records)
    loaded = load_grounding_data(features, queries, records, show_progress=False)
    assert sorted(loaded.videos) == sorted(set(data.videos) - {"vid003"})
    q0 = data.records[0].query_id
    assert np.allclose(loaded.queries[q0].words, data.queries[q0].words)
    v0 = data.records[0].video_id
    assert np.allclose(loaded.videos[v0].frames, data.videos[v0].frames, atol=1e-2)  # float16 store
    # the store's statistics (all committed videos) are not used: prepare fits the train split's
    assert loaded.norm is None and loaded.meta["features"]["extractor_id"] == "tiny3d@test"
    assert loaded.meta["queries"]["encoder_id"] == "enc1"
    prepared, _ = prepare(loaded, 16, 32)
    assert prepared.skipped == {"video features missing": 1}
    assert isinstance(loaded, GroundingData) and isinstance(next(iter(loaded.queries.values())), QueryInput)
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        annotation_paths([str(tmp_path / "no-such-dir")])


def test_norm_stats_cover_the_train_split_and_say_so(tmp_path, caplog):
    """One policy: the video statistics are fitted over the train split's videos (the
    store's all-videos attribute is ignored), with Normalization.fit, and the choice is logged."""
    import logging
    from dataclasses import replace

    from storage.features import FeatureStore, Normalization

    data = planted_data(num_videos=8, queries_per_video=2, clips=10, dim=6, sentence_dim=8)
    train = sorted({r.video_id for r in data.split("train")})
    assert 0 < len(train) < len(data.videos)
    with caplog.at_level(logging.INFO, logger="model.data"):
        _, norm = prepare(data, 16, 32)
    assert f"the {len(train)} videos of the 'train' split" in caplog.text
    assert isinstance(norm, Normalization) and norm.num_videos == len(train)
    ref = Normalization.fit((data.videos[v].frames, data.videos[v].patches) for v in train)
    np.testing.assert_allclose(norm.frames_mean, ref.frames_mean, rtol=1e-6)
    np.testing.assert_allclose(norm.frame_std, ref.frames_std, rtol=1e-6)  # the old name still reads
    # through the stores: the group's statistics (every committed video) differ and are not used
    features, queries, ann = write_stores(data, tmp_path)
    group = FeatureStore(features).select_group()
    assert group.normalization() is not None and group.normalization().num_videos == len(data.videos)
    loaded = load_grounding_data(features, queries, load_records([str(ann)]), show_progress=False)
    _, from_store = prepare(loaded, 16, 32)
    assert from_store.num_videos == len(train)
    np.testing.assert_allclose(from_store.frames_mean, ref.frames_mean, atol=1e-2)  # float16 store
    # no train split: all videos, with a warning
    caplog.clear()
    evaluation_only = replace(data, records=[replace(r, split="test") for r in data.records])
    with caplog.at_level(logging.INFO, logger="model.data"):
        _, norm_all = prepare(evaluation_only, 16, 32)
    assert norm_all.num_videos == len(data.videos) and "no 'train' split" in caplog.text
    # a checkpoint's "norm" entry keeps its key names and round-trips the counts
    d = norm.to_dict()
    assert "frame_mean" in d and d["num_videos"] == len(train)
    assert NormStats.from_dict(d).num_videos == len(train)
