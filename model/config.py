"""MKTN configuration: frozen dataclasses, named presets, module switches, a stable digest.

Layered like the rest of the project: ``ModelConfig`` (widths and module switches: what the
network computes), ``LossConfig`` (the weight table of Eq. 11, the switches of the terms and
their knobs: what the criterion reads), ``TrainConfig`` (optimiser, schedule, batching) and
``EvalConfig`` (how predictions are decoded and scored), gathered in ``MKTNConfig``.
Only ``build_*`` factories read these; modules take plain typed arguments.

Keys that moved between sections keep working under their old names: ``MOVED_KEYS`` maps
them, for ``--set`` (``override``) and for stored dicts (``MKTNConfig.from_dict``: checkpoints,
``result.json``, flow parameters).

>>> cfg = preset("synthetic")
>>> cfg.model.d_model
128
>>> override(cfg, ["model.use_csm=false"]).model.use_csm
False
>>> MKTNConfig.from_dict(cfg.to_dict()) == cfg
True
>>> override(cfg, ["train.nms_iou=0.4"]).eval.nms_iou  # the key's old name
0.4
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.overrides import check_keys, field_names, strict_build

# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class ModelConfig:
    """Widths and switches of the network. Feature widths are read from the data at build time."""

    num_clips: int = 64  # videos are resampled (average-pooled) or padded to this many clips
    d_model: int = 128  # shared width; the paper's sizes (256-512) are in the benchmark presets
    num_heads: int = 4
    dropout: float = 0.1
    # dropout on the standardised clip and patch features (training only); measured: without it a
    # few hundred training queries are memorised (train R1@0.5 94 vs test 26, docs/model.md)
    input_dropout: float = 0.3
    video_layers: int = 1  # self-attention layers of the video encoder over clips
    text_layers: int = 1  # self-attention layers over GloVe words
    max_words: int = 32  # longer queries are cut (and a warning logged)
    # Cross-sentence semantic mining (CSM, Table 4)
    use_csm: bool = True
    csm_layers: int = 1
    csm_temporal: bool = True  # order embedding of the queries (only with query_order="annotation")
    csm_contextual: bool = True  # self-attention among a video's queries
    csm_semantic: bool = True  # words of the video's queries join the cross-attention memory
    max_queries_per_video: int = 16  # position-embedding size; videos with more are split into groups
    # Is the order of a video's queries in the annotation file an input? "annotation": CSM's order
    # embedding reads it (only for datasets whose order is meaningful and documented, e.g.
    # ActivityNet Captions paragraphs, written in time order); "none": nothing reads it, and the
    # queries of a video are grouped and listed in a seeded random order (reshuffled every epoch
    # in training). Nothing is ever derived from the ground-truth timestamps.
    query_order: str = "none"
    # Adaptive video-query matching (AVM = adaptive negative selection + cross-modal contrast, Table 5)
    use_avm: bool = True
    negative_selection: str = "adaptive"  # "adaptive" (cosine-annealed tau), "fixed", or "none"
    # centre the global video/query embeddings on their mean before the cosine of Eq. 1 (mean-only
    # batch norm); off, the embeddings collapse onto one direction and ANS removes every negative
    embed_centering: bool = True
    # tau(0) = 1 keeps every negative at first: pooled embeddings of a fresh network are nearly
    # parallel (measured cos ~0.99 on the synthetic features), so any lower start drops them all
    tau_start: float = 1.0
    tau_end: float = 0.7  # tau(1): by then true negatives sit well below it
    tau_fixed: float = 0.85  # the "fixed threshold" ablation of Table 5
    # initial temperature of the contrastive logits (``logit_scale``, learned; read by ``align``
    # and ``segment``); ``loss.temperature`` before 2027
    logit_temperature: float = 0.07
    # Object-phrase prototype matching (OPM, Table 6)
    use_opm: bool = True
    opm_cap: bool = True  # CAP: sparse learned weights (3 FC + ReLU); off -> plain mean of patches
    num_objects: int = 4  # K object prototypes per clip
    num_phrases: int = 4  # phrase prototypes per query
    # Activity-sentence prototype alignment (APA, Table 7)
    use_apa: bool = True
    apa_bmp: bool = True  # BMP: masked frame decoder + activity decoder; off -> mean-pooled clips
    num_activities: int = 4  # A activity prototypes per video
    # Query-guided patch attention (not in the paper): every query attends over the P patches
    # of each clip of its video, so "the red ball moves left" can bind the colour and the motion
    # of one object; MKTN's own object/frame prototypes are built without the query
    patch_attention: bool = True
    # Query-guided highlighting (not in the paper; VSLNet): a per-clip "inside the moment" head
    # trained on every clip, whose sigmoid scales the fused features before the span predictor
    highlight: bool = True
    # Query vector from the query's own words (not in the paper): an attention-pooled sum of its
    # encoded words is added to the sentence-encoder vector, so a query is also the sum of what
    # its words say (a skip-thought encoder trained on a few hundred sentences memorises them)
    word_pooling: bool = True
    # Grounding head: "span" (start/end logits, the paper's), "tan2d" (2D-TAN's moment map over the
    # per-query fused clips) or "mmn" (MMN's video-only moment map matched to the sentence);
    # see model/moment_map.py. Default "mmn" since 2026-12-03: measured on both synthetic domains
    # (docs/model.md "Grounding heads"). Checkpoints written before the key existed are "span".
    head: str = "mmn"
    head_layers: int = 2  # transformer blocks of the span predictor (paper: two)
    # moment maps (tan2d, mmn): longest moment in clips (0 = the whole video); lengths up to
    # map_dense_clips are all in the map, longer ones at strides doubling (2D-TAN's sparse sampling)
    map_max_clips: int = 0
    map_dense_clips: int = 16
    map_layers: int = 2  # masked 2D convolutions over the map
    map_kernel: int = 3  # odd
    mmn_temperature: float = 0.1  # MMN: scores are cosine / temperature
    # MMN + query evidence (not in MMN): each query attends over its video's patches (the query-
    # guided patch attention), a per-clip "inside the moment" logit is read from that and trained
    # with the highlight loss, and its mean over a moment's clips is added to the moment's score.
    # MMN's moment embeddings are built from the video alone, so a moment where two objects act
    # holds both; the evidence is what binds the query's object to its action. Measured (seed 0):
    # street +5.5 R1@0.5 over splicing alone, shapes -3.5 (docs/model.md "Splicing"); ~40 % more
    # training time
    map_evidence: bool = True
    # residual temporal convolutions (kernel 3) over each patch's own sequence of clips, before
    # the query attends over patches: a patch's feature also sees that patch a second before and
    # after (an actor's move spans several 1-s clips). Measured in docs/model.md "Patches that
    # see their neighbours in time" (default 1 since 2026-12-08; 0 in checkpoints before it)
    patch_temporal: int = 1


@dataclass(frozen=True)
class LossConfig:
    """The weight table of Eq. 11, the switches of the terms and their knobs: all the criterion reads.

    A term ``<name>`` of ``model.losses.MKTNCriterion`` is weighted by ``w_<name>``.
    """

    w_span: float = 1.0  # Eq. 9, start/end cross-entropy
    w_float: float = 1.0  # Eq. 10, smooth L1 on fractional boundaries
    w_csm: float = 0.5  # CSM parallel regression, L1 + (1 - IoU)
    w_rince: float = 0.1  # Eq. 6-7
    w_contrast: float = 0.1  # Eq. 3-4
    w_align: float = 0.1  # Eq. 8 over S_as and S_op
    w_segment: float = 0.1  # segment-level alignment (ground-truth moment vs sentence)
    w_highlight: float = 1.0  # per-clip "inside the moment" BCE (model.highlight)
    w_map: float = 1.0  # tan2d/mmn: scaled-IoU binary cross-entropy over the moment map
    w_map_rank: float = 1.0  # tan2d: softmax cross-entropy over a query's cells (model.losses)
    w_mmn_contrast: float = 1.0  # mmn: mutual matching (moment <-> sentence InfoNCE)
    map_min_iou: float = 0.5  # scaled IoU target: 0 at or below min_iou, 1 at max_iou (2D-TAN)
    map_max_iou: float = 1.0
    alignment_strength: float = 1.0  # multiplies rince, contrast, align and segment
    segment_alignment: bool = True  # the multi-level paper's segment level beside the global one
    rince_q: float = 0.5  # RINCE's q (q -> 0: InfoNCE, q = 1: robust to noisy positives)
    rince_lambda: float = 0.01  # RINCE's lambda, weight of the negatives' mass
    rince_temperature: float = 0.2  # fixed: with a learned scale RINCE is unbounded below (e^{q s+})
    contrast_margin: float = 0.2  # hinge margin of Eq. 3
    contrast_balance: float = 1.0  # lambda of Eq. 3: weight of video negatives vs query negatives
    contrast_video_negatives: bool = True  # Table 5 "visual feature": (q, v+, v-) triplets
    contrast_query_negatives: bool = True  # Table 5 "textual feature": (v, q+, q-) triplets
    opm_oca: bool = True  # OCA (Table 6): the object-phrase alignment over S_op (part of ``align``)
    apa_aa: bool = True  # AA (Table 7): the activity-sentence alignment over S_as (part of ``align``)


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule, batching, stopping."""

    epochs: int = 40
    batch_videos: int = 8  # B videos per multi-pair step, each with all its queries
    multi_pair: bool = True  # False: one query per item, video re-encoded per query (baseline)
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    schedule: str = "cosine"  # "cosine" or "linear" decay after warm-up
    grad_clip: float = 1.0
    patience: int = 10  # early stopping on val R1@0.5 (epochs without improvement); 8 stopped runs
    # on one noisy validation epoch while validation mIoU was still rising (docs/model.md)
    max_bad_steps: int = 20  # NaN/inf losses tolerated before the run aborts
    seed: int = 0
    amp: bool = True  # CUDA autocast when a GPU is used; ignored on CPU (evaluation follows it)
    # augmentation: probability that a training video is cut to a random window still holding
    # all its queries' moments (absolute position then no longer identifies a moment)
    temporal_crop: float = 0.8
    # augmentation: probability that each word of a training query is hidden (at least one stays)
    # (default 0.15 since 2026-12-08, measured with patch_temporal in docs/model.md "Patches that
    # see their neighbours in time")
    word_dropout: float = 0.15
    # augmentation: probability that another training video's clips are spliced beside a training
    # video's own (in the room its padding and crop leave): distractor events the queries must not
    # pick, and moments moved within a longer sequence. Measured on both synthetic domains, seeds
    # 0-1: +9 R1@0.5 on shapes, +3 on street (docs/model.md "Splicing")
    splice: float = 0.5


