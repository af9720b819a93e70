"""MKTN inputs: in-memory features + records, preparation, multi-pair and single-pair batches.

``GroundingData`` is what the trainer consumes: per-video arrays (``frames [T, D]``,
``patches [T, P, D]``, ``clip_times [T, 2]``), per-query arrays (``words [N, 300]``,
``sentence [S]``) and ``QueryMoment`` records. Tests build it from random
arrays; ``model.store_data.load_grounding_data`` builds it from the feature and
query stores.

``prepare`` standardises features with per-dimension statistics (random-init
backbone features are useless un-standardised, see DESIGN.md), resamples every
video to ``num_clips`` clips (average pooling of contiguous clips, or padding with
a mask), and converts each moment to boundary targets on the clip timeline.

A *group* is one video with (up to ``max_queries_per_video`` of) its queries, in
annotation order when ``model.query_order = "annotation"``, else in a seeded order that carries
no information about the annotation (see ``make_groups``). Multi-pair batches hold ``B`` groups: each video is encoded
once per step and its queries share it; single-pair batches hold ``B`` groups of
one query each (a video with several queries in the batch is encoded again for each).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from model.spans import span_to_clip_indices
from pipeline.datasets.records import QueryMoment
from storage.features import Normalization

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- raw inputs


@dataclass(frozen=True)
class VideoInput:
    video_id: str
    frames: np.ndarray  # [T, D] clip ("frame") features
    patches: np.ndarray  # [T, P, D] patch features (spatial grid before global pooling)
    clip_times: np.ndarray  # [T, 2] seconds
    duration: float


@dataclass(frozen=True)
class QueryInput:
    query_id: str
    words: np.ndarray  # [N, 300] GloVe word vectors
    sentence: np.ndarray  # [S] skip-thought sentence vector


# checkpoint keys (``ckpt["norm"]``) of the video statistics: the checkpoint format keeps its
# singular names; the attributes are Normalization's (frames_mean, ...)
_VIDEO_STATS = {"frame_mean": "frames_mean", "frame_std": "frames_std",
                "patch_mean": "patches_mean", "patch_std": "patches_std"}
_TEXT_STATS = ("word_mean", "word_std", "sentence_mean", "sentence_std")


@dataclass(frozen=True)
class NormStats(Normalization):
    """The model's normalisation statistics: the video statistics (``storage.features.
    Normalization``, fitted over the train split's videos by :func:`fit_norm_stats`) plus the
    word and sentence statistics, which a feature store cannot know and a checkpoint must carry.

    Word vectors trained on a small dataset's own sentences (the default without a GloVe
    file) share one dominant direction: measured on the synthetic default, "red" and "blue"
    had cosine 0.89 and "left" and "right" 0.96. Standardising them per dimension with the
    train split's statistics (no labels involved) removes that shared component, as the
    video features are standardised. The text statistics are None in checkpoints written
    before they existed; those vectors are then used as they are.
    """

    word_mean: np.ndarray | None = None
    word_std: np.ndarray | None = None
    sentence_mean: np.ndarray | None = None
    sentence_std: np.ndarray | None = None

    # the names this type had before it became a Normalization (read-only)
    @property
    def frame_mean(self) -> np.ndarray:
        return self.frames_mean

    @property
    def frame_std(self) -> np.ndarray:
        return self.frames_std

    @property
    def patch_mean(self) -> np.ndarray:
        return self.patches_mean

    @property
    def patch_std(self) -> np.ndarray:
        return self.patches_std

    @property
    def has_text(self) -> bool:
        return self.word_mean is not None

    @classmethod
    def of(cls, video: Normalization) -> NormStats:
        """Video statistics without text statistics (add them with :meth:`with_text`)."""
        return cls(video.frames_mean, video.frames_std, video.patches_mean, video.patches_std,
                   video.num_videos, video.num_clips)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's ``"norm"`` entry."""
        out: dict[str, Any] = {k: np.asarray(getattr(self, a), dtype=np.float64).tolist()
                               for k, a in _VIDEO_STATS.items()}
        if self.has_text:
            out.update({k: np.asarray(getattr(self, k), dtype=np.float64).tolist() for k in _TEXT_STATS})
        if self.num_videos:
            out.update(num_videos=int(self.num_videos), num_clips=int(self.num_clips))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NormStats:
        """A checkpoint's ``"norm"`` entry (every version: without text statistics or counts too)."""
        kwargs: dict[str, Any] = {a: np.asarray(d[k], dtype=np.float32) for k, a in _VIDEO_STATS.items()}
        if "word_mean" in d:
            kwargs.update({k: np.asarray(d[k], dtype=np.float32) for k in _TEXT_STATS})
        return cls(**kwargs, num_videos=int(d.get("num_videos", 0)), num_clips=int(d.get("num_clips", 0)))

    def with_text(self, queries: Sequence[QueryInput]) -> NormStats:
        """These statistics plus the word and sentence statistics of ``queries``."""
        if not queries:
            return self
        w = np.concatenate([np.asarray(q.words, np.float64).reshape(-1, q.words.shape[-1])
                            for q in queries])
        st = np.stack([np.asarray(q.sentence, np.float64) for q in queries])
        return replace(
            self,
            word_mean=w.mean(0).astype(np.float32), word_std=np.maximum(w.std(0), 1e-6).astype(np.float32),
            sentence_mean=st.mean(0).astype(np.float32),
            sentence_std=np.maximum(st.std(0), 1e-6).astype(np.float32),
        )

    def standardize_words(self, words: np.ndarray) -> np.ndarray:
        if self.word_mean is None or self.word_std is None:
            return words
        return ((words - self.word_mean) / self.word_std).astype(np.float32)

    def standardize_sentence(self, sentence: np.ndarray) -> np.ndarray:
        if self.sentence_mean is None or self.sentence_std is None:
            return sentence
        return ((sentence - self.sentence_mean) / self.sentence_std).astype(np.float32)


