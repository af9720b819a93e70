"""MKTN network: output shapes of every module, the frame decoder's mask, switches, config."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import planted_data

from model.config import VARIANTS, MKTNConfig, override, preset, variant
from model.csm import CrossSentenceMining
from model.data import collate, make_groups, prepare
from model.encoders import TextEncoder, VideoEncoder, WordPooling
from model.fusion import CoAttentionFusion
from model.heads import FloatPredictor, SpanPredictor
from model.losses import build_criterion
from model.matching import GlobalAlignment, SelfWeightedContrast
from model.mktn import build_model
from model.prototypes import ActivityPrototypes, ObjectPhraseMatching, frame_decoder_mask

D = 32  # model width in these tests


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small():
    cfg = override(preset("synthetic"), ["model.num_clips=16", f"model.d_model={D}", "model.dropout=0", "model.head=span"])
    data = planted_data(num_videos=6, queries_per_video=3, clips=16, dim=12, sentence_dim=20)
    prepared, _ = prepare(data, cfg.model.num_clips, cfg.model.max_words)
    groups = make_groups(prepared, data.records, multi_pair=True, max_queries=16)
    return cfg, collate(prepared, groups[:3])


def test_encoder_shapes(small):
    _, b = small
    torch.manual_seed(0)
    clips, patches = VideoEncoder(12, 12, D, 4, 1, 16, 0.0)(b.frames, b.patches, b.video_mask)
    assert clips.shape == (3, 16, D) and patches.shape == (3, 16, 4, D)
    words, sent = TextEncoder(300, 20, D, 4, 1, 32, 0.0)(b.words, b.word_mask, b.sentence)
    assert words.shape == (9, b.words.shape[1], D) and sent.shape == (9, D)


def test_module_shapes():
    torch.manual_seed(0)
    B, L, P, Q, N = 3, 10, 4, 5, 7
    clips, patches = torch.randn(B, L, D), torch.randn(B, L, P, D)
    cmask = torch.ones(B, L, dtype=torch.bool)
    cmask[0, 8:] = False
    words, wmask = torch.randn(Q, N, D), torch.ones(Q, N, dtype=torch.bool)
    sent = torch.randn(Q, D)
    group_index = torch.tensor([[0, 1], [2, 3], [4, -1]])
    ctx, spans = CrossSentenceMining(D, 4, 1, 8, 0.0)(sent, group_index, torch.tensor([0, 1, 0, 1, 0]),
                                                      clips, cmask, words, wmask)
    assert ctx.shape == (Q, D) and spans.shape == (Q, 2)
    assert bool(((spans >= 0) & (spans <= 1)).all()) and bool((spans[:, 1] >= spans[:, 0]).all())
    score, alpha = SelfWeightedContrast(D, 4, 0.0)(clips, cmask, words, wmask)
    assert score.shape == (Q, B) and alpha.shape == (Q, N)
    assert torch.allclose(alpha.sum(1), torch.ones(Q), atol=1e-5)
    g = GlobalAlignment(D)
    assert g.embed_clips(clips, cmask).shape == (B, D) and g.embed_query(sent).shape == (Q, D)
    o = ObjectPhraseMatching(D, 3, 2)(patches, cmask, words, wmask)
    assert o["objects"].shape == (B, L, 3, D) and o["phrases"].shape == (Q, 2, D) and o["sim_op"].shape == (Q, B)
    a = ActivityPrototypes(D, 4, L, 5, 0.0)(o["objects"], clips, cmask, sent)
    assert a["frame_protos"].shape == (B, L, D) and a["activities"].shape == (B, 5, D)
    assert a["sim_as"].shape == (Q, B)
    fused = CoAttentionFusion(D, 0.0)(clips[[0, 0, 1, 1, 2]], cmask[[0, 0, 1, 1, 2]], words, wmask)
    assert fused.shape == (Q, L, D)
    s, e = SpanPredictor(D, 4, 2, 0.0)(fused, cmask[[0, 0, 1, 1, 2]])
    assert s.shape == e.shape == (Q, L) and float(s[0, 9].detach()) == -1e4
    assert FloatPredictor(D)(fused).shape == (Q, L, 2)


def test_network_output_dict(small):
    cfg, b = small
    torch.manual_seed(0)
    out = build_model(cfg.model, 12, 12, 300, 20)(b, 0.5)
    q, nb, length = b.num_queries, b.num_videos, 16
    expected = {"start_logits": (q, length), "end_logits": (q, length), "float_offsets": (q, length, 2),
                "clip_mask": (q, length), "sim_global": (q, nb), "negatives": (q, nb), "tau": (),
                "logit_scale": (), "video_embed": (nb, D), "query_embed": (q, D), "sim_segment": (q, q),
                "video_proj": (nb, D), "query_proj": (q, D),
                "csm_spans": (q, 2), "sim_match": (q, nb), "sim_op": (q, nb), "sim_as": (q, nb)}
    for key, shape in expected.items():
        assert tuple(out[key].shape) == shape, key


@pytest.mark.parametrize("per_clip_from", [64, 1])  # one masked attention; per-clip attentions
def test_frame_decoder_mask_isolates_clips(per_clip_from, monkeypatch):
    torch.manual_seed(0)
    L, K = 6, 3
    apa = ActivityPrototypes(D, 4, L, 2, 0.0).eval()
    monkeypatch.setattr(ActivityPrototypes, "PER_CLIP_FROM", per_clip_from)
    objects, clips = torch.randn(1, L, K, D), torch.randn(1, L, D)
    base = apa.frames(objects, clips)
    changed = objects.clone()
    changed[0, 4] = torch.randn(K, D) * 5  # another clip's objects
    after = apa.frames(changed, clips)
    assert torch.allclose(after[0, :4], base[0, :4], atol=1e-6)
    assert torch.allclose(after[0, 5], base[0, 5], atol=1e-6)
    assert not torch.allclose(after[0, 4], base[0, 4], atol=1e-3)  # its own clip's objects matter
    assert frame_decoder_mask(3, 2).tolist() == [[False, False, True, True, True, True],
                                                 [True, True, False, False, True, True],
                                                 [True, True, True, True, False, False]]


def test_frame_decoder_paths_agree(monkeypatch):
    torch.manual_seed(0)
    apa = ActivityPrototypes(D, 4, 8, 2, 0.0).eval()
    objects, clips = torch.randn(2, 8, 3, D), torch.randn(2, 8, D)
    monkeypatch.setattr(ActivityPrototypes, "PER_CLIP_FROM", 64)
    masked = apa.frames(objects, clips)
    monkeypatch.setattr(ActivityPrototypes, "PER_CLIP_FROM", 1)
    torch.testing.assert_close(apa.frames(objects, clips), masked, atol=1e-5, rtol=1e-5)


def test_csm_contextual_switch():
    torch.manual_seed(0)
    sent, clips = torch.randn(2, D), torch.randn(1, 5, D)
    cmask = torch.ones(1, 5, dtype=torch.bool)
    words, wmask = torch.randn(2, 3, D), torch.ones(2, 3, dtype=torch.bool)
    gi, order = torch.tensor([[0, 1]]), torch.tensor([0, 1])
    for contextual in (True, False):
        csm = CrossSentenceMining(D, 4, 1, 4, 0.0, contextual=contextual, semantic=False).eval()
        a, _ = csm(sent, gi, order, clips, cmask, words, wmask)
        other = sent.clone()
        other[1] = torch.randn(D)  # (a constant shift would vanish in LayerNorm)
        b, _ = csm(other, gi, order, clips, cmask, words, wmask)
        assert torch.allclose(a[0], b[0], atol=1e-6) is (not contextual)


def test_word_pooling_reads_own_words_not_padding():
    torch.manual_seed(0)
    pool = WordPooling(D).eval()
    sent, words = torch.randn(2, D), torch.randn(2, 4, D)
    wmask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    a = pool(words, wmask, sent)
    padded = words.clone()
    padded[0, 3] = 100.0  # padding never reaches the vector
    assert torch.allclose(pool(padded, wmask, sent)[0], a[0], atol=1e-6)
    changed = words.clone()
    changed[0, 1] = torch.randn(D)  # one real word changes the query vector, and only its own
    b = pool(changed, wmask, sent)
    assert not torch.allclose(b[0], a[0], atol=1e-3)
    assert torch.allclose(b[1], a[1], atol=1e-6)
    # the same sentence vector with other words gives another query vector
    assert not torch.allclose(pool(words[[1, 0]], wmask.flip(0), sent)[0], a[0], atol=1e-3)


def test_old_checkpoint_config_has_no_word_pooling():
    from model.checkpoint import config_with_defaults_of_its_time
    old = preset("synthetic").to_dict()
    del old["model"]["word_pooling"]
    assert MKTNConfig.from_dict(config_with_defaults_of_its_time(old)).model.word_pooling is False


def test_fusion_ignores_padding():
    torch.manual_seed(0)
    fusion = CoAttentionFusion(D, 0.0).eval()
    video, vmask = torch.randn(2, 8, D), torch.ones(2, 8, dtype=torch.bool)
    vmask[:, 6:] = False
    tokens, tmask = torch.randn(2, 4, D), torch.ones(2, 4, dtype=torch.bool)
    a = fusion(video, vmask, tokens, tmask)
    video2 = video.clone()
    video2[:, 6:] = 100.0
    b = fusion(video2, vmask, tokens, tmask)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-5)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_runs(small, name):
    cfg, b = small
    vcfg = variant(cfg, name)
    torch.manual_seed(0)
    model = build_model(vcfg.model, 12, 12, 300, 20)
    out = model(b, 0.3)
    loss, logs = build_criterion(vcfg.loss, vcfg.model)(out, b)
    loss.backward()
    assert torch.isfinite(loss)
    assert ("csm" in logs) is vcfg.model.use_csm
    assert ("contrast" in logs) is vcfg.model.use_avm


def test_config_round_trip_and_errors():
    cfg = preset("charades-sta")
    assert MKTNConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.digest() == MKTNConfig.from_dict(cfg.to_dict()).digest() != preset("synthetic").digest()
    with pytest.raises(ValueError, match="unknown model config keys"):
        MKTNConfig.from_dict({"model": {"d_modle": 3}})
    with pytest.raises(ValueError, match="unknown key 'nope'"):
        override(cfg, ["train.nope=1"])
    with pytest.raises(ValueError, match="divisible"):
        override(cfg, ["model.d_model=100", "model.num_heads=3"])
    with pytest.raises(ValueError, match="unknown preset"):
        preset("kinetics")
    assert override(cfg, ["loss.alignment_strength=2.5"]).loss.alignment_strength == 2.5


def test_patch_temporal_sees_the_same_patch_a_clip_away_and_not_padding():
    """model.patch_temporal: a patch's output changes with that patch one clip before or after,
    not with other patches, clips two away (one layer) or padding clips."""
    torch.manual_seed(0)
    enc = VideoEncoder(6, 6, D, 4, 1, 10, 0.0, patch_temporal=1).eval()
    frames, patches = torch.randn(1, 10, 6), torch.randn(1, 10, 3, 6)
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[:, 8:] = False
    base = enc(frames, patches, mask)[1]

    def changed(clip: int, patch: int) -> torch.Tensor:
        p = patches.clone()
        p[0, clip, patch] += 5.0
        return (enc(frames, p, mask)[1] - base).abs().amax(dim=-1)[0]  # [L, P]

    d = changed(4, 1)
    assert d[3, 1] > 1e-3 and d[5, 1] > 1e-3  # the same patch one clip before and after
    assert d[:, 0].max() < 1e-6 and d[:, 2].max() < 1e-6  # other patches untouched
    assert d[2, 1] < 1e-6 and d[6, 1] < 1e-6  # one layer reaches one clip
    assert changed(8, 1)[:8].max() < 1e-6  # a padding clip reaches no valid one
    # off (the default, and every checkpoint before it): the patches are the projection alone
    plain = VideoEncoder(6, 6, D, 4, 1, 10, 0.0).eval()
    assert not len(plain.patch_temporal)