@dataclass(frozen=True)
class EvalConfig:
    """How predictions are decoded and scored: validation, test, ``mktn evaluate``, ``mktn predict``.

    Evaluation also follows three training settings: ``train.batch_videos``, ``train.amp`` and
    ``train.multi_pair`` (a model is evaluated with the query groups it was trained on).
    """

    top_k: int = 5  # spans kept per query (R@5 needs 5); ``train.eval_top_k`` before 2027
    nms_iou: float = 0.5  # temporal NMS of the candidates before top-k; ``train.nms_iou`` before
    # 0 = any length; otherwise the longest span (clips) considered; ``model.max_span_clips`` before
    max_span_clips: int = 0


SECTIONS: dict[str, type] = {"model": ModelConfig, "loss": LossConfig, "train": TrainConfig,
                             "eval": EvalConfig}

# Keys that moved to another section: old "section.key" -> new. ``override`` (``--set``) and
# ``MKTNConfig.from_dict`` (checkpoints, result.json, flow parameters) accept the old names.
MOVED_KEYS: dict[str, str] = {
    "train.eval_top_k": "eval.top_k",
    "train.nms_iou": "eval.nms_iou",
    "model.max_span_clips": "eval.max_span_clips",
    "model.contrast_video_negatives": "loss.contrast_video_negatives",
    "model.contrast_query_negatives": "loss.contrast_query_negatives",
    "model.opm_oca": "loss.opm_oca",
    "model.apa_aa": "loss.apa_aa",
    "loss.temperature": "model.logit_temperature",
}