def compute_norm_stats(videos: Sequence[VideoInput]) -> NormStats:
    """Video statistics over all clips (and patches) of ``videos`` (``Normalization.fit``)."""
    if not videos:
        raise ValueError("cannot compute normalisation statistics from zero videos")
    return NormStats.of(Normalization.fit((v.frames, v.patches) for v in videos))


def fit_norm_stats(data: GroundingData, split: str = "train") -> NormStats:
    """The statistics a training run standardises with: the one place that decides which
    videos and queries they cover.

    Video and text statistics are fitted over the ``split`` (train) split's videos and
    queries only: no labels are read, and no val/test video shifts them. A feature store's
    own ``"normalization"`` attribute (over every committed video) is not used. Data without
    that split (an evaluation-only set) falls back to all its videos and queries, with a
    warning. The choice is logged.
    """
    train_videos = sorted({r.video_id for r in data.split(split)} & set(data.videos))
    train_queries = sorted({r.query_id for r in data.split(split)} & set(data.queries))
    if train_videos:
        video_source = f"the {len(train_videos)} videos of the {split!r} split"
    else:
        train_videos = sorted(data.videos)
        video_source = f"all {len(train_videos)} videos (no {split!r} split in the data)"
        log.warning("normalisation statistics: no %r split among the records; fitting them over all videos",
                    split)
    if not train_queries:
        train_queries = sorted(data.queries)
    norm = compute_norm_stats([data.videos[v] for v in train_videos])
    log.info("normalisation statistics fitted over %s (%d clips) and %d queries; the feature store's "
             "statistics are not used", video_source, norm.num_clips, len(train_queries))
    return norm.with_text([data.queries[q] for q in train_queries])


@dataclass
class GroundingData:
    """Features and records of one dataset (all splits). ``norm`` None (the loader's
    default): ``prepare`` fits the statistics over the train split (``fit_norm_stats``)."""

    videos: dict[str, VideoInput]
    queries: dict[str, QueryInput]
    records: list[QueryMoment]
    norm: NormStats | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # provenance (store ids, encoder ids)
    # the dataset's word-vector table (token -> vector, from the query store): checkpoints carry
    # it so `mktn predict` embeds new sentences with the vectors the model was trained on
    vocab: tuple[list[str], np.ndarray] | None = None

    def split(self, name: str) -> list[QueryMoment]:
        return [r for r in self.records if r.split == name]

    @property
    def dims(self) -> tuple[int, int, int]:
        """(frame D, word dim, sentence S)."""
        v = next(iter(self.videos.values()))
        q = next(iter(self.queries.values()))
        return int(v.frames.shape[-1]), int(q.words.shape[-1]), int(q.sentence.shape[-1])


