"""Controls (issue 12): the order-aware prior, video swapping, order shuffling; query order as a
declared input; the evaluation faults found in review (decode top-k, single-pair groups,
clip_times mismatch, boundary targets on unequal windows, missing queries, no val split)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_fixtures import planted_data

from model.checkpoint import config_with_defaults_of_its_time
from model.config import MKTNConfig, override, preset
from model.controls import (
    compute_controls,
    controls_summary,
    derangement,
    resample_clips,
    shuffle_query_order,
    swap_videos,
)
from model.data import (
    GroupSampler,
    NormStats,
    VideoInput,
    collate,
    make_groups,
    prepare,
    prepare_video,
)
from model.evaluate import decode_query, evaluate_model
from model.metrics import evaluate_predictions
from model.mktn import build_model
from model.prior import (
    annotation_ranks,
    fit_order_prior,
    order_prior_baseline,
    order_prior_predictions,
)
from model.spans import clip_indices_to_span, span_to_clip_indices
from pipeline.datasets.records import QueryMoment

pytestmark = pytest.mark.usefixtures("one_thread")


class TextOnly(torch.nn.Module):
    """A 'model' that never looks at the video: the span comes from the sentence vector alone."""

    def __init__(self, read_video: bool = False) -> None:
        super().__init__()
        self.read_video = read_video
        self.batches: list[torch.Tensor] = []  # group_index of every batch it saw

    def forward(self, batch, progress: float = 1.0):
        self.batches.append(batch.group_index.clone())
        q, length = batch.sentence.shape[0], batch.frames.shape[1]
        pos = torch.arange(length, dtype=torch.float32)
        if self.read_video:  # the clip with the largest feature norm
            centre = batch.frames.norm(dim=-1).argmax(dim=1).float()[batch.query_video]
        else:
            centre = batch.sentence[:, 0].sigmoid() * 8
        mask = batch.video_mask[batch.query_video]
        start = (-(pos[None] - centre[:, None]).abs()).masked_fill(~mask, -1e4)
        end = (-(pos[None] - centre[:, None] - 3).abs()).masked_fill(~mask, -1e4)
        return {"start_logits": start * 4, "end_logits": end * 4, "float_offsets": torch.zeros(q, length, 2),
                "video_embed": torch.zeros(batch.frames.shape[0], 4), "query_embed": torch.zeros(q, 4)}


@pytest.fixture(scope="module")
def data():
    return planted_data(num_videos=20, queries_per_video=4, clips=16, dim=8, sentence_dim=8)


# ---------------------------------------------------------------- controls


def test_derangement_and_resampling():
    for n in (2, 3, 7, 30):
        p = derangement(n, seed=n)
        assert sorted(p.tolist()) == list(range(n)) and all(p[i] != i for i in range(n))
    assert derangement(9, 1).tolist() == derangement(9, 1).tolist()
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1)
    x = torch.arange(4.0)[:, None]
    assert resample_clips(x, 8)[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert resample_clips(x, 2)[:, 0].tolist() == [1, 3]  # the middle of each half


def test_swap_keeps_the_time_axis_and_changes_the_features(data):
    prepared, _ = prepare(data, 16, 32)
    test = data.split("test")
    vids = sorted({r.video_id for r in test})
    swapped, donors = swap_videos(prepared, vids, seed=0)
    assert set(donors) == set(vids) and all(d != v for v, d in donors.items())
    for v in vids:
        a, b = prepared.videos[v], swapped.videos[v]
        assert b.valid == a.valid and np.array_equal(b.clip_times, a.clip_times) and b.duration == a.duration
        assert not torch.equal(a.frames, b.frames)
        assert float(b.frames[b.valid:].abs().sum()) == 0.0  # padding stays padding
    other = next(v for v in prepared.videos if v not in vids)
    assert swapped.videos[other] is prepared.videos[other] and swapped.queries is prepared.queries


def test_a_model_that_ignores_the_video_scores_the_same_swapped(data):
    prepared, _ = prepare(data, 16, 32)
    test, train = data.split("test") + data.split("val"), data.split("train")
    blind = TextOnly()
    full = evaluate_model(blind, prepared, test).metrics
    ctrl = compute_controls(blind, prepared, test, train)
    assert list(ctrl) == ["prior", "order_prior", "video_swapped", "order_shuffled"]
    assert ctrl["video_swapped"] == full and ctrl["order_shuffled"] == full
    # a model that reads the video does not
    seeing = TextOnly(read_video=True)
    assert compute_controls(seeing, prepared, test, train)["video_swapped"] != evaluate_model(
        seeing, prepared, test).metrics
    sentence = controls_summary(full, ctrl)
    assert sentence.startswith("Of MKTN's R1@0.5") and "0.00 points need the video" in sentence


def _ordered_records(videos: int, split: str, rng: np.random.Generator) -> list[QueryMoment]:
    """Moments fully determined by (rank, count): the k-th of n queries covers [k/n, (k+1)/n]."""
    out = []
    for v in range(videos):
        n, d = int(rng.integers(1, 5)), float(rng.uniform(10, 40))
        out += [QueryMoment(f"{split}{v}#{k}", f"{split}v{v}", "q", d * k / n, d * (k + 1) / n, d, split)
                for k in range(n)]
    return out


def test_an_order_only_predictor_equals_the_order_aware_prior():
    rng = np.random.default_rng(0)
    train, test = _ordered_records(200, "train", rng), _ordered_records(40, "test", rng)
    ranks = annotation_ranks(test)
    oracle = [{"query_id": r.query_id, "video_id": r.video_id,
               "spans": [[r.duration * k / n, r.duration * (k + 1) / n]]}
              for r in test for k, n in [ranks[r.query_id]]]
    m_oracle = evaluate_predictions(oracle, test)
    m_prior = order_prior_baseline(train, test)
    assert m_prior == m_oracle and m_prior["R1@0.7"] == pytest.approx(100.0)
    prior = fit_order_prior(train)
    top1 = [p["spans"][0] for p in order_prior_predictions(prior, test)]
    assert np.allclose(top1, [o["spans"][0] for o in oracle])
    # an unseen (rank, count) backs off to the rank alone, then to every moment
    assert np.allclose(prior.spans_for(0, 99)[0][0], prior.ranks[0][0][0])
    assert np.allclose(prior.spans_for(99, 99)[0][0], prior.overall[0][0])
    # the prior reads only order: shuffling each video's list changes what it predicts
    shuffled = [r for v in sorted({r.video_id for r in test})
                for r in reversed([x for x in test if x.video_id == v])]
    assert order_prior_baseline(train, shuffled)["R1@0.7"] < 100.0


# ---------------------------------------------------------------- query order


def _small_cfg(*sets: str) -> MKTNConfig:
    return override(preset("synthetic"), ["model.num_clips=16", "model.d_model=32", "model.num_heads=2",
                                          "model.dropout=0", *sets])


def test_query_order_is_declared_per_preset():
    assert preset("synthetic").model.query_order == "none"
    assert preset("charades-sta").model.query_order == "none" and preset("tacos").model.query_order == "none"
    assert preset("activitynet").model.query_order == "annotation"
    with pytest.raises(ValueError, match="query_order"):
        override(preset("synthetic"), ["model.query_order=time"])
    # checkpoints written before the setting existed read the annotation order, as they were trained
    assert config_with_defaults_of_its_time({"model": {"d_model": 8}})["model"]["query_order"] == "annotation"
    assert config_with_defaults_of_its_time({"model": {"query_order": "none"}})["model"]["query_order"] == "none"


def test_without_query_order_nothing_reads_the_annotation_order(data):
    prepared, _ = prepare(data, 16, 32)
    recs = data.split("train")
    groups = make_groups(prepared, recs, multi_pair=True, max_queries=3, query_order="none", seed=0)
    # the groups depend on the set of a video's queries, not on how the annotation lists them
    assert make_groups(prepared, recs[::-1], multi_pair=True, max_queries=3, query_order="none") == groups
    shuffled = shuffle_query_order(prepared, recs, seed=1)
    assert make_groups(shuffled, recs, multi_pair=True, max_queries=3, query_order="none") == groups
    assert make_groups(shuffled, recs, multi_pair=True, max_queries=3) != make_groups(
        prepared, recs, multi_pair=True, max_queries=3)  # "annotation" follows the order
    torch.manual_seed(0)
    cfg = _small_cfg()
    dims = data.dims
    model = build_model(cfg.model, dims[0], dims[0], dims[1], dims[2])
    full = evaluate_model(model, prepared, data.split("test"))
    ctrl = compute_controls(model, prepared, data.split("test"), recs)
    assert ctrl["order_shuffled"] == full.metrics  # bit for bit: the order is not an input
    # with query_order="annotation" the order embedding is read
    torch.manual_seed(0)
    cfg_a = _small_cfg("model.query_order=annotation", "model.head=span")
    model_a = build_model(cfg_a.model, dims[0], dims[0], dims[1], dims[2]).eval()
    assert model.csm is not None and not model.csm.temporal and model_a.csm is not None and model_a.csm.temporal
    b = collate(prepared, make_groups(prepared, recs, multi_pair=True, max_queries=16)[:2])
    with torch.no_grad():
        before = model_a(b)["start_logits"]
        b.query_order = b.query_order.flip(0)
        assert not torch.allclose(before, model_a(b)["start_logits"])


def test_training_deals_each_videos_queries_anew_every_epoch(data):
    prepared, _ = prepare(data, 16, 32)
    groups = make_groups(prepared, data.split("train"), multi_pair=True, max_queries=3, query_order="none")
    s = GroupSampler(groups, 4, seed=0, shuffle_queries=True)
    e0, e1 = s.epoch_groups(0), s.epoch_groups(1)
    assert e0 == GroupSampler(groups, 4, seed=0, shuffle_queries=True).epoch_groups(0)  # seeded
    assert e0 != e1 and [len(g.query_ids) for g in e0] == [len(g.query_ids) for g in groups]
    for grp in (e0, e1):
        assert sorted(q for g in grp for q in g.query_ids) == sorted(q for g in groups for q in g.query_ids)
        assert all(g.video_id == h.video_id for g, h in zip(grp, groups, strict=True))
    assert GroupSampler(groups, 4, seed=0).epoch_groups(5) == groups


# ---------------------------------------------------------------- faults found in review


def test_decode_query_returns_top_k_distinct_spans():
    t = 64
    ct = np.stack([np.arange(t, dtype=float), np.arange(t, dtype=float) + 1], axis=1)
    x = torch.arange(t, dtype=torch.float32)
    # smooth, peaked distributions: the 30 best (start, end) pairs are all near-duplicates of one span
    start, end = -((x - 20) / 4) ** 2, -((x - 30) / 4) ** 2
    spans, scores = decode_query(start, end, torch.zeros(t, 2), ct, top_k=5, nms_iou=0.5)
    assert len(spans) == 5 and scores == sorted(scores, reverse=True)
    assert spans[0] == pytest.approx([20.0, 30.0])  # end offset 0: the start of clip 30
    iou = [[max(0, min(a[1], b[1]) - max(a[0], b[0])) / (max(a[1], b[1]) - min(a[0], b[0]))
            for b in spans] for a in spans]
    assert all(iou[i][j] < 0.5 for i in range(5) for j in range(5) if i != j)
    assert len(decode_query(start[:3], end[:3], torch.zeros(3, 2), ct[:3], top_k=5)[0]) <= 5


def test_single_pair_evaluation_uses_single_pair_groups(data):
    prepared, _ = prepare(data, 16, 32)
    test = data.split("test") + data.split("val")
    spy = TextOnly()
    single = evaluate_model(spy, prepared, test, multi_pair=False)
    assert spy.batches and all(g.shape[1] == 1 for g in spy.batches)
    spy.batches.clear()
    multi = evaluate_model(spy, prepared, test, multi_pair=True)
    assert max(g.shape[1] for g in spy.batches) == 4
    assert single.metrics["num_queries"] == multi.metrics["num_queries"] == len(test)


def test_prepare_video_rejects_a_clip_times_length_mismatch():
    t, d = 10, 3
    frames, patches = np.zeros((t, d), np.float32), np.zeros((t, 2, d), np.float32)
    norm = NormStats(np.zeros(d, np.float32), np.ones(d, np.float32), np.zeros(d, np.float32), np.ones(d, np.float32))
    times = np.stack([np.arange(t), np.arange(t) + 1.0], 1)
    for bad in (times[:9], np.concatenate([times, [[10.0, 11.0]]]), times[:, :1]):
        with pytest.raises(ValueError, match="one T"):
            prepare_video(VideoInput("v", frames, patches, bad, 10.0), norm, 16)
    with pytest.raises(ValueError, match="one T"):
        prepare_video(VideoInput("v", frames, patches[:9], times, 10.0), norm, 16)
    assert prepare_video(VideoInput("v", frames, patches, times, 10.0), norm, 16).valid == t


def test_boundary_targets_land_in_the_window_that_holds_them():
    ct = [[0.0, 2.0], [2.0, 5.0], [5.0, 6.0], [6.0, 10.0]]  # pooled windows of unequal lengths
    rng = np.random.default_rng(0)
    for _ in range(300):
        s, e = sorted(rng.uniform(0, 10, size=2))
        i_s, i_e, o_s, o_e = span_to_clip_indices((s, e), ct)
        assert ct[i_s][0] <= s <= ct[i_s][1] and ct[i_e][0] <= e <= ct[i_e][1]
        assert clip_indices_to_span(i_s, i_e, ct, o_s, o_e) == pytest.approx((s, e))  # decode(target)
    assert span_to_clip_indices((4.9, 5.5), ct)[:2] == (1, 2)  # centres' midpoints said clip 2 for 4.9
    # pooled windows of prepare_video: a moment's targets decode back to it
    v = VideoInput("v", np.zeros((10, 2), np.float32), np.zeros((10, 1, 2), np.float32),
                   np.stack([np.arange(10.0), np.arange(10.0) + 1], 1), 10.0)
    norm = NormStats(*(np.zeros(2, np.float32), np.ones(2, np.float32)) * 2)
    pv = prepare_video(v, norm, 4)  # windows of 2, 3, 2, 3 s
    assert pv.clip_times.tolist() == [[0, 2], [2, 5], [5, 7], [7, 10]]
    i_s, i_e, o_s, o_e = span_to_clip_indices((4.5, 7.5), pv.clip_times)
    assert (i_s, i_e) == (1, 3) and clip_indices_to_span(i_s, i_e, pv.clip_times, o_s, o_e) == pytest.approx((4.5, 7.5))


def test_queries_without_features_count_as_misses(data):
    prepared, _ = prepare(data, 16, 32)
    test = data.split("test")
    lost = QueryMoment("lost", test[0].video_id, "x", 0.0, 4.0, test[0].duration, "test")
    m = evaluate_model(TextOnly(), prepared, test + [lost]).metrics
    base = evaluate_model(TextOnly(), prepared, test).metrics
    n = len(test)
    assert m["num_queries"] == n + 1 and m["missing"] == 1 and base["missing"] == 0
    assert m["R1@0.3"] == pytest.approx(base["R1@0.3"] * n / (n + 1))
    assert m["mIoU"] == pytest.approx(base["mIoU"] * n / (n + 1))


def test_without_a_val_split_selection_is_explicit(tmp_path, data, caplog):
    from model.train import train

    no_val = type(data)(data.videos, data.queries, [r for r in data.records if r.split != "val"])
    cfg = override(preset("synthetic"), ["model.num_clips=16", "model.d_model=32", "model.num_heads=2",
                                         "train.batch_videos=3", "train.epochs=1"])
    with caplog.at_level("WARNING"):
        result = train(cfg, no_val, tmp_path / "run", show_progress=False)
    assert result.selection_split == "train"
    assert "NO 'val' SPLIT" in caplog.text
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["selection_split"] == "train"
    assert set(saved["controls"]) == {"prior", "order_prior", "video_swapped", "order_shuffled"}
    assert "controls" in json.loads((tmp_path / "run" / "metrics_test.json").read_text())


def test_report_shows_the_controls_and_metrics_json_carries_them(tmp_path):
    from flows.report import write_report

    m = {"R1@0.3": 60.0, "R1@0.5": 43.45, "R1@0.7": 20.0, "R5@0.3": 90.0, "R5@0.5": 70.0, "R5@0.7": 40.0,
         "mIoU": 41.9, "num_queries": 145, "missing": 0}
    ctrl = {k: {**m, "R1@0.5": v} for k, v in
            (("prior", 6.9), ("order_prior", 35.0), ("video_swapped", 24.83), ("order_shuffled", 15.86))}
    paths = write_report(tmp_path, title="t", metrics=m, controls=ctrl, baseline=ctrl["prior"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved["controls"]) == {"prior", "order_prior", "video_swapped", "order_shuffled"}
    text = open(paths.markdown).read()
    assert "| prior only (no video, no query) |" in text and "order-aware prior" in text
    assert "18.62 points need the video" in text and "27.59 need the annotation order" in text


def test_report_tables_carry_map_at_05_075_and_the_average(tmp_path):
    from flows.report import write_report

    m = {"R1@0.3": 60.0, "R1@0.5": 43.45, "R1@0.7": 20.0, "R5@0.3": 90.0, "R5@0.5": 70.0, "R5@0.7": 40.0,
         "mIoU": 41.9, "mAP@0.5": 38.5, "mAP@0.75": 17.25, "mAP": 19.0, "num_queries": 145, "missing": 0}
    old = {k: v for k, v in m.items() if not k.startswith("mAP")}  # e.g. a baseline computed before mAP
    paths = write_report(tmp_path, title="t", metrics=m, baseline=old, ablation=[{"variant": "full", **m}])
    text = open(paths.markdown).read()
    header = "| run | R1@0.3 | R1@0.5 | R1@0.7 | R5@0.3 | R5@0.5 | R5@0.7 | mIoU | mAP@0.5 | mAP@0.75 | mAP |"
    assert header in text
    assert "| MKTN | 60.00 | 43.45 | 20.00 | 90.00 | 70.00 | 40.00 | 41.90 | 38.50 | 17.25 | 19.00 |" in text
    assert "| prior only (no video, no query) | 60.00 | 43.45 | 20.00 | 90.00 | 70.00 | 40.00 | 41.90 |  |  |  |" in text
    assert "| full | 60.00 | 43.45 | 20.00 | 90.00 | 70.00 | 40.00 | 41.90 | 38.50 | 17.25 | 19.00 |" in text
