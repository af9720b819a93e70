"""Prototype alignment: object-phrase matching (OPM) and activity-sentence alignment (APA).

OPM: three FC + ReLU layers predict sparse non-negative weights over the ``P``
patches of a clip for each of ``K`` object prototypes (and over the words of a
query for each of ``M`` phrase prototypes); prototypes are weight-normalised sums.
``S_op[q, v] = mean_k max_t max_m cos(object[v, t, k], phrase[q, m])`` (the paper's
sum over objects, divided by ``K`` to keep it in [-1, 1]).

APA: a frame decoder whose learned query for clip ``t`` attends only to the object
prototypes of clip ``t`` (the attention mask of Eq. 5), plus the clip's global
feature, gives frame prototypes; an activity decoder's ``A`` learned queries attend
to all frame prototypes, giving activity prototypes;
``S_as[q, v] = max_a cos(activity[v, a], sentence[q])``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.matching import masked_mean


class SparseAggregator(nn.Module):
    """Three FC layers with ReLU -> sparse non-negative weights of ``num_prototypes`` prototypes."""

    def __init__(self, d_model: int, num_prototypes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, d_model), nn.ReLU(),
            nn.Linear(d_model, num_prototypes), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [..., P, d] (mask [..., P]) -> (prototypes [..., K, d], weights [..., P, K])."""
        w = self.net(x)  # (..., P, K)
        if mask is not None:
            w = w * mask.unsqueeze(-1).to(w.dtype)
        # a small uniform floor keeps a prototype defined when every weight is zero
        floor = 1e-4 if mask is None else 1e-4 * mask.unsqueeze(-1).to(w.dtype)
        w = w + floor
        w = w / w.sum(dim=-2, keepdim=True)
        return torch.einsum("...pk,...pd->...kd", w, x), w


def prototype_similarity(objects: torch.Tensor, clip_mask: torch.Tensor, phrases: torch.Tensor) -> torch.Tensor:
    """objects [B, L, K, d], clip_mask [B, L], phrases [Q, M, d] -> S_op [Q, B]."""
    o = F.normalize(objects, dim=-1)
    p = F.normalize(phrases, dim=-1)
    cos = torch.einsum("blkd,qmd->qblkm", o, p)  # (Q, B, L, K, M)
    best_phrase = cos.max(dim=-1).values  # (Q, B, L, K)
    best_phrase = best_phrase.masked_fill(~clip_mask[None, :, :, None], -2.0)
    return best_phrase.max(dim=2).values.mean(dim=-1)  # max over clips, mean over objects


