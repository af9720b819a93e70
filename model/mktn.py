"""The Multi-Thread Knowledge Transfer Network.

One forward pass serves a whole multi-pair batch: each of the ``B`` videos is
encoded once; its queries gather the encoded video by index. Module switches
(``ModelConfig.use_*``) remove a module entirely, so the ablations of Tables 3-7
are the same code with other switches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from model.config import ModelConfig
from model.csm import CrossSentenceMining
from model.data import Batch
from model.encoders import TextEncoder, VideoEncoder, WordPooling
from model.fusion import CoAttentionFusion, QueryPatchAttention
from model.heads import ClipEvidence, FloatPredictor, HighlightHead, SpanPredictor
from model.matching import GlobalAlignment, SelfWeightedContrast, select_negatives, tau_schedule
from model.moment_map import MMNHead, TAN2DHead
from model.prototypes import (
    ActivityPrototypes,
    ObjectPhraseMatching,
    SparseAggregator,
    activity_similarity,
)


class MKTN(nn.Module):
    """Video encoder, text encoder, CSM, AVM, OPM, APA, co-attention fusion and grounding heads.

    ``forward(batch, progress)`` returns a dict (``B`` videos, ``Q`` queries,
    ``L`` clips):

    - ``start_logits``, ``end_logits`` [Q, L]: span predictor (padding = -1e4)
    - ``float_offsets`` [Q, L, 2]: fractional start/end offsets per clip
    - ``clip_mask`` [Q, L]: valid clips of each query's video
    - ``sim_global`` [Q, B]: cos(pooled video, phi(query)), the ANS similarity
    - ``negatives`` [Q, B] bool: the negatives kept by ANS (other videos below tau)
    - ``tau`` [] : the threshold used (NaN when there is no selection)
    - ``logit_scale`` []: learned inverse temperature of the contrastive logits
    - ``video_embed`` [B, d], ``query_embed`` [Q, d]: unit global embeddings (centred, see
      ``GlobalAlignment``); ``video_proj`` [B, d], ``query_proj`` [Q, d]: the same before
      centring and norm (diagnostics)
    - ``sim_segment`` [Q, Q]: cos(pooled ground-truth moment of query i, phi(query j))
    - ``csm_spans`` [Q, 2] (CSM on): normalised (start, end) of the parallel regression
    - ``sim_match`` [Q, B] (AVM on): self-weighted score s(v, q) of Eq. 4
    - ``sim_op`` [Q, B] (OPM on): object-phrase similarity
    - ``sim_as`` [Q, B] (APA on): activity-sentence similarity
    - ``highlight_logits`` [Q, L] (``highlight`` on): per clip, "inside the moment" (padding = -1e4)
    - ``patch_weights`` [Q, L, P] (``patch_attention`` on): each query's attention over the patches
      of every clip of its video

    ``model.head`` picks the grounding head. ``"span"``: ``start_logits``, ``end_logits``,
    ``float_offsets`` as above. ``"tan2d"`` / ``"mmn"`` (``model.moment_map``): instead of those,
    ``map_logits`` [Q, R, L] (the band of ``R`` sampled moment lengths, padding = -1e4),
    ``map_band_mask`` [Q, R, L], ``map_lengths`` [R], and for decoding ``map_scores`` [Q, L, L]
    (cell (i, j) = moment of clips i..j) with ``map_mask`` [Q, L, L]; ``"mmn"`` adds
    ``moment_sim`` [Q, B, R, L] and ``moment_mask`` [B, R, L]. ``"mmn"`` builds its moments from
    the video features alone (after OPM/APA, once per video) and skips the per-query fusion,
    patch attention and highlighting.
    """

    def __init__(self, cfg: ModelConfig, frame_dim: int, patch_dim: int, word_dim: int,
                 sentence_dim: int, temperature: float | None = None) -> None:
        super().__init__()
        d, h, p = cfg.d_model, cfg.num_heads, cfg.dropout
        self.cfg = cfg
        self.video_encoder = VideoEncoder(frame_dim, patch_dim, d, h, cfg.video_layers, cfg.num_clips, p,
                                          input_dropout=cfg.input_dropout,
                                          patch_temporal=cfg.patch_temporal)
        self.text_encoder = TextEncoder(word_dim, sentence_dim, d, h, cfg.text_layers, cfg.max_words, p)
        self.word_pooling = WordPooling(d) if cfg.word_pooling else None
        self.global_align = GlobalAlignment(d, centering=cfg.embed_centering)
        t0 = cfg.logit_temperature if temperature is None else temperature
        self.logit_scale = nn.Parameter(torch.tensor(float(-torch.log(torch.tensor(t0)))))
        self.csm = (CrossSentenceMining(d, h, cfg.csm_layers, cfg.max_queries_per_video, p,
                                        temporal=cfg.csm_temporal and cfg.query_order == "annotation",
                                        contextual=cfg.csm_contextual,
                                        semantic=cfg.csm_semantic) if cfg.use_csm else None)
        self.contrast = SelfWeightedContrast(d, h, p) if cfg.use_avm else None
        self.opm = (ObjectPhraseMatching(d, cfg.num_objects, cfg.num_phrases, sparse=cfg.opm_cap)
                    if cfg.use_opm else None)
        self.object_to_clip = nn.Linear(d, d) if cfg.use_opm else None
        self.apa = (ActivityPrototypes(d, h, cfg.num_clips, cfg.num_activities, p)
                    if cfg.use_apa and cfg.apa_bmp else None)
        # "w/o OPM" keeps APA's own object prototypes (no matching, no fusion of them)
        self.apa_objects = SparseAggregator(d, cfg.num_objects) if self.apa is not None and self.opm is None else None
        per_query = cfg.head != "mmn"  # MMN matches the sentence to a video-only map: no fusion
        evidence = cfg.head == "mmn" and cfg.map_evidence  # ... but may add per-query clip evidence
        self.patch_attention = (QueryPatchAttention(d, h, p)
                                if cfg.patch_attention and (per_query or evidence) else None)
        self.clip_evidence = ClipEvidence(d) if evidence else None
        self.fusion = CoAttentionFusion(d, p) if per_query else None
        self.highlight_head = HighlightHead(d) if cfg.highlight and per_query else None
        map_kw = dict(max_clips=cfg.map_max_clips, dense=cfg.map_dense_clips, layers=cfg.map_layers,
                      kernel=cfg.map_kernel, dropout=p)
        self.map_head: TAN2DHead | MMNHead | None = None
        if cfg.head == "span":  # attribute names as before: span checkpoints load unchanged
            self.span_head = SpanPredictor(d, h, cfg.head_layers, p)
            self.float_head = FloatPredictor(d)
        elif cfg.head == "tan2d":
            self.map_head = TAN2DHead(d, cfg.num_clips, **map_kw)  # type: ignore[arg-type]
        elif cfg.head == "mmn":
            self.map_head = MMNHead(d, cfg.num_clips, temperature=cfg.mmn_temperature,
                                    **map_kw)  # type: ignore[arg-type]
        else:
            raise ValueError(f"model.head={cfg.head!r}; use span, tan2d or mmn")

    def tau(self, progress: float) -> float | None:
        c = self.cfg
        if not c.use_avm or c.negative_selection == "none":
            return None
        if c.negative_selection == "fixed":
            return c.tau_fixed
        return tau_schedule(progress, c.tau_start, c.tau_end)

    def forward(self, batch: Batch, progress: float = 1.0) -> dict[str, torch.Tensor]:
        c = self.cfg
        clips, patches = self.video_encoder(batch.frames, batch.patches, batch.video_mask)  # (B,L,d), (B,L,P,d)
        words, sentence = self.text_encoder(batch.words, batch.word_mask, batch.sentence)  # (Q,N,d), (Q,d)
        if self.word_pooling is not None:
            sentence = self.word_pooling(words, batch.word_mask, sentence)
        qv = batch.query_video
        out: dict[str, Any] = {}

        # global alignment, adaptive negative selection (Eq. 1-2)
        video_proj = self.global_align.project_clips(clips, batch.video_mask)  # (B, d)
        query_proj = self.global_align.phi(sentence)  # (Q, d)
        video_embed = self.global_align.embed_clips(clips, batch.video_mask, projected=video_proj)
        query_embed = self.global_align.embed_query(sentence, projected=query_proj)
        sim_global = query_embed @ video_embed.T  # (Q, B)
        tau = self.tau(progress)
        out.update(video_embed=video_embed, query_embed=query_embed, sim_global=sim_global,
                   video_proj=video_proj, query_proj=query_proj,
                   negatives=select_negatives(sim_global, batch.same_video, tau),
                   tau=sim_global.new_tensor(float("nan") if tau is None else tau),
                   logit_scale=self.logit_scale.clamp(0.0, 4.6).exp())
        # segment level: each query's ground-truth clips of its own video, pooled
        ar = torch.arange(clips.shape[1], device=clips.device)
        seg_mask = (ar[None] >= batch.start_idx[:, None]) & (ar[None] <= batch.end_idx[:, None])
        seg_mask = seg_mask & batch.video_mask[qv]
        seg_embed = self.global_align.embed_clips(clips[qv], seg_mask, segment=True)  # (Q, d)
        out["sim_segment"] = seg_embed @ query_embed.T  # (Q moments, Q sentences)

        if self.contrast is not None:
            out["sim_match"], out["word_weights"] = self.contrast(clips, batch.video_mask, words, batch.word_mask)

        # object-phrase prototypes (OPM) and activity-sentence prototypes (APA)
        video_feats = clips
        tokens = [words]
        token_masks = [batch.word_mask]
        objects = None
        if self.opm is not None and self.object_to_clip is not None:
            o = self.opm(patches, batch.video_mask, words, batch.word_mask)
            objects = o["objects"]
            out["sim_op"] = o["sim_op"]
            video_feats = video_feats + self.object_to_clip(objects.mean(dim=2))
            tokens.append(o["phrases"])
            token_masks.append(torch.ones(o["phrases"].shape[:2], dtype=torch.bool, device=words.device))
        if c.use_apa:
            if self.apa is not None:
                if objects is None:
                    assert self.apa_objects is not None
                    objects = self.apa_objects(patches)[0]
                a = self.apa(objects, video_feats, batch.video_mask, sentence)
                video_feats = a["frame_protos"]
                out["sim_as"] = a["sim_as"]
            else:  # "w/o BMP": one activity prototype, the mean of the clips
                acts = (clips * batch.video_mask[..., None]).sum(1) / batch.video_mask.sum(1, keepdim=True)
                out["sim_as"] = activity_similarity(acts[:, None], sentence)

        # cross-sentence semantic mining (CSM)
        if self.csm is not None:
            query_vec, out["csm_spans"] = self.csm(sentence, batch.group_index, batch.query_order, clips,
                                                   batch.video_mask, words, batch.word_mask)
        else:
            query_vec = sentence
        tokens.append(query_vec[:, None])
        token_masks.append(torch.ones(query_vec.shape[0], 1, dtype=torch.bool, device=words.device))

        # fusion and heads, per query on its own video
        clip_mask = batch.video_mask[qv]  # (Q, L)
        out["clip_mask"] = clip_mask
        if isinstance(self.map_head, MMNHead):  # moments of each video once, shared by its queries
            evidence = None
            if self.clip_evidence is not None:  # per query: its clips, plus its attended patches
                own_view = video_feats[qv]
                if self.patch_attention is not None:
                    attended, out["patch_weights"] = self.patch_attention(patches[qv], words, batch.word_mask,
                                                                          query_vec)
                    own_view = own_view + attended
                evidence = out["highlight_logits"] = self.clip_evidence(own_view, query_vec, clip_mask)
            out.update(self.map_head(video_feats, batch.video_mask, query_vec, qv, clip_evidence=evidence))
            return out
        assert self.fusion is not None
        query_video = video_feats[qv]  # (Q, L, d)
        if self.patch_attention is not None:
            attended, out["patch_weights"] = self.patch_attention(patches[qv], words, batch.word_mask,
                                                                  query_vec)
            query_video = query_video + attended
        fused = self.fusion(query_video, clip_mask, torch.cat(tokens, 1), torch.cat(token_masks, 1))
        if self.highlight_head is not None:
            out["highlight_logits"], fused = self.highlight_head(fused, clip_mask)
        if isinstance(self.map_head, TAN2DHead):
            out.update(self.map_head(fused, clip_mask, query_vec))
            return out
        out["start_logits"], out["end_logits"] = self.span_head(fused, clip_mask)
        out["float_offsets"] = self.float_head(fused)
        return out


def build_model(cfg: ModelConfig, frame_dim: int, patch_dim: int, word_dim: int, sentence_dim: int,
                temperature: float | None = None) -> MKTN:
    """The network for features of the given widths (``temperature``: the initial one of the
    contrastive logits; default ``cfg.logit_temperature``)."""
    return MKTN(cfg, frame_dim, patch_dim, word_dim, sentence_dim, temperature)
