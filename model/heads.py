"""Grounding heads: the span predictor (Eq. 9) and the float predictor (Eq. 10)."""

from __future__ import annotations

import torch
from torch import nn

from model.encoders import padding_mask, transformer_encoder

NEG = -1e4  # logit of padded clips (finite: safe under fp16 autocast)


class SpanPredictor(nn.Module):
    """Two stacked transformer blocks and two feed-forward layers -> start/end logits per clip."""

    def __init__(self, d_model: int, num_heads: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.block_start = transformer_encoder(d_model, num_heads, max(1, num_layers // 2), dropout)
        self.block_end = transformer_encoder(d_model, num_heads, max(1, num_layers - num_layers // 2), dropout)
        self.ff_start = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.ReLU(), nn.Linear(d_model, 1))
        self.ff_end = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.ReLU(), nn.Linear(d_model, 1))

    def forward(self, fused: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fused [Q, L, d], mask [Q, L] -> (start logits [Q, L], end logits [Q, L]); padding = NEG."""
        pad = padding_mask(mask)
        h1 = self.block_start(fused, src_key_padding_mask=pad)
        h2 = self.block_end(h1, src_key_padding_mask=pad)
        start = self.ff_start(torch.cat([h1, fused], dim=-1)).squeeze(-1)
        end = self.ff_end(torch.cat([h2, fused], dim=-1)).squeeze(-1)
        return start.masked_fill(~mask, NEG), end.masked_fill(~mask, NEG)


class FloatPredictor(nn.Module):
    """Feed-forward layers -> fractional start/end offsets in [0, 1] for every clip."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, d_model // 2),
                                 nn.ReLU(), nn.Linear(d_model // 2, 2))

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        """fused [Q, L, d] -> offsets [Q, L, 2] (start, end)."""
        return torch.sigmoid(self.net(fused))


class HighlightHead(nn.Module):
    """Per-clip "inside the moment" logit (query-guided highlighting, as in VSLNet).

    Trained with a binary cross-entropy on every clip (``loss_highlight``), so each query
    supervises all its video's clips instead of two boundary clips; its sigmoid scales the
    fused features before the span predictor, so the span search concentrates on the
    highlighted region.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_model // 2), nn.ReLU(), nn.Linear(d_model // 2, 1))

    def forward(self, fused: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fused [Q, L, d], mask [Q, L] -> (logits [Q, L] (padding = NEG), highlighted fused [Q, L, d])."""
        logits = self.net(fused).squeeze(-1)
        return logits.masked_fill(~mask, NEG), fused * torch.sigmoid(logits)[..., None]


class ClipEvidence(nn.Module):
    """Per query and clip, an "inside the moment" logit from the query's own view of the clip
    (clip feature plus its query-attended patches) and the query vector (``model.map_evidence``)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.query = nn.Linear(d_model, d_model)
        self.net = nn.Sequential(nn.Linear(2 * d_model, d_model // 2), nn.ReLU(), nn.Linear(d_model // 2, 1))

    def forward(self, clips: torch.Tensor, query: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """clips [Q, L, d], query [Q, d], mask [Q, L] -> logits [Q, L] (padding = NEG)."""
        q = self.query(query)[:, None]
        logits = self.net(torch.cat([clips, clips * q], dim=-1)).squeeze(-1)
        return logits.masked_fill(~mask, NEG)
