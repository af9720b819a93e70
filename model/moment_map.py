"""Proposal-map grounding heads: 2D-TAN and MMN as plug-ins of MKTN (``model.head``).

Both score a 2D map of candidate moments ``(i, j)`` (start clip ``i``, end clip ``j >= i``).
The map is held as a *band* ``[R, L]``: row ``r`` holds the moments of ``lengths[r]`` clips,
column ``i`` the start clip, so cell ``(r, i)`` is the moment ``(i, i + lengths[r] - 1)``.
Lengths up to ``dense`` clips are all present; longer ones are sampled at strides that double
every ``dense`` clips (2D-TAN's sparse sampling), so a 128-clip video has 40 rows instead of
128. Convolutions run over the band (neighbours: moments of the next shorter/longer sampled
length and the next earlier/later start); every valid cell is copied into a dense ``[L, L]``
map for decoding.

- ``TAN2DHead`` (Zhang et al., AAAI 2020): moment features max-pooled from the per-query fused
  clip features, Hadamard product with the projected sentence, L2 norm, a masked stack of 2D
  convolutions (mask re-applied after each), a score per cell.
- ``MMNHead`` (Wang et al., AAAI 2022): moment features from the video alone (pooled once per
  video, its own masked convolutions), sentence features on their own, score = cosine / temperature;
  every query of a video shares its video's map, so the per-query work is one similarity.

>>> map_lengths(8, dense=4)
[1, 2, 3, 4, 6, 8]
>>> map_lengths(40, max_clips=0, dense=16)[-6:]
[24, 26, 28, 30, 32, 40]
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.spans import clip_edges, temporal_nms

NEG = -1e4  # score of cells that are not moments (finite: safe under fp16 autocast)


def map_lengths(num_clips: int, max_clips: int = 0, dense: int = 16) -> list[int]:
    """Moment lengths (clips) of the map rows: all of ``1..dense``, then strides 2, 4, 8 ...
    (doubling every time the length reaches ``dense * stride``), up to ``max_clips`` (0: the
    whole ``num_clips``), which is always the last row."""
    top = num_clips if max_clips <= 0 else min(max_clips, num_clips)
    out: list[int] = []
    n, stride = 1, 1
    while n <= top:
        out.append(n)
        if n >= dense * stride:
            stride *= 2
        n += stride
    if out[-1] != top:
        out.append(top)
    return out


def window_max(x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """x [N, L, d] -> [N, R, L, d]: cell (r, i) = max of x[i : i + lengths[r]] (a sparse table:
    windows of 2^p clips, then the max of two overlapping ones). Windows running past the end
    read zeros (such cells are masked)."""
    levels = [x]
    p = 1
    while 2 * p <= max(lengths):
        prev = levels[-1]
        levels.append(torch.maximum(prev, F.pad(prev[:, p:], (0, 0, 0, p))))
        p *= 2
    rows = []
    for n in lengths:
        k = n.bit_length() - 1
        lv = levels[k]
        off = n - (1 << k)
        rows.append(lv if off == 0 else torch.maximum(lv, F.pad(lv[:, off:], (0, 0, 0, off))))
    return torch.stack(rows, dim=1)


def window_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x [N, L] -> [N, R, L]: cell (r, i) = mean of x[i : i + lengths[r]] (prefix sums; windows
    running past the end count the missing clips as zeros, and such cells are masked)."""
    n, length = x.shape
    c = F.pad(torch.cumsum(x, dim=1), (1, 0))  # (N, L + 1)
    i = torch.arange(length, device=x.device)[None, :]
    j = (i + lengths[:, None]).clamp(max=length)  # (R, L)
    return (c[:, j] - c[:, i.expand_as(j)]) / lengths[None, :, None].to(x.dtype)


def band_mask(valid: torch.Tensor, lengths: torch.Tensor, num_clips: int) -> torch.Tensor:
    """valid [N] (real clips of each video), lengths [R] -> [N, R, L]: cell (r, i) is a moment
    inside the valid clips (``i + lengths[r] <= valid``)."""
    ends = torch.arange(num_clips, device=lengths.device)[None, :] + lengths[:, None]  # (R, L): i + len
    return ends[None] <= valid.to(lengths.device)[:, None, None]


def band_iou(start: torch.Tensor, end: torch.Tensor, lengths: torch.Tensor, num_clips: int) -> torch.Tensor:
    """IoU of every band cell (the clip span ``[i, i + len]``) with ``[start, end]`` (clip units,
    [Q] each) -> [Q, R, L]."""
    i = torch.arange(num_clips, device=lengths.device, dtype=torch.float32)[None, :]
    cs = i.expand(len(lengths), -1)  # (R, L)
    ce = i + lengths[:, None].float()
    s, e = start.float()[:, None, None], end.float()[:, None, None]
    inter = (torch.minimum(ce[None], e) - torch.maximum(cs[None], s)).clamp(min=0)
    union = torch.maximum(ce[None], e) - torch.minimum(cs[None], s)
    return inter / union.clamp(min=1e-6)


