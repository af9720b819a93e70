"""The MKTN criterion: one ``@term`` method per term, weighted by ``LossConfig.w_<name>`` (Eq. 11).

Terms (each reads only named network outputs and batch targets):

- ``span``: cross-entropy of start/end logits on the rounded boundary clips (Eq. 9)
- ``float``: smooth L1 of the fractional offsets at the true boundary clips (Eq. 10)
- ``csm``: CSM parallel regression, L1 + (1 - IoU) on normalised spans
- ``rince``: RINCE query->video and video->query over the global similarity, written
  once (``rince``) and called for both directions (Eq. 6-7)
- ``contrast``: hinge over (v, q+, q-) and (q, v+, v-) on the self-weighted score, with
  ``lambda`` balancing video and query negatives (Eq. 3)
- ``align``: InfoNCE over the prototype similarities S_as and S_op (Eq. 8)
- ``segment``: InfoNCE between each ground-truth moment and its sentence (multi-level paper)
- ``highlight``: per-clip binary cross-entropy of "inside the moment" (``model.highlight``)
- ``map`` (heads ``tan2d``/``mmn``): scaled-IoU binary cross-entropy over the moment map (2D-TAN)
- ``map_rank`` (head ``tan2d``): softmax cross-entropy over a query's cells against its normalised
  scaled-IoU targets (not in 2D-TAN; without it the map collapses on our features)
- ``mmn_contrast`` (head ``mmn``): MMN's mutual matching, InfoNCE sentence -> moments (the best-IoU
  cell against the other moments of its video and every moment of the other videos) and
  moment -> sentences (against the batch's other sentences)

``span`` and ``float`` apply to the span head only (they read its start/end logits). A term runs
when the network's outputs hold what it reads (a module switched off in ``ModelConfig`` produces
nothing for it) and the loss config's switches allow (``segment_alignment``; ``apa_aa`` and
``opm_oca`` for ``align``; ``contrast_video_negatives``/``contrast_query_negatives`` inside
``contrast``). Adding a term: a method decorated ``@term("name", *outputs_it_reads)`` and a
weight ``w_name`` in ``LossConfig``; it is logged as ``name``.

Negatives everywhere are the ANS selection ``outputs["negatives"]``. The
alignment-strength factor multiplies ``rince``, ``contrast``, ``align`` and ``segment``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from model.config import LossConfig, ModelConfig
from model.data import Batch
from model.moment_map import band_iou
from model.spans import pairwise_temporal_iou, temporal_iou

Outputs = dict[str, torch.Tensor]


def rince(pos: torch.Tensor, neg: torch.Tensor, neg_mask: torch.Tensor, q: float, lam: float) -> torch.Tensor:
    """Robust InfoNCE: mean over rows of ``-e^{q s+}/q + (lam (e^{s+} + sum e^{s-}))^q / q``.

    pos [R] logits of the positives, neg [R, M] logits, neg_mask [R, M] which negatives count.
    Computed in log space: ``(lam * Z)^q = exp(q * (log lam + logsumexp))``.
    """
    pos = pos.float()
    neg = neg.float().masked_fill(~neg_mask, float("-inf"))
    log_z = torch.logsumexp(torch.cat([pos[:, None], neg], dim=1), dim=1)
    loss = -torch.exp(q * pos) / q + torch.exp(q * (math.log(lam) + log_z)) / q
    return _rows_with_negatives(loss, neg_mask)


def _rows_with_negatives(loss: torch.Tensor, neg_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the rows that have at least one negative.

    A row whose negatives were all removed (by ANS) would only reward raising its positive,
    which RINCE does without bound: measured, that collapsed every embedding onto one
    direction, after which ANS removed every negative for good. Such rows are left out.
    """
    has = neg_mask.any(dim=1)
    if not bool(has.any()):
        return loss.sum() * 0.0
    return loss[has].mean()


def info_nce(pos: torch.Tensor, neg: torch.Tensor, neg_mask: torch.Tensor) -> torch.Tensor:
    """InfoNCE: mean of ``-log e^{s+} / (e^{s+} + sum e^{s-})`` over rows (same arguments as ``rince``)."""
    neg = neg.float().masked_fill(~neg_mask, float("-inf"))
    logits = torch.cat([pos.float()[:, None], neg], dim=1)
    return _rows_with_negatives(torch.logsumexp(logits, dim=1) - logits[:, 0], neg_mask)


