"""Cross-sentence semantic mining (CSM): a video's queries look at each other and at the video.

The query-level (skip-thought) vectors of one video's queries get a position
embedding by their order in the video's annotation (*temporal* relationship; the
order the annotator wrote them, never the ground-truth times) only when the dataset
declares that order meaningful (``model.query_order = "annotation"``; with ``"none"``
``temporal`` is off and nothing here reads the order: the layers are permutation
equivariant over a video's queries), attend to each other
(*contextual* relationship), and attend into a multi-modal memory
``[clip features ; word features of all the video's queries]`` (*semantic*
relationship: queries sharing words meet through the memory). A parallel
regression head predicts every query's normalised ``(start, end)`` at once
(an auxiliary L1 + IoU loss); the contextualised vectors feed the fusion.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossSentenceMining(nn.Module):
    def __init__(self, d_model: int, num_heads: int, num_layers: int, max_queries: int, dropout: float, *,
                 temporal: bool = True, contextual: bool = True, semantic: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temporal, self.contextual, self.semantic = temporal, contextual, semantic
        self.order_embed = nn.Embedding(max_queries, d_model)
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(d_model, num_heads, dim_feedforward=2 * d_model, dropout=dropout,
                                       batch_first=True, norm_first=True)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.regress = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, 2))

    def forward(self, sentence: torch.Tensor, group_index: torch.Tensor, query_order: torch.Tensor,
                clips: torch.Tensor, clip_mask: torch.Tensor, words: torch.Tensor,
                word_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sentence [Q, d], group_index [B, G] (-1 pad), query_order [Q], clips [B, L, d],
        clip_mask [B, L], words [Q, N, d], word_mask [Q, N] ->
        (contextualised queries [Q, d], normalised spans [Q, 2] as (start, end) in [0, 1])."""
        b, g = group_index.shape
        pad = group_index < 0  # (B, G)
        idx = group_index.clamp(min=0)
        x = sentence[idx]  # (B, G, d)
        if self.temporal:
            order = query_order.clamp(max=self.order_embed.num_embeddings - 1)
            x = x + self.order_embed(order)[idx]
        memory, memory_mask = clips, clip_mask
        if self.semantic:
            n = words.shape[1]
            mem_words = words[idx].reshape(b, g * n, -1)  # (B, G*N, d)
            mem_wmask = (word_mask[idx] & ~pad[:, :, None]).reshape(b, g * n)
            memory = torch.cat([clips, mem_words], dim=1)
            memory_mask = torch.cat([clip_mask, mem_wmask], dim=1)
        eye = torch.eye(g, dtype=torch.bool, device=x.device)
        if self.contextual:
            blocked = pad[:, None, :] & ~eye  # (B, G, G): no attention to padding, always to itself
        else:
            blocked = (~eye).expand(b, g, g)  # each query sees only itself
        tgt_mask = blocked.repeat_interleave(self.num_heads, dim=0)  # (B*heads, G, G)
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_key_padding_mask=~memory_mask)
        x = self.norm(x)
        cw = torch.sigmoid(self.regress(x))  # (B, G, 2): centre, width
        spans = torch.stack([cw[..., 0] - cw[..., 1] / 2, cw[..., 0] + cw[..., 1] / 2], dim=-1).clamp(0, 1)
        flat = ~pad.reshape(-1)
        q = sentence.shape[0]
        out = sentence.new_zeros(q, x.shape[-1])
        out_spans = sentence.new_zeros(q, 2)
        out[group_index.reshape(-1)[flat]] = x.reshape(b * g, -1)[flat]
        out_spans[group_index.reshape(-1)[flat]] = spans.reshape(b * g, 2)[flat]
        return out, out_spans