def band_to_dense(band: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor,
                  fill: float = NEG) -> tuple[torch.Tensor, torch.Tensor]:
    """band [N, R, L], mask [N, R, L] -> (dense [N, L, L] with cell (i, j) = moment i..j, ``fill``
    elsewhere; dense mask [N, L, L])."""
    n, _, length = band.shape
    i = torch.arange(length, device=band.device)[None, :]
    j = i + lengths[:, None] - 1  # (R, L)
    inside = j < length
    flat = (i * length + j.clamp(max=length - 1))[inside]  # (M,) unique cells
    dense = band.new_full((n, length * length), fill)
    dense[:, flat] = band[:, inside]
    dmask = torch.zeros(n, length * length, dtype=torch.bool, device=band.device)
    dmask[:, flat] = mask[:, inside]
    dense = dense.masked_fill(~dmask, fill)
    return dense.view(n, length, length), dmask.view(n, length, length)


class MaskedConvStack(nn.Module):
    """2D convolutions over the band, ReLU, the mask re-applied after each layer."""

    def __init__(self, d_model: int, layers: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(d_model, d_model, kernel, padding=kernel // 2)
                                   for _ in range(layers))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [N, d, R, L], mask [N, R, L] -> [N, d, R, L] (zero outside the mask)."""
        m = mask[:, None].to(x.dtype)
        x = x * m
        for conv in self.convs:
            x = F.relu(conv(self.drop(x))) * m
        return x


class _MapHead(nn.Module):
    lengths: torch.Tensor  # [R] moment lengths of the band rows (a buffer)

    # On CPU, maps are computed a few items (queries for tan2d, videos for mmn) at a time, each
    # slice at most this many elements of [items, d, R, L] (16 MiB in float32). A larger tensor is
    # its own mmap from the C allocator, zero-filled page by page on first touch at every step:
    # at the Charades-STA shape the whole-batch maps cost 51k page faults per query and made a
    # multi-pair tan2d step 10-32 % dearer per query than a one-query step (docs/benchmarks.md).
    # CUDA's caching allocator has no such cost: there the batch is one slice.
    CHUNK_ELEMENTS = 2**22

    def items_per_chunk(self, d_model: int, num_clips: int, items: int, device: torch.device) -> int:
        if device.type != "cpu":
            return max(1, items)
        return max(1, self.CHUNK_ELEMENTS // max(1, d_model * len(self.lengths_list) * num_clips))

    def __init__(self, num_clips: int, max_clips: int, dense: int) -> None:
        super().__init__()
        self.lengths_list = map_lengths(num_clips, max_clips, dense)
        self.register_buffer("lengths", torch.tensor(self.lengths_list, dtype=torch.long), persistent=False)

    def _outputs(self, logits: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        scores, dmask = band_to_dense(logits.detach(), mask, self.lengths)
        return {"map_logits": logits, "map_band_mask": mask, "map_lengths": self.lengths,
                "map_scores": scores, "map_mask": dmask}


class TAN2DHead(_MapHead):
    """2D-TAN on MKTN's per-query fused clip features -> band logits [Q, R, L] (see module doc)."""

    def __init__(self, d_model: int, num_clips: int, *, max_clips: int = 0, dense: int = 16,
                 layers: int = 2, kernel: int = 3, dropout: float = 0.1) -> None:
        super().__init__(num_clips, max_clips, dense)
        self.clip_proj = nn.Linear(d_model, d_model)
        self.sentence_proj = nn.Linear(d_model, d_model)
        self.convs = MaskedConvStack(d_model, layers, kernel, dropout)
        self.score = nn.Conv2d(d_model, 1, 1)

    def forward(self, fused: torch.Tensor, clip_mask: torch.Tensor,
                sentence: torch.Tensor) -> dict[str, torch.Tensor]:
        """fused [Q, L, d], clip_mask [Q, L], sentence [Q, d] -> map outputs (``map_logits`` [Q, R, L],
        ``map_band_mask``, ``map_lengths`` [R], ``map_scores`` / ``map_mask`` [Q, L, L])."""
        q, length, d = fused.shape
        mask = band_mask(clip_mask.sum(1), self.lengths, length)
        clips, sent = self.clip_proj(fused), self.sentence_proj(sentence)
        step = self.items_per_chunk(d, length, q, fused.device)  # each query's map is its own
        logits = []
        for i in range(0, q, step):
            moments = window_max(clips[i:i + step], self.lengths_list)  # (q', R, L, d)
            moments = F.normalize(moments * sent[i:i + step, None, None], dim=-1)
            logits.append(self.score(self.convs(moments.permute(0, 3, 1, 2), mask[i:i + step])).squeeze(1))
        return self._outputs(torch.cat(logits).masked_fill(~mask, NEG), mask)


class MMNHead(_MapHead):
    """MMN: video-only moment map, separate sentence embedding, cosine / temperature (module doc)."""

    def __init__(self, d_model: int, num_clips: int, *, max_clips: int = 0, dense: int = 16,
                 layers: int = 2, kernel: int = 3, dropout: float = 0.1, temperature: float = 0.1) -> None:
        super().__init__(num_clips, max_clips, dense)
        self.clip_proj = nn.Linear(d_model, d_model)
        self.convs = MaskedConvStack(d_model, layers, kernel, dropout)
        self.moment_out = nn.Conv2d(d_model, d_model, 1)
        self.sentence_out = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, d_model))
        self.scale = 1.0 / temperature

    def forward(self, video: torch.Tensor, video_mask: torch.Tensor, sentence: torch.Tensor,
                query_video: torch.Tensor, clip_evidence: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """video [B, L, d] (once per video), video_mask [B, L], sentence [Q, d], query_video [Q],
        optional ``clip_evidence`` [Q, L] (per-clip logits of each query, padding masked)
        -> the map outputs of ``TAN2DHead`` plus ``moment_sim`` [Q, B, R, L] (cosine of every
        query with every moment of every video) and ``moment_mask`` [B, R, L]. With evidence,
        a moment's score adds the mean evidence over its clips."""
        b, length, d = video.shape
        vmask = band_mask(video_mask.sum(1), self.lengths, length)
        clips = self.clip_proj(video)
        s_embed = F.normalize(self.sentence_out(sentence), dim=-1)
        step, sims = self.items_per_chunk(d, length, b, video.device), []
        for i in range(0, b, step):  # each video's map is its own (CHUNK_ELEMENTS)
            moments = window_max(clips[i:i + step], self.lengths_list).permute(0, 3, 1, 2)  # (b', d, R, L)
            m_embed = F.normalize(self.moment_out(self.convs(moments, vmask[i:i + step])), dim=1)
            sims.append(torch.einsum("qe,berl->qbrl", s_embed, m_embed))
        sim = torch.cat(sims, dim=1)  # (Q, B, R, L)
        own = sim[torch.arange(len(query_video), device=sim.device), query_video]  # (Q, R, L)
        mask = vmask[query_video]
        logits = own * self.scale
        if clip_evidence is not None:
            valid = video_mask[query_video]
            logits = logits + window_mean(clip_evidence.masked_fill(~valid, 0.0), self.lengths)
        out = self._outputs(logits.masked_fill(~mask, NEG), mask)
        out.update(moment_sim=sim, moment_mask=vmask)
        return out


def decode_map(scores: torch.Tensor, mask: torch.Tensor, clip_times: np.ndarray, *, top_k: int = 5,
               nms_iou: float = 0.5, max_span_clips: int = 0,
               candidates: int = 32) -> tuple[list[list[float]], list[float]]:
    """One query's dense map logits [L, L] and mask [L, L], its video's clip windows [T, 2]
    -> (spans in seconds best first, scores = sigmoid of the cell logits), as ``decode_query``:
    cell (i, j) covers the cells of clips i..j (``clip_edges``); temporal NMS keeps ``top_k``,
    widening the candidate pool (x4) while it keeps fewer."""
    t = len(clip_times)
    allowed = mask[:t, :t].cpu().clone()
    if max_span_clips > 0:
        allowed &= ~torch.ones(t, t, dtype=torch.bool).triu(max_span_clips)
    edges = clip_edges(clip_times)
    pairs = allowed.nonzero().numpy()  # (M, 2)
    if len(pairs) == 0:  # nothing selectable (cannot happen with a length-1 row): the first clip
        return [[float(edges[0]), float(edges[1])]], [0.0]
    logits = torch.nan_to_num(scores[:t, :t].float().cpu(), nan=0.0)[allowed]
    score = torch.sigmoid(logits).numpy().astype(np.float64)
    order = np.argsort(-score, kind="stable")
    k = min(max(int(candidates), int(top_k)), len(order))
    while True:
        sel = order[:k]
        spans = np.stack([edges[pairs[sel, 0]], edges[pairs[sel, 1] + 1]], axis=1)
        keep = temporal_nms(spans, score[sel], iou_threshold=nms_iou, top_k=top_k)
        if len(keep) >= top_k or k >= len(order):
            break
        k = min(len(order), 4 * k)
    return [[float(x) for x in spans[i]] for i in keep], [float(score[sel][i]) for i in keep]