@dataclass(frozen=True)
class MKTNConfig:
    name: str = "synthetic"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MKTNConfig:
        """Build from a dict; keys under their old names (``MOVED_KEYS``) are moved; unknown
        sections or keys raise ``ValueError`` naming them."""
        d = migrate_dict(d)
        check_keys(cls, d, "config sections")
        sections: dict[str, Any] = {name: strict_build(kind, d.get(name, {}), f"{name} config keys")
                                    for name, kind in SECTIONS.items()}
        return cls(name=str(d.get("name", "custom")), **sections)

    def digest(self) -> str:
        """sha256 (16 hex digits) of the canonical JSON: names artifacts, keys caches."""
        return _digest(self.to_dict())

    def matches_digest(self, digest: str | None) -> bool:
        """Whether a stored ``config_digest`` is this config's: today's ``digest()``, or the one
        code before ``MOVED_KEYS`` gave it (so ``--resume`` and a reused ablation run written
        before the move still match)."""
        return digest is not None and digest in (self.digest(), _digest(_legacy_dict(self.to_dict())))


def _digest(d: Mapping[str, Any]) -> str:
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def migrate_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config dict with the keys of ``MOVED_KEYS`` under their new names.

    >>> migrate_dict({"train": {"nms_iou": 0.3, "lr": 1e-3}})
    {'train': {'lr': 0.001}, 'eval': {'nms_iou': 0.3}}
    """
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in d.items()}
    for old, new in MOVED_KEYS.items():
        old_section, old_key = old.split(".")
        if old_key not in out.get(old_section, {}):
            continue
        value = out[old_section].pop(old_key)
        new_section, new_key = new.split(".")
        target = out.setdefault(new_section, {})
        if new_key in target and target[new_key] != value:
            raise ValueError(f"config sets both {old} ({value!r}) and its new name {new} "
                             f"({target[new_key]!r}); keep {new}")
        target[new_key] = value
    return out


# Keys added since the layout of ``MOVED_KEYS``, with the value that does what the code did
# before they existed: a config holding those values has the digest it had then; stored
# configs without them load with those values (``model.checkpoint``).
ADDED_KEYS: dict[str, Any] = {
    "model.word_pooling": False,
    "model.map_evidence": False,
    "model.patch_temporal": 0,
    "train.word_dropout": 0.0,
    "train.splice": 0.0,
    "loss.w_map_rank": 0.0,
}


def _legacy_dict(d: Mapping[str, Any]) -> dict[str, Any]:
    """``to_dict()`` laid out as before ``MOVED_KEYS`` (the inverse of ``migrate_dict``), without
    the ``ADDED_KEYS`` that hold their old-behaviour value."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in d.items()}
    for key, old_value in ADDED_KEYS.items():
        section, name = key.split(".")
        if out.get(section, {}).get(name, old_value) == old_value:
            out.get(section, {}).pop(name, None)
    for old, new in MOVED_KEYS.items():
        new_section, new_key = new.split(".")
        old_section, old_key = old.split(".")
        out[old_section][old_key] = out[new_section].pop(new_key)
    if not out.get("eval"):
        out.pop("eval", None)
    return out


