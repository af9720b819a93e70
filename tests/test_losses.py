"""The criterion: RINCE/InfoNCE written once, the threshold schedule, negative selection, switches."""

from __future__ import annotations

import math

import pytest
import torch
from model_fixtures import planted_data

from model.config import override, preset
from model.data import collate, make_groups, prepare
from model.losses import build_criterion, info_nce, rince
from model.matching import select_negatives, tau_schedule
from model.mktn import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tau_schedule_endpoints_and_shape():
    assert tau_schedule(0.0, 0.9, 0.6) == pytest.approx(0.9)
    assert tau_schedule(1.0, 0.9, 0.6) == pytest.approx(0.6)
    assert tau_schedule(0.5, 0.9, 0.6) == pytest.approx(0.75)  # cosine midpoint
    assert tau_schedule(-1.0, 0.9, 0.6) == pytest.approx(0.9) and tau_schedule(2.0, 0.9, 0.6) == pytest.approx(0.6)
    values = [tau_schedule(t / 10, 0.9, 0.6) for t in range(11)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_negatives_above_threshold_are_excluded():
    sim = torch.tensor([[0.9, 0.2, 0.8, 0.5], [0.1, 0.95, 0.3, 0.7]])
    same = torch.tensor([[True, False, False, False], [False, True, False, True]])
    neg = select_negatives(sim, same, tau=0.6)
    assert neg.tolist() == [[False, True, False, True], [True, False, True, False]]
    assert select_negatives(sim, same, tau=None).tolist() == (~same).tolist()


def test_rince_tends_to_infonce_as_q_vanishes():
    torch.manual_seed(0)
    pos, neg = torch.randn(6), torch.randn(6, 5)
    mask = torch.rand(6, 5) > 0.3
    lam = 0.01
    near_zero = rince(pos, neg, mask, q=1e-4, lam=lam)
    assert float(near_zero) == pytest.approx(float(info_nce(pos, neg, mask)) + math.log(lam), abs=1e-2)
    # q = 1: -e^{s+} + lam * (e^{s+} + sum e^{s-}), by hand
    by_hand = (-pos.exp() + lam * (pos.exp() + (neg.exp() * mask).sum(1))).mean()
    assert float(rince(pos, neg, mask, q=1.0, lam=lam)) == pytest.approx(float(by_hand), rel=1e-5)


def test_masked_negatives_do_not_count():
    pos, neg = torch.zeros(2), torch.tensor([[1.0, 50.0], [0.0, 50.0]])
    mask = torch.tensor([[True, False], [True, False]])
    a = info_nce(pos, neg, mask)
    neg2 = neg.clone()
    neg2[:, 1] = -50.0
    assert float(a) == pytest.approx(float(info_nce(pos, neg2, mask)))


@pytest.fixture(scope="module")
def batch_and_cfg():
    cfg = override(preset("synthetic"), ["model.num_clips=16", "model.d_model=32", "model.dropout=0",
                                         "model.head=span"])
    data = planted_data(num_videos=5, queries_per_video=3, clips=16, dim=12, sentence_dim=20)
    prepared, _ = prepare(data, 16, 32)
    groups = make_groups(prepared, data.records, multi_pair=True, max_queries=16)
    return cfg, collate(prepared, groups[:4])


def test_contrast_ignores_excluded_negatives(batch_and_cfg):
    cfg, b = batch_and_cfg
    torch.manual_seed(0)
    with torch.no_grad():
        out = build_model(cfg.model, 12, 12, 300, 20)(b, 0.0)
    crit = build_criterion(cfg.loss, cfg.model)
    neg = out["negatives"].clone()
    neg[0, :] = False  # query 0: every other video was judged a false negative
    neg[0, 1] = True
    out = dict(out, negatives=neg)
    base = float(crit.loss_contrast(out, b))
    moved = dict(out, sim_match=out["sim_match"].clone())
    excluded = [v for v in range(b.num_videos) if not neg[0, v] and v != int(b.query_video[0])]
    moved["sim_match"][0, excluded] = 5.0  # an excluded negative scoring far above the positive
    assert float(crit.loss_contrast(moved, b)) == pytest.approx(base)
    moved["sim_match"][0, 1] = 5.0  # a kept negative does change the loss
    assert float(crit.loss_contrast(moved, b)) > base


def test_span_loss_small_when_peaked_at_targets(batch_and_cfg):
    cfg, b = batch_and_cfg
    crit = build_criterion(cfg.loss, cfg.model)
    q, length = b.num_queries, 16
    out = {"start_logits": torch.full((q, length), -20.0), "end_logits": torch.full((q, length), -20.0)}
    out["start_logits"][torch.arange(q), b.start_idx] = 20.0
    out["end_logits"][torch.arange(q), b.end_idx] = 20.0
    assert float(crit.loss_span(out, b)) < 1e-6
    off = torch.zeros(q, length, 2)
    off[torch.arange(q), b.start_idx, 0] = b.start_frac
    off[torch.arange(q), b.end_idx, 1] = b.end_frac
    assert float(crit.loss_float({"float_offsets": off}, b)) < 1e-9


def test_weights_follow_switches_and_strength(batch_and_cfg):
    cfg, b = batch_and_cfg
    torch.manual_seed(0)
    strong = override(cfg, ["loss.alignment_strength=3"])
    crit, crit3 = build_criterion(cfg.loss, cfg.model), build_criterion(strong.loss, strong.model)
    for name in ("rince", "contrast", "align", "segment"):
        assert crit3.weights[name] == pytest.approx(3 * crit.weights[name])
    assert crit3.weights["span"] == crit.weights["span"]
    off = override(cfg, ["model.use_csm=false", "model.use_avm=false", "model.use_opm=false",
                         "model.use_apa=false", "loss.segment_alignment=false"])
    out = build_model(off.model, 12, 12, 300, 20)(b, 0.5)
    total, logs = build_criterion(off.loss, off.model)(out, b)
    assert set(logs) == {"span", "float", "rince", "highlight", "total"}
    zero = override(cfg, ["loss.alignment_strength=0"])
    out = build_model(zero.model, 12, 12, 300, 20)(b, 0.5)
    _, logs = build_criterion(zero.loss, zero.model)(out, b)
    assert set(logs) == {"span", "float", "csm", "highlight", "total"}


def test_rows_without_negatives_do_not_count():
    pos, neg = torch.tensor([1.0, 0.5]), torch.tensor([[0.2, 0.1], [3.0, 3.0]])
    mask = torch.tensor([[True, True], [False, False]])  # ANS removed every negative of row 1
    for fn in (info_nce, lambda p, n, m: rince(p, n, m, 0.5, 0.01)):
        assert float(fn(pos, neg, mask)) == pytest.approx(float(fn(pos[:1], neg[:1], mask[:1])))
        none = fn(pos.clone().requires_grad_(), neg, torch.zeros(2, 2, dtype=torch.bool))
        assert float(none.detach()) == 0.0
        none.backward()  # still part of the graph


def test_active_reads_only_the_loss_config(batch_and_cfg):
    """The criterion's switches are loss settings: AA and OCA decide ``align`` from the loss
    section alone, and the terms run in one fixed order (the order they are summed)."""
    cfg, b = batch_and_cfg
    torch.manual_seed(0)
    with torch.no_grad():
        out = build_model(cfg.model, 12, 12, 300, 20)(b, 0.5)
    assert build_criterion(cfg.loss).active(out) == [
        "span", "float", "rince", "csm", "contrast", "align", "segment", "highlight"]
    off = override(cfg, ["loss.apa_aa=false", "loss.opm_oca=false"])
    assert "align" not in build_criterion(off.loss).active(out)
    one = override(cfg, ["loss.apa_aa=false"])  # OCA alone still aligns S_op
    assert "align" in build_criterion(one.loss).active(out)
    assert float(build_criterion(one.loss).loss_align(out, b)) != pytest.approx(
        float(build_criterion(cfg.loss).loss_align(out, b)))


def test_a_new_loss_term_is_one_method_and_one_weight(batch_and_cfg):
    import dataclasses

    from model.config import LossConfig
    from model.losses import MKTNCriterion, term

    cfg, b = batch_and_cfg

    @dataclasses.dataclass(frozen=True)
    class MoreLoss(LossConfig):
        w_spread: float = 0.5

    class MoreCriterion(MKTNCriterion):
        @term("spread", "start_logits")
        def loss_spread(self, out, batch):
            return out["start_logits"].float().std()

    torch.manual_seed(0)
    with torch.no_grad():
        out = build_model(cfg.model, 12, 12, 300, 20)(b, 0.5)
    crit = MoreCriterion(MoreLoss(**dataclasses.asdict(cfg.loss)))
    assert crit.active(out)[-1] == "spread" and crit.weights["spread"] == 0.5
    total, logs = crit(out, b)
    base, base_logs = build_criterion(cfg.loss)(out, b)
    assert float(total) == pytest.approx(float(base) + 0.5 * logs["spread"], rel=1e-5)
    assert {k: v for k, v in logs.items() if k not in ("spread", "total")} == {
        k: v for k, v in base_logs.items() if k != "total"}
    with pytest.raises(AttributeError, match="add w_spread to LossConfig"):
        MoreCriterion(cfg.loss)