def both_ways(sim: torch.Tensor, batch: Batch, negatives: torch.Tensor,
              fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply a contrastive ``fn`` query->video and video->query over a [Q, B] similarity.

    query->video: a query's positive is its video, negatives the selected other videos.
    video->query: for each (video, query) positive, negatives are the other queries for
    which that video is a selected negative.
    """
    qv = batch.query_video
    pos = sim.gather(1, qv[:, None]).squeeze(1)  # (Q,)
    q2v = fn(pos, sim, negatives)
    v2q = fn(pos, sim[:, qv].T, negatives[:, qv].T)  # row i: sim of video(i) to every query
    return (q2v + v2q) / 2


@dataclass(frozen=True)
class Term:
    """A loss term: its name (the log key and ``w_<name>``), the method computing it, the outputs
    it reads (it applies only when all are present), whether ``alignment_strength`` scales it,
    and an optional ``when(loss_cfg, outputs)`` switch."""

    name: str
    method: str
    needs: tuple[str, ...]
    aligned: bool = False
    when: Callable[[LossConfig, Outputs], bool] | None = None


def term(name: str, *needs: str, aligned: bool = False,
         when: Callable[[LossConfig, Outputs], bool] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a criterion method as the loss term ``name`` (see ``Term``)."""
    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.loss_term = Term(name, fn.__name__, tuple(needs), aligned, when)  # type: ignore[attr-defined]
        return fn
    return mark


def loss_terms(cls: type) -> dict[str, Term]:
    """The ``@term`` methods of a criterion class by name, in definition order (base classes first)."""
    terms: dict[str, Term] = {}
    for klass in reversed(cls.__mro__):
        for attr in vars(klass).values():
            t = getattr(attr, "loss_term", None)
            if isinstance(t, Term):
                terms[t.name] = t
    return terms


def _weight(loss: LossConfig, name: str) -> float:
    try:
        return float(getattr(loss, f"w_{name}"))
    except AttributeError:
        raise AttributeError(f"loss term {name!r} has no weight: add w_{name} to LossConfig") from None


def _aligns(cfg: LossConfig, out: Outputs) -> bool:
    """``align`` runs when AA has S_as or OCA has S_op to align."""
    return ("sim_as" in out and cfg.apa_aa) or ("sim_op" in out and cfg.opm_oca)


class MKTNCriterion:
    """Computes every named loss and their weighted sum (Eq. 11).

    The terms are the ``@term`` methods, summed in the order they are defined here; term
    ``<name>`` is weighted by ``LossConfig.w_<name>`` (times ``alignment_strength`` for the
    ``aligned`` ones) and runs when the outputs hold what it reads and its ``when`` (a switch of
    the loss config) allows. A new loss term is one ``@term`` method and one ``w_<name>`` weight.
    The criterion reads only the loss config, plus MMN's score temperature (a model setting the
    MMN head divides by too), given as a number.
    """

    def __init__(self, loss: LossConfig, *, mmn_temperature: float = 0.1) -> None:
        self.cfg = loss
        self.mmn_temperature = float(mmn_temperature)
        self.terms = loss_terms(type(self))
        s = loss.alignment_strength
        self.weights = {name: _weight(loss, name) * (s if t.aligned else 1.0) for name, t in self.terms.items()}
        self.loss_map: dict[str, Callable[[Outputs, Batch], torch.Tensor]] = {
            name: getattr(self, t.method) for name, t in self.terms.items()}

    def active(self, outputs: Outputs) -> list[str]:
        """Terms that apply to these outputs (switched-off modules and terms contribute nothing)."""
        return [name for name, t in self.terms.items()
                if self.weights[name] != 0.0 and all(k in outputs for k in t.needs)
                and (t.when is None or t.when(self.cfg, outputs))]

    def __call__(self, outputs: Outputs, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """-> (weighted total, {name: value} for logging, including ``total``)."""
        total = outputs["sim_global"].new_zeros((), dtype=torch.float32)
        logs: dict[str, float] = {}
        for name in self.active(outputs):
            value = self.loss_map[name](outputs, batch)
            total = total + self.weights[name] * value
            logs[name] = float(value.detach())
        logs["total"] = float(total.detach())
        return total, logs

    # -- the terms, in the order they are summed (and logged)
    @term("span", "start_logits")
    def loss_span(self, out: Outputs, batch: Batch) -> torch.Tensor:
        return (F.cross_entropy(out["start_logits"].float(), batch.start_idx)
                + F.cross_entropy(out["end_logits"].float(), batch.end_idx))

    @term("float", "float_offsets")
    def loss_float(self, out: Outputs, batch: Batch) -> torch.Tensor:
        off = out["float_offsets"].float()
        ar = torch.arange(off.shape[0], device=off.device)
        pred = torch.stack([off[ar, batch.start_idx, 0], off[ar, batch.end_idx, 1]], dim=1)
        return F.smooth_l1_loss(pred, torch.stack([batch.start_frac, batch.end_frac], dim=1), beta=0.1)

    def _map_iou(self, out: Outputs, batch: Batch) -> torch.Tensor:
        """IoU [Q, R, L] of every band cell of each query's own video with its ground truth (clips)."""
        length = out["map_logits"].shape[-1]
        return band_iou(batch.start_idx + batch.start_frac, batch.end_idx + batch.end_frac,
                        out["map_lengths"], length)

    def _scaled_iou(self, iou: torch.Tensor) -> torch.Tensor:
        """2D-TAN's cell targets: ``clamp((iou - map_min_iou) / (map_max_iou - map_min_iou), 0, 1)``."""
        lo, hi = self.cfg.map_min_iou, self.cfg.map_max_iou
        return ((iou - lo) / (hi - lo)).clamp(0.0, 1.0)

    @term("map", "map_logits")
    def loss_moment_map(self, out: Outputs, batch: Batch) -> torch.Tensor:
        """2D-TAN's loss: binary cross-entropy of every valid cell against its scaled IoU
        ``clamp((iou - min_iou) / (max_iou - min_iou), 0, 1)``, averaged per query."""
        logits = out["map_logits"].float()
        mask = out["map_band_mask"].float()
        target = self._scaled_iou(self._map_iou(out, batch))
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * mask
        return (bce.sum((1, 2)) / mask.sum((1, 2)).clamp(min=1.0)).mean()

    @term("map_rank", "map_logits", when=lambda cfg, out: "moment_sim" not in out)
    def loss_map_rank(self, out: Outputs, batch: Batch) -> torch.Tensor:
        """Cross-entropy of the softmax over a query's valid cells against its scaled-IoU targets
        normalised to sum to 1 (the best-IoU cell alone where no cell reaches ``map_min_iou``).

        Not in 2D-TAN. It ranks the cells of one query, so a shift of every logit leaves it
        unchanged: with the BCE alone, our features let the map collapse to pushing every cell
        negative, the cells at the edge of the mask (least convolved content) end on top and
        R1@0.5 stays at 0 (docs/model.md, "2D-TAN needs a ranking term"). MMN's mutual
        matching already ranks its cells, so the term runs for ``tan2d`` only."""
        logits = out["map_logits"].float().flatten(1)
        mask = out["map_band_mask"].flatten(1)
        iou = self._map_iou(out, batch).flatten(1).masked_fill(~mask, -1.0)
        target = self._scaled_iou(iou)
        none = target.sum(1) <= 0
        if bool(none.any()):
            best = F.one_hot(iou.argmax(1), iou.shape[1]).to(target.dtype)
            target = torch.where(none[:, None], best, target)
        target = target / target.sum(1, keepdim=True)
        logp = logits.masked_fill(~mask, float("-inf")).log_softmax(1).masked_fill(~mask, 0.0)
        return -(target * logp).sum(1).mean()

    @term("mmn_contrast", "moment_sim")
    def loss_mmn_contrast(self, out: Outputs, batch: Batch) -> torch.Tensor:
        """MMN's mutual matching. Sentence -> moment: the positive is the best-IoU cell of the
        query's video; negatives are that video's cells with IoU below ``map_min_iou`` and every
        cell of the other videos (items showing the same video are left out). Moment -> sentence:
        the positive moment against the batch's other sentences, except sentences of the same
        video whose moments overlap (IoU > 0.5) this one."""
        sim = out["moment_sim"].float() / self.mmn_temperature  # (Q, B, R, L)
        q, b = sim.shape[:2]
        flat = sim.reshape(q, b, -1)
        qv = batch.query_video
        ar = torch.arange(q, device=sim.device)
        own_mask = out["map_band_mask"]
        iou = self._map_iou(out, batch)
        best = iou.masked_fill(~own_mask, -1.0).flatten(1).argmax(1)  # (Q,)
        pos = flat[ar, qv, best]
        neg = out["moment_mask"][None].expand(q, -1, -1, -1) & ~batch.same_video[:, :, None, None]
        neg = neg.clone()
        neg[ar, qv] = own_mask & (iou < self.cfg.map_min_iou)
        s2m = info_nce(pos, flat.reshape(q, -1), neg.reshape(q, -1))
        m2s = flat[:, qv, best].T  # (Q moments, Q sentences): row i = positive moment of query i
        same_video = batch.same_video[:, qv]
        overlap = pairwise_temporal_iou(batch.span_norm, batch.span_norm) > 0.5
        neg_s = ~torch.eye(q, dtype=torch.bool, device=sim.device) & ~(same_video & overlap)
        return (s2m + info_nce(pos, m2s, neg_s)) / 2

    @term("rince", "sim_global", aligned=True)
    def loss_rince(self, out: Outputs, batch: Batch) -> torch.Tensor:
        logits = out["sim_global"].float() / self.cfg.rince_temperature
        q, lam = self.cfg.rince_q, self.cfg.rince_lambda
        return both_ways(logits, batch, out["negatives"], lambda p, n, m: rince(p, n, m, q, lam))

    @term("csm", "csm_spans")
    def loss_csm(self, out: Outputs, batch: Batch) -> torch.Tensor:
        pred = out["csm_spans"].float()
        return F.l1_loss(pred, batch.span_norm) + (1 - temporal_iou(pred, batch.span_norm)).mean()

    @term("contrast", "sim_match", aligned=True)
    def loss_contrast(self, out: Outputs, batch: Batch) -> torch.Tensor:
        s = out["sim_match"].float()  # (Q, B)
        neg = out["negatives"]
        qv = batch.query_video
        pos = s.gather(1, qv[:, None])  # (Q, 1): s(v+, q)
        margin = self.cfg.contrast_margin
        terms = []
        if self.cfg.contrast_video_negatives:  # (q, v+, v-)
            hinge = F.relu(margin - pos + s) * neg
            terms.append(self.cfg.contrast_balance * hinge.sum() / neg.sum().clamp(min=1))
        if self.cfg.contrast_query_negatives:  # (v, q+, q-): q- are queries for which v is a negative
            s_vq = s[:, qv].T  # (Q, Q): row i = s(video(i), every query j)
            n_vq = neg[:, qv].T
            hinge = F.relu(margin - pos + s_vq) * n_vq
            terms.append(hinge.sum() / n_vq.sum().clamp(min=1))
        return sum(terms, s.new_zeros(()))

    @term("align", aligned=True, when=_aligns)
    def loss_align(self, out: Outputs, batch: Batch) -> torch.Tensor:
        sims = []
        if "sim_as" in out and self.cfg.apa_aa:
            sims.append(out["sim_as"])
        if "sim_op" in out and self.cfg.opm_oca:
            sims.append(out["sim_op"])
        scale = out["logit_scale"]
        return sum((both_ways(sim.float() * scale, batch, out["negatives"], info_nce) for sim in sims),
                   out["sim_global"].new_zeros((), dtype=torch.float32))

    @term("segment", "sim_segment", aligned=True, when=lambda cfg, out: cfg.segment_alignment)
    def loss_segment(self, out: Outputs, batch: Batch) -> torch.Tensor:
        sim = out["sim_segment"].float() * out["logit_scale"]  # (Q moments, Q sentences)
        qv = batch.query_video
        same_video = batch.same_video[:, qv]  # (Q, Q): query j is about query i's video (any item)
        overlap = pairwise_temporal_iou(batch.span_norm, batch.span_norm) > 0.5
        # other sentences of the same video whose moments overlap this one are not negatives
        neg = ~torch.eye(len(qv), dtype=torch.bool, device=sim.device) & ~(same_video & overlap)
        pos = sim.diagonal()
        return (info_nce(pos, sim, neg) + info_nce(pos, sim.T, neg.T)) / 2

    @term("highlight", "highlight_logits")
    def loss_highlight(self, out: Outputs, batch: Batch) -> torch.Tensor:
        """Binary cross-entropy of every valid clip being inside its query's moment, the
        inside and outside clips weighted equally (moments are short beside their videos)."""
        logits = out["highlight_logits"].float()
        mask = out["clip_mask"]
        ar = torch.arange(logits.shape[1], device=logits.device)
        inside = ((ar[None] >= batch.start_idx[:, None]) & (ar[None] <= batch.end_idx[:, None])).float()
        per = F.binary_cross_entropy_with_logits(logits, inside, reduction="none")
        pos = (inside * mask).sum(1).clamp_min(1.0)
        neg = ((1 - inside) * mask).sum(1).clamp_min(1.0)
        w = (inside / pos[:, None] + (1 - inside) / neg[:, None]) * mask * 0.5
        return (per * w).sum(1).mean()


def build_criterion(loss: LossConfig, model: ModelConfig | None = None) -> MKTNCriterion:
    """The criterion of a config's loss section (``model``: only for MMN's score temperature)."""
    return MKTNCriterion(loss, mmn_temperature=(model or ModelConfig()).mmn_temperature)
