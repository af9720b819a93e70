"""Video and text encoders of MKTN.

``VideoEncoder``: 3D-CNN clip ("frame") features -> linear projection + learned
position embedding -> multi-head self-attention over clips; patch features get
their own projection (they feed object prototypes). ``TextEncoder``: GloVe word
vectors -> projection + position + self-attention; the skip-thought sentence
vector -> projection (the query-level feature of CSM and the sentence prototype
of APA). The GloVe and skip-thought vectors themselves come from the query store
(``pipeline.word_vectors``/``pipeline.skipthought``); this module learns on top of them.
"""

from __future__ import annotations

import torch
from torch import nn


def transformer_encoder(d_model: int, num_heads: int, num_layers: int, dropout: float) -> nn.TransformerEncoder:
    """Pre-norm transformer encoder (batch first) used by every self-attention stack here."""
    layer = nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward=2 * d_model, dropout=dropout,
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)


def padding_mask(valid: torch.Tensor) -> torch.Tensor | None:
    """``src_key_padding_mask`` for a [batch, length] validity mask; None when nothing is padded.

    Without a mask, attention takes the fused kernel instead of building an additive mask per
    head (same result; ~20% faster for the span predictor on CPU at the paper's sizes).
    """
    return None if bool(valid.all()) else ~valid


class VideoEncoder(nn.Module):
    def __init__(self, frame_dim: int, patch_dim: int, d_model: int, num_heads: int, num_layers: int,
                 num_clips: int, dropout: float, input_dropout: float = 0.0, patch_temporal: int = 0) -> None:
        super().__init__()
        # dropout on the standardised input features themselves: a few hundred training queries
        # are memorised through video-specific channels (background texture) without it
        self.input_dropout = nn.Dropout(input_dropout)
        self.frame_proj = nn.Sequential(nn.Linear(frame_dim, d_model), nn.LayerNorm(d_model), nn.Dropout(dropout))
        self.patch_proj = nn.Sequential(nn.Linear(patch_dim, d_model), nn.LayerNorm(d_model))
        self.pos = nn.Parameter(torch.zeros(num_clips, d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.encoder = transformer_encoder(d_model, num_heads, num_layers, dropout)
        self.patch_temporal = nn.ModuleList(nn.Sequential(nn.Conv1d(d_model, d_model, 3, padding=1), nn.GELU())
                                            for _ in range(patch_temporal))

    def forward(self, frames: torch.Tensor, patches: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [B, L, D], patches [B, L, P, D], mask [B, L] (True = clip) ->
        (clips [B, L, d], patches [B, L, P, d])."""
        x = self.frame_proj(self.input_dropout(frames)) + self.pos[: frames.shape[1]]  # (B, L, d)
        x = self.encoder(x, src_key_padding_mask=padding_mask(mask))
        p = self.patch_proj(self.input_dropout(patches))  # (B, L, P, d)
        if len(self.patch_temporal):
            b, length, n, d = p.shape
            m = mask[:, None, None, :].to(p.dtype)  # (B, 1, 1, L)
            y = p.permute(0, 2, 3, 1) * m  # (B, P, d, L)
            y = y.reshape(b * n, d, length)
            mm = m.expand(b, n, 1, length).reshape(b * n, 1, length)
            for layer in self.patch_temporal:
                y = y + layer(y * mm)
            p = y.reshape(b, n, d, length).permute(0, 3, 1, 2)
        return x, p


class TextEncoder(nn.Module):
    def __init__(self, word_dim: int, sentence_dim: int, d_model: int, num_heads: int, num_layers: int,
                 max_words: int, dropout: float) -> None:
        super().__init__()
        self.word_proj = nn.Sequential(nn.Linear(word_dim, d_model), nn.LayerNorm(d_model), nn.Dropout(dropout))
        self.sentence_proj = nn.Sequential(nn.Linear(sentence_dim, d_model), nn.LayerNorm(d_model))
        self.pos = nn.Parameter(torch.zeros(max_words, d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.encoder = transformer_encoder(d_model, num_heads, num_layers, dropout)

    def forward(self, words: torch.Tensor, word_mask: torch.Tensor,
                sentence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """words [Q, N, 300], word_mask [Q, N], sentence [Q, S] -> (words [Q, N, d], sentence [Q, d])."""
        x = self.word_proj(words) + self.pos[: words.shape[1]]
        x = self.encoder(x, src_key_padding_mask=padding_mask(word_mask))
        return x, self.sentence_proj(sentence)


class WordPooling(nn.Module):
    """A query vector from its own encoded words: attention pooling (one learnt score per word,
    softmax over the real words), a linear map, added to the sentence vector and normalised."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.score = nn.Linear(d_model, 1)
        self.out = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, words: torch.Tensor, word_mask: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """words [Q, N, d], word_mask [Q, N] (True = word), sentence [Q, d] -> [Q, d]."""
        logits = self.score(words).squeeze(-1).masked_fill(~word_mask, float("-inf"))
        pooled = torch.einsum("qn,qnd->qd", torch.softmax(logits, dim=-1), words)
        return self.norm(sentence + self.out(pooled))