# ---------------------------------------------------------------- prepared tensors


@dataclass(frozen=True)
class PreparedVideo:
    video_id: str
    frames: torch.Tensor  # [L, D] standardised, resampled
    patches: torch.Tensor  # [L, P, D]
    valid: int  # number of real clips (<= L); the rest is padding
    clip_times: np.ndarray  # [valid, 2] seconds (of the pooled clips)
    duration: float


@dataclass(frozen=True)
class PreparedQuery:
    record: QueryMoment
    words: torch.Tensor  # [n, 300], n <= max_words
    sentence: torch.Tensor  # [S]
    start_idx: int
    end_idx: int
    start_frac: float
    end_frac: float
    order: int  # position among its video's queries (annotation order)


@dataclass
class PreparedData:
    videos: dict[str, PreparedVideo]
    queries: dict[str, PreparedQuery]
    num_clips: int
    skipped: dict[str, int] = field(default_factory=dict)

    def query_ids(self, records: Sequence[QueryMoment]) -> list[str]:
        return [r.query_id for r in records if r.query_id in self.queries]


def prepare_video(v: VideoInput, norm: NormStats, num_clips: int) -> PreparedVideo:
    """Standardise and resample one video to ``num_clips`` clips (pool if longer, pad if shorter)."""
    frames = np.asarray(v.frames, dtype=np.float32)
    patches = np.asarray(v.patches, dtype=np.float32)
    clip_shape = np.shape(v.clip_times)
    if (frames.ndim != 2 or patches.ndim != 3 or len(clip_shape) != 2 or clip_shape[1] != 2
            or not len(frames) == len(patches) == clip_shape[0]):
        raise ValueError(
            f"video {v.video_id!r}: expected frames [T,D], patches [T,P,D], clip_times [T,2] with one T; "
            f"got {frames.shape}, {patches.shape}, {np.shape(v.clip_times)}"
        )
    if not (np.isfinite(frames).all() and np.isfinite(patches).all()):
        raise ValueError(f"video {v.video_id!r}: features contain NaN/inf; re-extract this video")
    frames = (frames - norm.frames_mean) / norm.frames_std
    patches = (patches - norm.patches_mean) / norm.patches_std
    clip_times = np.asarray(v.clip_times, dtype=np.float64)
    centres = clip_times.mean(axis=1)
    if np.any(np.diff(centres) <= 0):
        raise ValueError(f"video {v.video_id!r}: clip windows are not in increasing time order; re-extract it")
    t = len(frames)
    if t > num_clips:  # average-pool contiguous clips into num_clips bins
        starts = (np.arange(num_clips + 1) * t) // num_clips
        counts = np.diff(starts).astype(np.float32)
        frames = (np.add.reduceat(frames, starts[:-1], axis=0) / counts[:, None]).astype(np.float32)
        patches = (np.add.reduceat(patches, starts[:-1], axis=0) / counts[:, None, None]).astype(np.float32)
        clip_times = np.stack([clip_times[starts[:-1], 0], clip_times[starts[1:] - 1, 1]], axis=1)
        t = num_clips
    f = torch.zeros(num_clips, frames.shape[1])
    p = torch.zeros(num_clips, patches.shape[1], patches.shape[2])
    f[:t] = torch.from_numpy(np.ascontiguousarray(frames))
    p[:t] = torch.from_numpy(np.ascontiguousarray(patches))
    return PreparedVideo(v.video_id, f, p, t, clip_times, float(v.duration))


