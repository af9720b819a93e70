"""Grounding heads as plug-ins (``model.head = span | tan2d | mmn``): the moment map's geometry,
each map head's shapes and mask, its losses at a hand-made optimum, a tiny-batch overfit,
decoding to seconds, old checkpoints loading as "span", and `mktn train --set model.head=mmn`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_fixtures import planted_data, write_stores

from model.checkpoint import config_with_defaults_of_its_time
from model.config import MKTNConfig, override, preset
from model.data import collate, make_groups, prepare
from model.evaluate import predict_batch
from model.losses import build_criterion
from model.mktn import build_model
from model.moment_map import (
    NEG,
    band_iou,
    band_mask,
    band_to_dense,
    decode_map,
    map_lengths,
    window_max,
    window_mean,
)
from model.spans import pairwise_temporal_iou
from pipeline.cli import main

D = 32
HEADS = ("tan2d", "mmn")

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(head: str, *extra: str):
    return override(preset("synthetic"), ["model.num_clips=16", f"model.d_model={D}", "model.num_heads=2",
                                          "model.dropout=0", "model.input_dropout=0", f"model.head={head}", *extra])


@pytest.fixture(scope="module")
def tiny():
    data = planted_data(num_videos=3, queries_per_video=3, clips=14, dim=12, sentence_dim=16, seed=1)
    prepared, _ = prepare(data, 16, 32)
    batch = collate(prepared, make_groups(prepared, data.records, multi_pair=True, max_queries=16))
    return data, prepared, batch


# ---------------------------------------------------------------- geometry


def test_map_lengths_dense_then_sparse():
    assert map_lengths(16, dense=16) == list(range(1, 17))
    assert map_lengths(128, dense=16) == [*range(1, 17), *range(18, 33, 2), *range(36, 65, 4), *range(72, 129, 8)]
    assert map_lengths(32, max_clips=6, dense=16) == [1, 2, 3, 4, 5, 6]
    assert map_lengths(10, max_clips=30, dense=4)[-1] == 10


def test_window_max_matches_brute_force():
    torch.manual_seed(0)
    x = torch.randn(2, 13, 3)
    lengths = [1, 2, 3, 5, 7, 8, 12, 13]
    got = window_max(x, lengths)
    for r, n in enumerate(lengths):
        for i in range(13 - n + 1):
            assert torch.equal(got[:, r, i], x[:, i:i + n].max(dim=1).values)


def test_window_mean_matches_brute_force():
    torch.manual_seed(0)
    x = torch.randn(2, 13)
    lengths = torch.tensor([1, 2, 3, 5, 8, 13])
    got = window_mean(x, lengths)
    for r, n in enumerate(lengths.tolist()):
        for i in range(13 - n + 1):
            assert torch.allclose(got[:, r, i], x[:, i:i + n].mean(dim=1), atol=1e-5)


def test_band_to_dense_and_iou():
    lengths = torch.tensor([1, 2, 4])
    band = torch.arange(3 * 5, dtype=torch.float32).view(1, 3, 5)
    mask = band_mask(torch.tensor([4]), lengths, 5)
    assert mask[0].tolist() == [[True] * 4 + [False], [True] * 3 + [False] * 2, [True] + [False] * 4]
    dense, dmask = band_to_dense(band, mask, lengths)
    assert dmask[0].nonzero().tolist() == [[0, 0], [0, 1], [0, 3], [1, 1], [1, 2], [2, 2], [2, 3], [3, 3]]
    assert float(dense[0, 0, 3]) == float(band[0, 2, 0]) and float(dense[0, 1, 2]) == float(band[0, 1, 1])
    assert float(dense[0, 0, 2]) == NEG  # length 3 is not sampled
    iou = band_iou(torch.tensor([1.0]), torch.tensor([3.0]), lengths, 5)
    assert float(iou[0, 1, 1]) == 1.0 and float(iou[0, 0, 1]) == 0.5 and float(iou[0, 2, 0]) == 0.5


# ---------------------------------------------------------------- each head


@pytest.mark.parametrize("head", HEADS)
def test_shapes_and_mask(head, tiny):
    _, prepared, b = tiny
    torch.manual_seed(0)
    cfg = _cfg(head, "model.map_max_clips=6", "model.map_dense_clips=4")
    model = build_model(cfg.model, 12, 12, 300, 16).eval()
    out = model(b, 1.0)
    q, nb, length = b.num_queries, b.num_videos, 16
    lengths = map_lengths(16, 6, 4)
    assert out["map_lengths"].tolist() == lengths == [1, 2, 3, 4, 6]
    assert out["map_logits"].shape == out["map_band_mask"].shape == (q, len(lengths), length)
    assert out["map_scores"].shape == out["map_mask"].shape == (q, length, length)
    assert "start_logits" not in out and "float_offsets" not in out
    if head == "mmn":
        assert out["moment_sim"].shape == (q, nb, len(lengths), length)
        assert out["moment_mask"].shape == (nb, len(lengths), length)
        assert model.fusion is None  # no per-query fusion: the video's map is shared by its queries
    valid = b.video_mask.sum(1)[b.query_video]
    assert int(valid.min()) < length  # some videos are padded: the mask must see it
    for k in range(q):
        cells = out["map_mask"][k].nonzero()
        i, j = cells[:, 0], cells[:, 1]
        assert bool((j >= i).all()) and bool((j < valid[k]).all())
        assert set((j - i + 1).tolist()) <= set(lengths)  # only sampled lengths, none beyond the max span
        assert bool((out["map_scores"][k][~out["map_mask"][k]] == NEG).all())
        assert bool((out["map_scores"][k][out["map_mask"][k]] > NEG / 2).all())
    assert bool((out["map_logits"][~out["map_band_mask"]] == NEG).all())
    assert build_criterion(cfg.loss, cfg.model).active(out)[0] == "map"


def test_mmn_evidence_adds_its_window_mean_and_is_trained(tiny):
    _, _, b = tiny
    torch.manual_seed(0)
    cfg = _cfg("mmn", "model.map_evidence=true")
    model = build_model(cfg.model, 12, 12, 300, 16).eval()
    out = model(b, 1.0)
    assert out["highlight_logits"].shape == (b.num_queries, 16) and "patch_weights" in out
    assert "highlight" in build_criterion(cfg.loss, cfg.model).active(out)
    # the map's logits are MMN's cosine scores plus the mean evidence over each moment's clips
    head = model.map_head
    sim = out["moment_sim"][torch.arange(b.num_queries), b.query_video] * head.scale
    valid = b.video_mask[b.query_video]
    ev = window_mean(out["highlight_logits"].masked_fill(~valid, 0.0), head.lengths)
    m = out["map_band_mask"]
    assert torch.allclose(out["map_logits"][m], (sim + ev)[m], atol=1e-4)
    # off (the old checkpoints' setting): no evidence, no patch attention
    plain = build_model(_cfg("mmn", "model.map_evidence=false").model, 12, 12, 300, 16)
    assert plain.clip_evidence is None and plain.patch_attention is None
    old = preset("synthetic").to_dict()
    del old["model"]["map_evidence"]
    assert MKTNConfig.from_dict(config_with_defaults_of_its_time(old)).model.map_evidence is False


@pytest.mark.parametrize("head", HEADS)
def test_maps_computed_in_slices_equal_the_whole_batch(tiny, head, monkeypatch):
    """The maps are computed a few queries (tan2d) or videos (mmn) at a time
    (``CHUNK_ELEMENTS``); one item per slice gives the outputs and gradients of one slice."""
    from model.moment_map import _MapHead

    _, _, b = tiny
    torch.manual_seed(0)
    cfg = _cfg(head)
    model = build_model(cfg.model, 12, 12, 300, 16).eval()
    runs = []
    for elements in (2**40, 1):
        monkeypatch.setattr(_MapHead, "CHUNK_ELEMENTS", elements)
        cpu = torch.device("cpu")
        per = model.map_head.items_per_chunk(D, 16, 9, cpu)
        assert per == (1 if elements == 1 else 2**40 // (D * 16 * len(model.map_head.lengths_list)))
        assert model.map_head.items_per_chunk(D, 16, 9, torch.device("meta")) == 9  # off the CPU: one slice
        model.zero_grad()
        out = model(b, 1.0)
        out["map_logits"][out["map_band_mask"]].sum().backward()
        runs.append((out, [p.grad.clone() for p in model.map_head.parameters() if p.grad is not None]))
    (whole, g_whole), (sliced, g_sliced) = runs
    for key in ("map_logits", "map_scores") + (("moment_sim",) if head == "mmn" else ()):
        assert torch.allclose(whole[key], sliced[key], atol=1e-5), key
    assert len(g_whole) == len(g_sliced) > 0
    assert all(torch.allclose(x, y, atol=1e-4) for x, y in zip(g_whole, g_sliced, strict=True))


def _tan2d_map(b, *extra: str):
    """A tan2d criterion and the batch's map geometry: (criterion, outputs without logits, the
    cells' IoU with each query's moment [Q, R, L], the band mask)."""
    cfg = _cfg("tan2d", *extra)
    lengths = torch.tensor(map_lengths(16))
    mask = band_mask(b.video_mask.sum(1)[b.query_video], lengths, 16)
    iou = band_iou(b.start_idx + b.start_frac, b.end_idx + b.end_frac, lengths, 16)
    return build_criterion(cfg.loss, cfg.model), {"map_lengths": lengths, "map_band_mask": mask}, iou, mask


def test_map_loss_is_lowest_at_the_scaled_iou(tiny):
    _, _, b = tiny
    crit, out, iou, mask = _tan2d_map(b)
    target = ((iou - 0.5) / 0.5).clamp(0, 1)
    best = crit.loss_moment_map({**out, "map_logits": torch.logit(target, eps=1e-4)}, b)
    floor = F.binary_cross_entropy(target[mask], target[mask], reduction="none")
    bad = crit.loss_moment_map({**out, "map_logits": torch.logit(1 - target, eps=1e-4)}, b)
    flat = crit.loss_moment_map({**out, "map_logits": torch.zeros_like(target)}, b)
    assert float(best) < float(flat) < float(bad)
    assert float(best) < float(floor.max()) + 1e-3


def test_map_rank_ranks_cells_and_ignores_a_shift(tiny):
    _, _, b = tiny
    crit, out, iou, mask = _tan2d_map(b)
    good = torch.where(iou >= 0.5, 8.0 * iou, torch.full_like(iou, -8.0))
    low = crit.loss_map_rank({**out, "map_logits": good}, b)
    # every cell pushed down by the same amount (what the BCE alone drifts to): the same ranking
    assert float(crit.loss_map_rank({**out, "map_logits": good - 50.0}, b)) == pytest.approx(float(low), abs=1e-4)
    high = crit.loss_map_rank({**out, "map_logits": -good}, b)
    assert float(low) < float(crit.loss_map_rank({**out, "map_logits": torch.zeros_like(iou)}, b)) < float(high)
    # cells outside the mask never count, whatever their logits
    outside = good.masked_fill(~mask, 1e4)
    assert float(crit.loss_map_rank({**out, "map_logits": outside}, b)) == pytest.approx(float(low), abs=1e-4)
    # a query with no cell at map_min_iou still has a target: its best-IoU cell
    strict = _tan2d_map(b, "loss.map_min_iou=0.99")[0]
    assert torch.isfinite(strict.loss_map_rank({**out, "map_logits": good}, b))
    assert float(strict.loss_map_rank({**out, "map_logits": good}, b)) > 0


@pytest.mark.parametrize("head", HEADS)
def test_map_rank_runs_for_tan2d_only(head, tiny):
    _, _, b = tiny
    torch.manual_seed(0)
    cfg = _cfg(head)
    model = build_model(cfg.model, 12, 12, 300, 16)
    _, logs = build_criterion(cfg.loss, cfg.model)(model(b, 0.5), b)
    assert ("map_rank" in logs) == (head == "tan2d")
    assert "map" in logs


def test_mmn_contrast_is_low_at_a_hand_made_optimum(tiny):
    _, _, b = tiny
    cfg = _cfg("mmn")
    crit = build_criterion(cfg.loss, cfg.model)
    lengths = torch.tensor(map_lengths(16))
    q, nb = b.num_queries, b.num_videos
    vmask = band_mask(b.video_mask.sum(1), lengths, 16)
    own = vmask[b.query_video]
    iou = band_iou(b.start_idx + b.start_frac, b.end_idx + b.end_frac, lengths, 16)
    best = iou.masked_fill(~own, -1).flatten(1).argmax(1)
    good = torch.full((q, nb, len(lengths) * 16), -1.0)
    good[torch.arange(q), b.query_video, best] = 1.0
    out = {"map_lengths": lengths, "map_band_mask": own, "moment_mask": vmask, "map_logits": own.float()}
    low = crit.loss_mmn_contrast({**out, "moment_sim": good.view(q, nb, len(lengths), 16)}, b)
    high = crit.loss_mmn_contrast({**out, "moment_sim": (-good).view(q, nb, len(lengths), 16)}, b)
    assert float(low) < 0.05 and float(high) > 10.0


@pytest.mark.parametrize("head", HEADS)
def test_overfits_a_tiny_batch(head, tiny):
    _, prepared, b = tiny
    torch.manual_seed(0)
    cfg = _cfg(head)
    model = build_model(cfg.model, 12, 12, 300, 16)
    crit = build_criterion(cfg.loss, cfg.model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    lengths = torch.tensor(map_lengths(16))
    iou = band_iou(b.start_idx + b.start_frac, b.end_idx + b.end_frac, lengths, 16)
    target = ((iou - 0.5) / 0.5).clamp(0, 1)

    @torch.no_grad()
    def excess(out):  # the map loss above its floor (the soft targets' own entropy)
        floor = crit.loss_moment_map({**out, "map_logits": torch.logit(target, eps=1e-6)}, b)
        return float(crit.loss_moment_map(out, b)) - float(floor)

    first = None
    for _ in range(50):
        out = model(b, 0.5)
        loss, logs = crit(out, b)
        first = first if first is not None else (excess(out), logs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(b, 1.0)
    assert excess(out) < 0.25 * first[0]
    if head == "mmn":
        assert crit(out, b)[1]["mmn_contrast"] < 0.25 * first[1]["mmn_contrast"]
    recs = predict_batch(out, b, prepared, top_k=1)
    gt = {r.query_id: (r.start, r.end) for r in tiny[0].records}
    hits = [pairwise_temporal_iou(np.array([rec["spans"][0]]), np.array([gt[rec["query_id"]]]))[0, 0] >= 0.5
            for rec in recs]
    assert sum(hits) >= len(hits) - 1


def test_decode_map_gives_valid_distinct_seconds():
    rng = np.random.default_rng(0)
    t, length = 11, 16
    clip_times = np.stack([np.arange(t) * 2.0, np.arange(t) * 2.0 + 2.0], 1)  # 2-s clips, 22 s
    lengths = torch.tensor(map_lengths(length, dense=4))
    mask = band_mask(torch.tensor([t]), lengths, length)
    band = torch.from_numpy(rng.normal(size=(1, len(lengths), length)).astype(np.float32)).masked_fill(~mask, NEG)
    scores, dmask = band_to_dense(band, mask, lengths)
    spans, sc = decode_map(scores[0], dmask[0], clip_times, top_k=5, nms_iou=0.5)
    assert len(spans) == 5 and sc == sorted(sc, reverse=True)
    arr = np.array(spans)
    assert bool((arr[:, 0] >= 0).all() and (arr[:, 1] <= 22.0).all() and (arr[:, 1] > arr[:, 0]).all())
    ious = pairwise_temporal_iou(arr, arr)
    assert bool((ious[~np.eye(5, dtype=bool)] < 0.5).all())  # distinct after NMS
    best = dmask[0].nonzero()[scores[0][dmask[0]].argmax()].tolist()
    assert spans[0] == [2.0 * best[0], 2.0 * best[1] + 2.0]
    short, _ = decode_map(scores[0], dmask[0], clip_times, top_k=3, max_span_clips=2)
    assert all(e - s <= 4.0 for s, e in short)


# ---------------------------------------------------------------- config, checkpoints, CLI


def test_head_config_and_old_checkpoints():
    assert preset("synthetic").model.head == "mmn"  # the default since 2026-12-03
    with pytest.raises(ValueError, match="model.head"):
        override(preset("synthetic"), ["model.head=anchor"])
    old = preset("synthetic").to_dict()
    for key in ("head", "map_max_clips", "map_dense_clips", "map_layers", "map_kernel", "mmn_temperature"):
        del old["model"][key]
    for key in ("w_map", "w_mmn_contrast", "map_min_iou", "map_max_iou"):
        del old["loss"][key]
    cfg = MKTNConfig.from_dict(config_with_defaults_of_its_time(old))
    assert cfg.model.head == "span"  # a checkpoint from before the key keeps its span head
    assert cfg == override(preset("synthetic"), ["model.head=span"])
    keys = set(build_model(cfg.model, 12, 12, 300, 16).state_dict())
    assert {k for k in keys if k.startswith(("span_head.", "float_head."))} and not any("map_head" in k for k in keys)


def test_cli_trains_the_mmn_head(tmp_path, capsys):
    data = planted_data(num_videos=8, queries_per_video=2, clips=16, dim=12, sentence_dim=16)
    features, queries, ann = write_stores(data, tmp_path / "stores")
    out = tmp_path / "run"
    args = ["train", "--features", str(features), "--queries", str(queries), "--annotations", str(ann),
            "--set", "model.num_clips=16", "--set", "model.d_model=32", "--set", "model.num_heads=2",
            "--set", "model.head=mmn", "--batch-videos", "3", "--no-progress", "--threads", "1",
            "--epochs", "1", "--out", str(out), "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epochs_run"] == 1 and 0.0 <= result["test"]["R1@0.5"] <= 100.0
    ckpt = torch.load(out / "best.pt", weights_only=True)
    assert ckpt["config"]["model"]["head"] == "mmn"
    assert any(k.startswith("map_head.") for k in ckpt["model"])
    preds = [json.loads(line) for line in (out / "predictions_test.jsonl").read_text().splitlines()]
    assert preds and all(0.0 <= p["spans"][0][0] <= p["spans"][0][1] for p in preds)
