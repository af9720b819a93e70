"""Context-query co-attention and the Bi-GRU that fuses video and query (paper Sec. "Fusion").

``S = (V W_v)(Q W_q)^T / sqrt(d)`` over clips x query tokens; ``S_r``/``S_c`` are its
row/column softmaxes; ``A = S_r Q`` and ``B = S_r S_c^T V``; a Bi-GRU reads
``[V; A; V*A; V*B]`` over the valid clips (packed, so padding never leaks in).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class CoAttentionFusion(nn.Module):
    def __init__(self, d_model: int, dropout: float) -> None:
        super().__init__()
        self.wv = nn.Linear(d_model, d_model, bias=False)
        self.wq = nn.Linear(d_model, d_model, bias=False)
        self.gru = nn.GRU(4 * d_model, d_model // 2, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, video: torch.Tensor, video_mask: torch.Tensor, tokens: torch.Tensor,
                token_mask: torch.Tensor) -> torch.Tensor:
        """video [Q, L, d] (each query's own video), tokens [Q, N, d] -> fused [Q, L, d]."""
        s = torch.einsum("qld,qnd->qln", self.wv(video), self.wq(tokens)) / math.sqrt(video.shape[-1])
        s_r = s.masked_fill(~token_mask[:, None, :], float("-inf")).softmax(dim=2)  # over tokens
        s_c = s.masked_fill(~video_mask[:, :, None], float("-inf")).softmax(dim=1)  # over clips
        a = torch.bmm(s_r, tokens)  # (Q, L, d)
        b = torch.bmm(torch.bmm(s_r, s_c.transpose(1, 2)), video)  # (Q, L, d)
        x = self.dropout(torch.cat([video, a, video * a, video * b], dim=-1))  # (Q, L, 4d)
        lengths = video_mask.sum(1).cpu()
        packed = pack_padded_sequence(x.float(), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=video.shape[1])
        return self.norm(out.to(video.dtype))


class QueryPatchAttention(nn.Module):
    """Per query and clip, multi-head attention of the query over the clip's patches.

    MKTN's object and frame prototypes are computed from the video alone, so a clip feature
    mixes every object of the frame; a query about one object of several cannot tell whose
    colour goes with whose motion. Here the query (its masked mean word token plus its
    sentence vector) attends over the ``P`` patches of every clip of its own video, and the
    attended patch feature is added to that query's view of the clip before the fusion.
    Cost: ``Q x L x P`` scores, small beside the span head.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.query = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.LayerNorm(d_model))
        self.attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, patches: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor,
                sentence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """patches [Q, L, P, d] (each query's own video), words [Q, N, d], word_mask [Q, N],
        sentence [Q, d] -> (clip features [Q, L, d], attention weights [Q, L, P])."""
        q, length, p, d = patches.shape
        m = word_mask.to(words.dtype)[..., None]
        pooled = (words * m).sum(1) / m.sum(1).clamp_min(1.0)
        query = self.query(torch.cat([pooled, sentence], dim=-1))  # (Q, d)
        qs = query[:, None, None, :].expand(q, length, 1, d).reshape(q * length, 1, d)
        kv = patches.reshape(q * length, p, d)
        ctx, weights = self.attn(qs, kv, kv, need_weights=True)
        ctx = self.out(ctx.reshape(q, length, d))
        return ctx, weights.reshape(q, length, p)