def prepare(data: GroundingData, num_clips: int, max_words: int, *,
            norm: NormStats | None = None) -> tuple[PreparedData, NormStats]:
    """Standardise, resample and attach targets. Records whose video or query features are
    missing or broken are skipped (counted by reason in ``skipped`` and logged), never fatal."""
    if norm is None:  # fit: the train split's statistics (fit_norm_stats), unless the data carries some
        if data.norm is None:
            norm = fit_norm_stats(data)
        else:
            norm = data.norm
            log.info("normalisation statistics: the ones given with the data (%s videos)",
                     norm.num_videos or "unrecorded")
            if not norm.has_text:
                train_q = sorted({r.query_id for r in data.split("train")} or set(data.queries))
                norm = norm.with_text([data.queries[q] for q in train_q if q in data.queries])
    skipped: dict[str, int] = {}

    def skip(reason: str, what: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1
        log.warning("skipping %s: %s", what, reason)

    videos: dict[str, PreparedVideo] = {}
    needed = {r.video_id for r in data.records}
    for vid in sorted(needed):
        if vid not in data.videos:
            skip("video features missing", f"video {vid!r}")
            continue
        try:
            videos[vid] = prepare_video(data.videos[vid], norm, num_clips)
        except ValueError as exc:
            skip("broken video features", str(exc))
    queries: dict[str, PreparedQuery] = {}
    order: dict[str, int] = {}
    truncated = 0
    for r in data.records:
        if r.video_id not in videos:
            continue
        q = data.queries.get(r.query_id)
        if q is None:
            skip("query features missing", f"query {r.query_id!r}")
            continue
        words = np.asarray(q.words, dtype=np.float32)
        if words.ndim != 2 or len(words) == 0 or not np.isfinite(words).all():
            skip("empty or broken word vectors", f"query {r.query_id!r} (words shape {words.shape})")
            continue
        if len(words) > max_words:
            truncated += 1
            words = words[:max_words]
        words = norm.standardize_words(words)
        pv = videos[r.video_id]
        s, e, fs, fe = span_to_clip_indices((min(r.start, r.end), max(r.start, r.end)), pv.clip_times)
        k = order.get(r.video_id, 0)
        order[r.video_id] = k + 1
        queries[r.query_id] = PreparedQuery(
            r, torch.from_numpy(words.copy()), torch.from_numpy(norm.standardize_sentence(np.asarray(q.sentence, np.float32)).copy()),
            s, e, fs, fe, k,
        )
    if truncated:
        log.info("%d queries cut to max_words=%d words", truncated, max_words)
    return PreparedData(videos, queries, num_clips, skipped), norm


# ---------------------------------------------------------------- groups and sampling


@dataclass(frozen=True)
class Group:
    video_id: str
    query_ids: tuple[str, ...]


QUERY_ORDERS = ("annotation", "none")


def _video_seed(seed: int, video_id: str) -> int:
    """A stable per-video seed (crc32 of the id; Python's ``hash`` is salted per process)."""
    return (int(seed) * 1_000_003 + zlib.crc32(video_id.encode("utf-8"))) % (2**63 - 1)


def seeded_query_order(query_ids: Sequence[str], video_id: str, seed: int) -> list[str]:
    """The queries of one video in a seeded random order that depends only on the *set* of ids,
    the video and the seed (never on the annotation order: the ids are sorted first)."""
    qids = sorted(query_ids)
    g = torch.Generator().manual_seed(_video_seed(seed, video_id))
    return [qids[i] for i in torch.randperm(len(qids), generator=g).tolist()]


def _chunks(qids: Sequence[str], max_queries: int) -> list[tuple[str, ...]]:
    n_chunks = -(-len(qids) // max_queries)
    out = []
    for c in range(n_chunks):  # balanced chunks keep neighbouring queries together
        lo, hi = (c * len(qids)) // n_chunks, ((c + 1) * len(qids)) // n_chunks
        out.append(tuple(qids[lo:hi]))
    return out


def make_groups(prepared: PreparedData, records: Sequence[QueryMoment], *,
                multi_pair: bool, max_queries: int, query_order: str = "annotation",
                seed: int = 0) -> list[Group]:
    """Video groups in a stable order: all of a video's queries (split into chunks of
    ``max_queries``) for multi-pair, one query per group for single-pair.

    ``query_order`` (``model.query_order``): ``"annotation"`` lists (and chunks) each video's
    queries in annotation order; ``"none"`` in a seeded random order of the video's query ids
    (``seeded_query_order``), so neither the order inside a group nor which queries share a
    group says anything about the annotation order.
    """
    if query_order not in QUERY_ORDERS:
        raise ValueError(f"query_order={query_order!r}; use one of {QUERY_ORDERS}")
    by_video: dict[str, list[str]] = {}
    for r in records:
        if r.query_id in prepared.queries:
            by_video.setdefault(r.video_id, []).append(r.query_id)
    groups: list[Group] = []
    for vid in sorted(by_video):
        if query_order == "annotation":
            qids = sorted(by_video[vid], key=lambda q: prepared.queries[q].order)
        else:
            qids = seeded_query_order(by_video[vid], vid, seed)
        if not multi_pair:
            groups.extend(Group(vid, (q,)) for q in qids)
            continue
        groups.extend(Group(vid, c) for c in _chunks(qids, max_queries))
    return groups


class GroupSampler:
    """Seeded per-epoch order of groups, in batches of ``batch_size`` groups.

    ``rank``/``world_size`` shard each epoch's order (every rank sees the same
    permutation and takes every ``world_size``-th batch; the trailing batches that cannot
    give every rank one more are dropped) so DistributedDataParallel can be added without
    touching the trainer's step.
    """

    def __init__(self, groups: Sequence[Group], batch_size: int, *, seed: int, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, shuffle_queries: bool = False) -> None:
        self.groups = list(groups)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.shuffle_queries = shuffle_queries

    def epoch_groups(self, epoch: int) -> list[Group]:
        """The groups of ``epoch``. With ``shuffle_queries`` (``model.query_order = "none"`` in
        training) each video's queries are dealt anew every epoch, seeded by (seed, epoch): the
        order inside a group and which of a video's queries share a group change, the chunk
        sizes stay."""
        if not self.shuffle_queries:
            return self.groups
        by_video: dict[str, list[int]] = {}
        for i, grp in enumerate(self.groups):
            by_video.setdefault(grp.video_id, []).append(i)
        out = list(self.groups)
        for vid, idx in by_video.items():
            qids = [q for i in idx for q in self.groups[i].query_ids]
            g = torch.Generator().manual_seed(_video_seed(self.seed * 7_919 + epoch, vid))
            perm = [qids[j] for j in torch.randperm(len(qids), generator=g).tolist()]
            k = 0
            for i in idx:
                n = len(self.groups[i].query_ids)
                out[i] = Group(vid, tuple(perm[k:k + n]))
                k += n
        return out

    def batches(self, epoch: int) -> list[list[Group]]:
        groups = self.epoch_groups(epoch)
        n = len(groups)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        batches = [[groups[i] for i in order[k:k + self.batch_size]]
                   for k in range(0, n, self.batch_size)]
        if self.world_size > 1:  # every rank takes as many steps (DDP all-reduces on each one)
            batches = batches[: len(batches) - len(batches) % self.world_size]
        return batches[self.rank::self.world_size]

    def __len__(self) -> int:
        return len(self.batches(0))


# ---------------------------------------------------------------- batches


@dataclass
class Batch:
    """B video items and Q queries. Shapes:

    frames [B, L, D], patches [B, L, P, D], video_mask [B, L] (True = real clip);
    words [Q, N, W], word_mask [Q, N], sentence [Q, S]; query_video [Q] (item index);
    group_index [B, G] (query indices of each item, -1 pad), query_order [Q];
    start_idx/end_idx [Q] (long), start_frac/end_frac [Q], span_norm [Q, 2] (in [0, 1] of
    the valid clips); same_video [Q, B] (True where item b shows query q's video, so it is
    never a negative even when it is another item).
    """

    video_ids: list[str]
    query_ids: list[str]
    frames: torch.Tensor
    patches: torch.Tensor
    video_mask: torch.Tensor
    words: torch.Tensor
    word_mask: torch.Tensor
    sentence: torch.Tensor
    query_video: torch.Tensor
    group_index: torch.Tensor
    query_order: torch.Tensor
    start_idx: torch.Tensor
    end_idx: torch.Tensor
    start_frac: torch.Tensor
    end_frac: torch.Tensor
    span_norm: torch.Tensor
    same_video: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        kw: dict[str, Any] = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                              for k, v in self.__dict__.items()}
        return Batch(**kw)

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    @property
    def num_queries(self) -> int:
        return len(self.query_ids)


def crop_windows(prepared: PreparedData, groups: Sequence[Group], rng: np.random.Generator,
                 probability: float) -> list[tuple[int, int]]:
    """Random temporal crops for training: per item ``(first clip, clips kept)``.

    With ``probability`` an item keeps a random window of its clips that still holds every
    moment of its queries (the margins before the first and after the last are cut at
    random), so absolute position in the video stops identifying a moment. Otherwise the
    whole video, ``(0, valid)``.
    """
    out = []
    for g in groups:
        v = prepared.videos[g.video_id]
        if probability <= 0 or rng.random() >= probability:
            out.append((0, v.valid))
            continue
        qs = [prepared.queries[q] for q in g.query_ids]
        lo = min(pq.start_idx for pq in qs)
        hi = max(pq.end_idx for pq in qs) + 1
        first = int(rng.integers(0, lo + 1))
        last = int(rng.integers(hi, v.valid + 1))
        out.append((first, last - first))
    return out


@dataclass(frozen=True)
class Splice:
    """Clips ``first .. first + count - 1`` of another training video, put ``before`` (or after)
    an item's own clips (:func:`splice_plans`)."""

    video_id: str
    first: int
    count: int
    before: bool


def splice_plans(prepared: PreparedData, groups: Sequence[Group], crops: Sequence[tuple[int, int]],
                 rng: np.random.Generator, probability: float, pool: Sequence[str]) -> list[Splice | None]:
    """Training augmentation: with ``probability`` an item gets a stretch of another video
    spliced before or after its own (cropped) clips, in the room its padding leaves.

    The other video comes from ``pool`` (the training videos) and is never one of the batch's
    own videos; its events are distractors the item's queries must not pick, and the item's
    moments move to another place in a longer sequence, so neither a moment's position nor
    the video's length says where it is. The stretch is 25-100 % of the room, at least one clip.
    """
    own = {g.video_id for g in groups}
    others = [v for v in pool if v not in own and v in prepared.videos]
    out: list[Splice | None] = []
    for (_, kept) in crops:
        room = prepared.num_clips - kept
        if probability <= 0 or not others or room < 1 or rng.random() >= probability:
            out.append(None)
            continue
        other = prepared.videos[others[int(rng.integers(0, len(others)))]]
        longest = min(room, other.valid)
        count = int(rng.integers(max(1, longest // 4), longest + 1))
        first = int(rng.integers(0, other.valid - count + 1))
        out.append(Splice(other.video_id, first, count, bool(rng.random() < 0.5)))
    return out


def collate(prepared: PreparedData, groups: Sequence[Group],
            crops: Sequence[tuple[int, int]] | None = None,
            splices: Sequence[Splice | None] | None = None) -> Batch:
    """Stack groups into one ``Batch`` (see its docstring for shapes); ``crops`` (training
    augmentation, :func:`crop_windows`): per item the first clip and number of clips kept;
    ``splices`` (training augmentation, :func:`splice_plans`): per item another video's clips
    before or after its own, or None."""
    vids = [prepared.videos[g.video_id] for g in groups]
    queries = [prepared.queries[q] for g in groups for q in g.query_ids]
    b, q = len(vids), len(queries)
    n = max(len(pq.words) for pq in queries)
    g_max = max(len(g.query_ids) for g in groups)
    if crops is None:
        crops = [(0, v.valid) for v in vids]
    if splices is None:
        splices = [None] * b
    offsets = [0] * b  # where each item's own first kept clip lands
    lengths = [kept for _, kept in crops]
    if all(c == (0, v.valid) for c, v in zip(crops, vids, strict=True)) and not any(splices):
        frames = torch.stack([v.frames for v in vids])
        patches = torch.stack([v.patches for v in vids])
    else:
        frames = torch.zeros(b, *vids[0].frames.shape)
        patches = torch.zeros(b, *vids[0].patches.shape)
        for i, (v, (first, kept), sp) in enumerate(zip(vids, crops, splices, strict=True)):
            at = 0
            if sp is not None:
                ov = prepared.videos[sp.video_id]
                if kept + sp.count > prepared.num_clips:
                    raise ValueError(f"splice of {sp.count} clips does not fit beside {kept} clips")
                other_at = 0 if sp.before else kept
                at = sp.count if sp.before else 0
                frames[i, other_at:other_at + sp.count] = ov.frames[sp.first : sp.first + sp.count]
                patches[i, other_at:other_at + sp.count] = ov.patches[sp.first : sp.first + sp.count]
                lengths[i] = kept + sp.count
            offsets[i] = at
            frames[i, at:at + kept] = v.frames[first : first + kept]
            patches[i, at:at + kept] = v.patches[first : first + kept]
    video_mask = torch.zeros(b, prepared.num_clips, dtype=torch.bool)
    for i, length in enumerate(lengths):
        video_mask[i, :length] = True
    words = torch.zeros(q, n, queries[0].words.shape[1])
    word_mask = torch.zeros(q, n, dtype=torch.bool)
    for j, pq in enumerate(queries):
        words[j, : len(pq.words)] = pq.words
        word_mask[j, : len(pq.words)] = True
    sentence = torch.stack([pq.sentence for pq in queries])
    query_video = torch.tensor([i for i, g in enumerate(groups) for _ in g.query_ids], dtype=torch.long)
    group_index = torch.full((b, g_max), -1, dtype=torch.long)
    k = 0
    for i, g in enumerate(groups):
        group_index[i, : len(g.query_ids)] = torch.arange(k, k + len(g.query_ids))
        k += len(g.query_ids)
    query_order = torch.tensor([pq.order for pq in queries], dtype=torch.long)
    valid = torch.tensor([lengths[i] for i in query_video.tolist()], dtype=torch.float32)
    shift = torch.tensor([crops[i][0] - offsets[i] for i in query_video.tolist()], dtype=torch.long)
    start_idx = torch.tensor([pq.start_idx for pq in queries], dtype=torch.long) - shift
    end_idx = torch.tensor([pq.end_idx for pq in queries], dtype=torch.long) - shift
    start_frac = torch.tensor([pq.start_frac for pq in queries], dtype=torch.float32)
    end_frac = torch.tensor([pq.end_frac for pq in queries], dtype=torch.float32)
    span_norm = torch.stack([(start_idx + start_frac) / valid, (end_idx + end_frac) / valid], dim=1)
    vid_names = [g.video_id for g in groups]
    same_video = torch.tensor([[vid_names[int(i)] == other for other in vid_names] for i in query_video],
                              dtype=torch.bool).reshape(q, b)
    return Batch(vid_names, [pq.record.query_id for pq in queries], frames, patches, video_mask,
                 words, word_mask, sentence, query_video, group_index, query_order,
                 start_idx, end_idx, start_frac, end_frac, span_norm.clamp(0, 1), same_video)


def drop_words(word_mask: torch.Tensor, rng: np.random.Generator, probability: float) -> torch.Tensor:
    """Training augmentation: each real word is hidden with ``probability`` (its mask set to
    False); a query keeps at least one word (its first is restored when all were drawn)."""
    drop = torch.from_numpy(rng.random(tuple(word_mask.shape)) < probability)
    kept = word_mask & ~drop
    empty = ~kept.any(dim=1)
    if bool(empty.any()):
        first = word_mask.float().argmax(dim=1)
        kept[empty, first[empty]] = True
    return kept


def iterate_batches(prepared: PreparedData, sampler: GroupSampler, epoch: int,
                    skip: int = 0, *, crop_probability: float = 0.0,
                    word_dropout: float = 0.0, splice_probability: float = 0.0) -> Iterator[Batch]:
    """Batches of one epoch in the sampler's order, skipping the first ``skip`` (resume).

    ``crop_probability`` > 0 crops items at random (:func:`crop_windows`), ``splice_probability``
    > 0 splices other training videos' clips beside them (:func:`splice_plans`, from the
    sampler's own videos) and ``word_dropout`` > 0 hides words at random (:func:`drop_words`),
    from generators seeded by (sampler seed, epoch, batch index), so a resumed run draws the
    same crops, splices and words."""
    pool = sorted({g.video_id for g in sampler.groups}) if splice_probability > 0 else []
    for i, groups in enumerate(sampler.batches(epoch)):
        if i >= skip:
            crops = None
            splices = None
            if crop_probability > 0:
                rng = np.random.default_rng([sampler.seed, epoch, i, 7])
                crops = crop_windows(prepared, groups, rng, crop_probability)
            if splice_probability > 0:
                crops = crops or [(0, prepared.videos[g.video_id].valid) for g in groups]
                splices = splice_plans(prepared, groups, crops, np.random.default_rng([sampler.seed, epoch, i, 13]),
                                       splice_probability, pool)
            batch = collate(prepared, groups, crops, splices)
            if word_dropout > 0:
                batch.word_mask = drop_words(batch.word_mask, np.random.default_rng([sampler.seed, epoch, i, 11]),
                                             word_dropout)
            yield batch
