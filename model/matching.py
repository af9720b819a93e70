"""Adaptive video-query matching (AVM): adaptive negative selection and self-weighted contrast.

Adaptive negative selection (Eq. 1-2): for query ``q`` a non-paired video ``v``
stays a negative only if ``sim(v, phi(q)) < tau(t)``, where ``phi`` projects the
query into the video space and ``tau`` is cosine-annealed over training progress
``t`` in ``[0, 1]``; more similar "negatives" are taken as false negatives.

Self-weighted cross-modal contrast (Eq. 3-4): words and clips pass a shared
transformer encoder into one subspace; ``s(v, q) = sum_n alpha_n max_t cos(w_n, f_t)``
with word weights ``alpha`` (softmax of a learned score per word).

``GlobalAlignment`` gives the pooled video embedding and ``phi(q)``: their cosine
is the ANS similarity, the global RINCE logits, and (pooled over the ground-truth
clips) the segment-level alignment of the multi-level paper.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.encoders import transformer_encoder


def tau_schedule(progress: float, tau_start: float, tau_end: float) -> float:
    """Eq. 2: ``tau_end + (tau_start - tau_end) * (1 + cos(pi * t)) / 2`` with ``t`` clamped to [0, 1].

    >>> tau_schedule(0.0, 0.9, 0.6), tau_schedule(1.0, 0.9, 0.6)
    (0.9, 0.6)
    """
    t = min(max(float(progress), 0.0), 1.0)
    return tau_end + (tau_start - tau_end) * (1.0 + math.cos(math.pi * t)) / 2.0


def select_negatives(similarity: torch.Tensor, same_video: torch.Tensor, tau: float | None) -> torch.Tensor:
    """Eq. 1: negatives [Q, B] = items showing another video whose similarity is below ``tau``.

    ``tau`` None keeps every other video (no selection).
    """
    negatives = ~same_video
    if tau is not None:
        negatives = negatives & (similarity.detach() < tau)
    return negatives


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of ``x`` over ``dim`` where ``mask`` (broadcast to ``x`` minus its last dim) is True."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1.0)


class Centering(nn.Module):
    """Mean-only batch normalisation: subtract the mean embedding before the cosine.

    Training: the batch mean (gradients flow through it, so moving every embedding
    along one shared direction changes nothing) and an exponential running mean is
    updated; evaluation, or a batch of one: the running mean. Without it the global
    embeddings collapse (docs/model.md, "Why the global embeddings collapsed"):
    the skip-thought sentence vectors share one dominant direction (phi(q) of different
    queries: cosine 0.986 at initialisation), and RINCE rewards raising every similarity at once.
    """

    def __init__(self, dim: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.running_mean: torch.Tensor
        self.register_buffer("running_mean", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, d] -> x minus the (batch or running) mean."""
        if self.training and x.shape[0] > 1:
            mean = x.mean(dim=0)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
            return x - mean
        return x - self.running_mean.to(x.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # a checkpoint from before centring existed: a zero mean evaluates exactly as that model did
        state_dict.setdefault(prefix + "running_mean", torch.zeros_like(self.running_mean))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class GlobalAlignment(nn.Module):
    """Pooled video embedding and the query projection ``phi`` in one latent space.

    ``centering`` (default on) centres each population (whole videos, ground-truth moments,
    queries) on its mean before the unit norm, so the cosine of Eq. 1 measures how a video
    and a query differ from the average, not the direction all of them share.
    """

    def __init__(self, d_model: int, centering: bool = True) -> None:
        super().__init__()
        self.video = nn.Linear(d_model, d_model)
        self.phi = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, d_model))
        self.video_center: nn.Module = Centering(d_model) if centering else nn.Identity()
        self.segment_center: nn.Module = Centering(d_model) if centering else nn.Identity()
        self.query_center: nn.Module = Centering(d_model) if centering else nn.Identity()

    def project_clips(self, clips: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """clips [N, L, d], mask [N, L] -> projected masked mean [N, d] (before centring and norm)."""
        return self.video(masked_mean(clips, mask, dim=-2))

    def embed_clips(self, clips: torch.Tensor, mask: torch.Tensor, *, segment: bool = False,
                    projected: torch.Tensor | None = None) -> torch.Tensor:
        """clips [N, L, d], mask [N, L] -> unit embedding [N, d] of the masked mean, centred.

        ``segment``: the clips are ground-truth moments (centred on the moments' own mean).
        ``projected``: ``project_clips(clips, mask)`` when the caller already has it.
        """
        x = self.project_clips(clips, mask) if projected is None else projected
        center = self.segment_center if segment else self.video_center
        return F.normalize(center(x), dim=-1)

    def embed_query(self, sentence: torch.Tensor, *, projected: torch.Tensor | None = None) -> torch.Tensor:
        """sentence [Q, d] -> phi(q) [Q, d], centred, unit norm (``projected``: ``phi(sentence)``)."""
        x = self.phi(sentence) if projected is None else projected
        return F.normalize(self.query_center(x), dim=-1)


class SelfWeightedContrast(nn.Module):
    """Shared-subspace encoder and the self-weighted score of Eq. 4."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.video_in = nn.Linear(d_model, d_model)
        self.word_in = nn.Linear(d_model, d_model)
        self.shared = transformer_encoder(d_model, num_heads, 1, dropout)  # one encoder for both modalities
        self.word_score = nn.Linear(d_model, 1)

    def forward(self, clips: torch.Tensor, clip_mask: torch.Tensor, words: torch.Tensor,
                word_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """clips [B, L, d], words [Q, N, d] -> (scores s(v, q) as [Q, B], word weights alpha [Q, N])."""
        f = F.normalize(self.shared(self.video_in(clips), src_key_padding_mask=~clip_mask), dim=-1)
        w = self.shared(self.word_in(words), src_key_padding_mask=~word_mask)
        alpha = self.word_score(w).squeeze(-1).masked_fill(~word_mask, float("-inf")).softmax(-1)  # (Q, N)
        w = F.normalize(w, dim=-1)
        cos = torch.einsum("qnd,bld->qnbl", w, f)  # (Q, N, B, L)
        cos = cos.masked_fill(~clip_mask[None, None], -2.0)
        best = cos.max(dim=-1).values  # (Q, N, B): best clip per word
        return torch.einsum("qn,qnb->qb", alpha, best), alpha


DIAGNOSTICS = ("ans_kept", "video_cos", "query_cos", "video_cos_raw", "query_cos_raw", "sim_pos", "sim_neg")


@torch.no_grad()
def embedding_diagnostics(outputs: dict[str, torch.Tensor], query_video: torch.Tensor,
                          same_video: torch.Tensor) -> dict[str, float]:
    """What shows a collapse of the global embeddings, for one batch (all plain floats):

    - ``ans_kept``: fraction of the other-video candidates that ANS kept as negatives
      (1 = none excluded; 0 = every negative removed, the contrastive terms are off)
    - ``video_cos``: mean cosine between the pooled embeddings of different items' videos
    - ``query_cos``: mean cosine between different queries' ``phi(q)``
    - ``video_cos_raw`` / ``query_cos_raw``: the same before centring (``GlobalAlignment``):
      near 1 = one shared direction dominates. With centring on, ``video_cos`` sits near
      ``-1/(B-1)`` by construction, and a collapse would show as ``sim_pos`` ~ ``sim_neg``
    - ``sim_pos`` / ``sim_neg``: mean ``sim(v, phi(q))`` of the positives / of the candidates
      (other videos): the gap is what ANS and RINCE work with

    ``query_video`` [Q] (each query's item), ``same_video`` [Q, B] (item shows the query's video).
    """
    sim = outputs["sim_global"].float()
    candidates = ~same_video
    n_cand = int(candidates.sum())
    kept = float(outputs["negatives"].sum()) / n_cand if n_cand else float("nan")

    def mean_offdiag(x: torch.Tensor) -> float:
        x = x.float()
        n = x.shape[0]
        if n < 2:
            return float("nan")
        g = x @ x.T
        return float((g.sum() - g.diagonal().sum()) / (n * (n - 1)))

    pos = sim.gather(1, query_video[:, None])
    return {
        "ans_kept": kept,
        "video_cos": mean_offdiag(outputs["video_embed"]),
        "query_cos": mean_offdiag(outputs["query_embed"]),
        "video_cos_raw": mean_offdiag(F.normalize(outputs["video_proj"].float(), dim=-1)),
        "query_cos_raw": mean_offdiag(F.normalize(outputs["query_proj"].float(), dim=-1)),
        "sim_pos": float(pos.mean()),
        "sim_neg": float(sim[candidates].mean()) if n_cand else float("nan"),
    }
