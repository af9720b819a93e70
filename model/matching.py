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


class GlobalAlignment(nn.Module):
    """Pooled video embedding and the query projection ``phi`` in one latent space."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.video = nn.Linear(d_model, d_model)
        self.phi = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, d_model))

    def embed_clips(self, clips: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """clips [..., L, d], mask [..., L] -> unit embedding [..., d] of the masked mean."""
        return F.normalize(self.video(masked_mean(clips, mask, dim=-2)), dim=-1)

    def embed_query(self, sentence: torch.Tensor) -> torch.Tensor:
        """sentence [Q, d] -> phi(q) [Q, d], unit norm."""
        return F.normalize(self.phi(sentence), dim=-1)


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