# ---------------------------------------------------------------- presets

HEADS = ("span", "tan2d", "mmn")  # model.head

PRESETS: dict[str, MKTNConfig] = {
    # Small widths so `mktn train` fits ~5 min on 2 CPU cores for ~1,000 queries.
    # Synthetic videos last <= 32 s and the default extractor gives one clip per second, so 32
    # clips lose nothing; 64 would triple the work spent on padding.
    "synthetic": MKTNConfig(name="synthetic", model=ModelConfig(num_clips=32)),
    # The paper's benchmark settings (GPU sizes): 128 clips for Charades (short videos).
    "charades-sta": MKTNConfig(
        name="charades-sta",
        model=ModelConfig(num_clips=128, d_model=256, num_heads=8, video_layers=2, text_layers=2,
                          csm_layers=2, num_objects=8, num_phrases=6, num_activities=8),
        train=TrainConfig(epochs=50, batch_videos=32, lr=2e-4),
    ),
    "activitynet": MKTNConfig(
        name="activitynet",
        model=ModelConfig(num_clips=128, d_model=512, num_heads=8, video_layers=2, text_layers=2,
                          csm_layers=2, max_words=48, max_queries_per_video=24,
                          num_objects=8, num_phrases=8, num_activities=8,
                          query_order="annotation"),  # paragraphs are written in time order
        train=TrainConfig(epochs=30, batch_videos=32, lr=2e-4),
    ),
    "tacos": MKTNConfig(
        name="tacos",
        # TACoS videos are long with many queries each: long clip grid, queries split in groups.
        model=ModelConfig(num_clips=256, d_model=256, num_heads=8, video_layers=2, text_layers=2,
                          csm_layers=2, max_queries_per_video=32, num_objects=8, num_phrases=6,
                          num_activities=8),
        train=TrainConfig(epochs=50, batch_videos=8, lr=2e-4),
    ),
}

# The paper's ablation variants (Tables 3-7) as config overrides of the full model.
VARIANTS: dict[str, tuple[str, ...]] = {
    "Full": (),
    "w/o CSM": ("model.use_csm=false",),
    "w/o OPM": ("model.use_opm=false",),
    "w/o APA": ("model.use_apa=false",),
    "w/o AVM": ("model.use_avm=false",),
    # Table 4 (CSM)
    "w/o Temporal relationship": ("model.csm_temporal=false",),
    "w/o Contextual relationship": ("model.csm_contextual=false",),
    "w/o Semantic relationship": ("model.csm_semantic=false",),
    # Table 5 (cross-modal contrast, adaptive negative selection)
    "CC w/o visual feature": ("loss.contrast_video_negatives=false",),
    "CC w/o textual feature": ("loss.contrast_query_negatives=false",),
    "ANS fixed threshold": ("model.negative_selection=fixed",),
    "ANS w/o": ("model.negative_selection=none",),
    # the multi-level paper: the segment level (ground-truth moment vs sentence) beside the global one
    "w/o segment alignment": ("loss.segment_alignment=false",),
    # Table 6 (OPM)
    "w/o CAP": ("model.opm_cap=false",),
    "w/o OCA": ("loss.opm_oca=false",),
    # Table 7 (APA)
    "w/o BMP": ("model.apa_bmp=false",),
    "w/o AA": ("loss.apa_aa=false",),
}
MAIN_VARIANTS = ("w/o CSM", "w/o OPM", "w/o APA", "w/o AVM", "Full")


