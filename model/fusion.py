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