class ObjectPhraseMatching(nn.Module):
    def __init__(self, d_model: int, num_objects: int, num_phrases: int, *, sparse: bool = True) -> None:
        super().__init__()
        self.sparse = sparse
        self.objects = SparseAggregator(d_model, num_objects)
        self.phrases = SparseAggregator(d_model, num_phrases)

    def forward(self, patches: torch.Tensor, clip_mask: torch.Tensor, words: torch.Tensor,
                word_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """patches [B, L, P, d], words [Q, N, d] -> objects [B, L, K, d], phrases [Q, M, d], S_op [Q, B]."""
        if self.sparse:
            objects, _ = self.objects(patches)
            phrases, _ = self.phrases(words, word_mask)
        else:  # "w/o CAP": one dense prototype per clip and per query
            objects = patches.mean(dim=2, keepdim=True)
            phrases = masked_mean(words, word_mask, dim=1).unsqueeze(1)
        return {"objects": objects, "phrases": phrases,
                "sim_op": prototype_similarity(objects, clip_mask, phrases)}


def frame_decoder_mask(num_clips: int, num_objects: int, device: torch.device | None = None) -> torch.Tensor:
    """Eq. 5 as a boolean attention mask [L, L*K]: True (blocked) unless key k belongs to clip t.

    >>> frame_decoder_mask(2, 2).int().tolist()
    [[0, 0, 1, 1], [1, 1, 0, 0]]
    """
    clip_of_key = torch.arange(num_clips * num_objects, device=device) // num_objects
    return clip_of_key[None, :] != torch.arange(num_clips, device=device)[:, None]


class ActivityPrototypes(nn.Module):
    def __init__(self, d_model: int, num_heads: int, num_clips: int, num_activities: int,
                 dropout: float) -> None:
        super().__init__()
        self.frame_queries = nn.Parameter(torch.randn(num_clips, d_model) * 0.02)
        self.frame_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.key_proj = nn.Linear(d_model, d_model)
        self.frame_norm = nn.LayerNorm(d_model)
        self.frame_ff = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.ReLU(), nn.Linear(2 * d_model, d_model))
        self.activity_queries = nn.Parameter(torch.randn(num_activities, d_model) * 0.02)
        self.activity_decoder = nn.TransformerDecoderLayer(d_model, num_heads, dim_feedforward=2 * d_model,
                                                           dropout=dropout, batch_first=True, norm_first=True)
        self.activity_norm = nn.LayerNorm(d_model)

    PER_CLIP_FROM = 64  # clips from which attending per clip beats one masked attention (CPU, measured)

    def frames(self, objects: torch.Tensor, clips: torch.Tensor) -> torch.Tensor:
        """Masked frame decoder: objects [B, L, K, d], clips [B, L, d] -> frame prototypes [B, L, d].

        Eq. 5's mask (``frame_decoder_mask``) lets the query of clip ``t`` see only the ``K``
        object prototypes of clip ``t``. Two equal computations of it: one attention over all
        ``L*K`` keys with the mask (few clips), or, from ``PER_CLIP_FROM`` clips on, a batch of
        ``B*L`` one-query attentions over each clip's own ``K`` keys, which skips the blocked
        part of the ``L x L*K`` score matrix (``O(L K)`` per video instead of ``O(L^2 K)``;
        2-5x faster at 128-256 clips, slower at 32 where the many small attentions cost more).
        """
        b, length, k, d = objects.shape
        keys = self.key_proj(objects)  # (B, L, K, d)
        if length >= self.PER_CLIP_FROM:
            queries = self.frame_queries[:length].expand(b, length, d).reshape(b * length, 1, d)
            per_clip = keys.reshape(b * length, k, d)
            attended, _ = self.frame_attn(queries, per_clip, per_clip, need_weights=False)
            attended = attended.reshape(b, length, d)
        else:
            flat = keys.reshape(b, length * k, d)
            queries = self.frame_queries[:length].expand(b, length, d)
            mask = frame_decoder_mask(length, k, device=objects.device)
            attended, _ = self.frame_attn(queries, flat, flat, attn_mask=mask, need_weights=False)
        x = self.frame_norm(attended + clips)  # "+ the clip's original global feature"
        return x + self.frame_ff(x)

    def forward(self, objects: torch.Tensor, clips: torch.Tensor, clip_mask: torch.Tensor,
                sentence: torch.Tensor) -> dict[str, torch.Tensor]:
        """-> frame_protos [B, L, d], activities [B, A, d], S_as [Q, B] against sentence [Q, d]."""
        frames = self.frames(objects, clips)
        b = frames.shape[0]
        queries = self.activity_queries.expand(b, -1, -1)
        acts = self.activity_norm(self.activity_decoder(queries, frames, memory_key_padding_mask=~clip_mask))
        return {"frame_protos": frames, "activities": acts, "sim_as": activity_similarity(acts, sentence)}


def activity_similarity(activities: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
    """activities [B, A, d], sentence [Q, d] -> S_as [Q, B] = max over activities of the cosine."""
    cos = torch.einsum("bad,qd->qba", F.normalize(activities, dim=-1), F.normalize(sentence, dim=-1))
    return cos.max(dim=-1).values