def preset(name: str) -> MKTNConfig:
    """A named preset; ``ValueError`` lists the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def _parse_value(raw: str, current: Any, key: str) -> Any:
    if isinstance(current, bool):
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {key}={raw!r}: expected a boolean (true/false)")
    try:
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
    except ValueError:
        raise ValueError(
            f"--set {key}={raw!r}: expected {type(current).__name__}"
        ) from None
    return raw


_SECTION_LIST = ", ".join(SECTIONS)


def override(cfg: MKTNConfig, assignments: list[str] | tuple[str, ...]) -> MKTNConfig:
    """Apply ``section.key=value`` strings (``--set``); unknown keys raise ``ValueError``.
    A key under its old name (``MOVED_KEYS``, e.g. ``train.nms_iou``) sets its new one."""
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected section.key=value, e.g. model.d_model=256")
        key, raw = item.split("=", 1)
        key = MOVED_KEYS.get(key.strip(), key.strip())
        if "." not in key:
            raise ValueError(f"--set {item!r}: the key needs a section: {_SECTION_LIST}")
        section_name, attr = key.split(".", 1)
        if section_name not in SECTIONS:
            raise ValueError(f"--set {item!r}: unknown section {section_name!r}; use {_SECTION_LIST}")
        section = getattr(cfg, section_name)
        if attr not in field_names(section):
            raise ValueError(f"--set {item!r}: unknown key {attr!r} in {section_name}; "
                             f"valid: {sorted(field_names(section))}")
        value = _parse_value(raw, getattr(section, attr), key)
        cfg = replace(cfg, **{section_name: replace(section, **{attr: value})})
    validate(cfg)
    return cfg


def variant(cfg: MKTNConfig, name: str) -> MKTNConfig:
    """The config of an ablation variant by its table name (see ``VARIANTS``)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {list(VARIANTS)}")
    return override(cfg, list(VARIANTS[name]))


def validate(cfg: MKTNConfig) -> None:
    """Raise ``ValueError`` for values the network cannot run with."""
    m = cfg.model
    if m.d_model % m.num_heads:
        raise ValueError(f"model.d_model={m.d_model} must be divisible by model.num_heads={m.num_heads}")
    if m.negative_selection not in ("adaptive", "fixed", "none"):
        raise ValueError(
            f"model.negative_selection={m.negative_selection!r}; use adaptive, fixed or none"
        )
    if m.head not in HEADS:
        raise ValueError(f"model.head={m.head!r}; use one of {', '.join(HEADS)}")
    if m.map_kernel < 1 or m.map_kernel % 2 == 0:
        raise ValueError(f"model.map_kernel={m.map_kernel} must be odd and >= 1")
    if m.map_layers < 0 or m.map_dense_clips < 1 or m.map_max_clips < 0:
        raise ValueError("model.map_layers must be >= 0, model.map_dense_clips >= 1, model.map_max_clips >= 0")
    if not m.mmn_temperature > 0:
        raise ValueError(f"model.mmn_temperature={m.mmn_temperature} must be > 0")
    if not 0.0 <= cfg.loss.map_min_iou < cfg.loss.map_max_iou <= 1.0:
        raise ValueError("need 0 <= loss.map_min_iou < loss.map_max_iou <= 1")
    if m.query_order not in ("annotation", "none"):
        raise ValueError(f"model.query_order={m.query_order!r}; use annotation or none")
    if cfg.train.schedule not in ("cosine", "linear"):
        raise ValueError(f"train.schedule={cfg.train.schedule!r}; use cosine or linear")
    for name in ("num_clips", "num_objects", "num_phrases", "num_activities", "max_queries_per_video"):
        if getattr(m, name) < 1:
            raise ValueError(f"model.{name}={getattr(m, name)} must be >= 1")
    if not 0.0 < cfg.loss.rince_q <= 1.0:
        raise ValueError(f"loss.rince_q={cfg.loss.rince_q} must be in (0, 1]")
    if cfg.train.batch_videos < 2:
        raise ValueError(
            f"train.batch_videos={cfg.train.batch_videos}: need >= 2 so a batch has negatives"
        )
