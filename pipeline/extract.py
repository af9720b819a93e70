"""Videos -> clip and patch features in the Zarr feature store, decode overlapped with compute.

A background reader thread probes, fingerprints and decodes videos into batches
of uint8 clips (pinned on CUDA); the calling thread copies them to the device
(non-blocking), normalises them there and runs batched inference (``torch.inference_mode``; autocast on CUDA) and writes each finished
video to the store, whose commit marker is written last. Killed at any moment and
rerun, only videos without a commit marker, or whose source changed, are extracted.

The reader takes each video's writer lock (``FeatureGroup.writer_lock``) before checking
whether the video is up to date and holds it until the calling thread has written it, so a
second extraction of the same video (another process or run) waits and then skips it. With
``ExtractionConfig.video_timeout_s`` a video that does not finish in time (a hung decoder)
fails as timed out and a fresh reader goes on with the next videos.

Library entry points: :func:`extract_videos` (many videos, one summary) and
:func:`extract_one` (one video; what a Prefect task or a Dask worker calls).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import platform
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.backbones import ClipFeatureExtractor, build_extractor, get_spec, weights_tag
from pipeline.overrides import strict_replace
from pipeline.provenance import code_version, source_digest
from pipeline.video import ClipSampling, ClipStream, VideoDecodeError, VideoInfo, probe
from storage.atomic import atomic_write_json
from storage.features import FeatureGroup, FeatureStore, VideoLockedError
from storage.fingerprint import FileFingerprint, digest_strings, fingerprint_file, quick_unchanged
from storage.keys import safe_component

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (
    ".mp4",
    ".webm",
    ".avi",
    ".mkv",
    ".mov",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".flv",
    ".wmv",
)


@dataclass(frozen=True)
class ExtractionConfig:
    """Everything that decides the features (and a few knobs that only decide speed).

    ``clip_len``/``resize``/``crop`` default to the backbone's own input (None).
    The default is the CPU demo decision measured in docs/features.md: tiny3d,
    its last two stages (layer2+layer3, 384-d), a 2x2 patch grid, 8-frame clips at 8 fps,
    stride 8 (one clip per second).
    """

    backbone: str = "classic"
    layer: str | None = (
        None  # None: the backbone's default (its last conv stage; tiny3d: layer2+layer3)
    )
    grid: int = 4  # patch grid side; P = grid**2 (4: small objects keep a patch of their own)
    weights: str | None = None  # local state dict; None: seeded random init
    seed: int = 0
    fps: float = 8.0
    clip_len: int | None = None
    stride: int | None = None  # None: clip_len (non-overlapping clips)
    resize: int | None = None
    crop: int | None = None
    geometry: Literal["crop", "full"] = "full"  # "full": the whole frame, resized (nothing cut)
    dtype: Literal["float16", "float32"] = "float16"
    # clips before each clip whose frames (every other one) join the `objects` descriptor's
    # background median: a walker slower than its own size per second is its own background in
    # one clip's 8 frames (docs/features.md, "A longer background"); 0 = the clip alone
    background_clips: int = 3
    dataset: str = "default"
    extractor_id: str | None = None  # None: derived from the feature-deciding fields
    # speed only (not part of the extractor id)
    batch_size: int | None = None  # None: measured on CPU (BatchSizeProbe), by free memory on CUDA
    device: str = "auto"
    threads: int | None = None  # torch CPU threads; None: all cores
    decode_threads: int = 1
    prefetch_batches: int = 4
    verify_content: bool = False  # hash even files whose size and mtime are unchanged
    # seconds one video may take (decode + extract + write) before it fails as timed out and
    # the run goes on with the next; None: no limit (the flows default to 3600)
    video_timeout_s: float | None = None

    def sampling(self) -> ClipSampling:
        if self.video_timeout_s is not None and not self.video_timeout_s > 0:
            raise ValueError(f"video timeout must be > 0 seconds, got {self.video_timeout_s}")
        if self.background_clips < 0:
            raise ValueError(f"--background-clips must be >= 0 (0: each clip alone), got {self.background_clips}")
        spec = get_spec(self.backbone)
        clip_len = self.clip_len or spec.clip_len
        return ClipSampling(
            fps=self.fps,
            clip_len=clip_len,
            stride=self.stride or clip_len,
            resize=self.resize or spec.resize,
            crop=self.crop or spec.crop,
            geometry=self.geometry,
        )

    def resolved_layer(self) -> str:
        return self.layer or get_spec(self.backbone).default_layer

    def feature_config(self) -> dict[str, Any]:
        """The fields that decide the features, as stored in the extractor group's attrs."""
        _, weights = weights_tag(self.weights, self.seed)
        return {
            "backbone": self.backbone,
            "layer": self.resolved_layer(),
            "grid": self.grid,
            "num_patches": self.grid * self.grid,
            "feature_dim": get_spec(self.backbone).channels(self.resolved_layer()),
            "weights": weights,
            "sampling": asdict(self.sampling()),
            "dtype": self.dtype,
            **({"background_clips": self.background_clips} if self.uses_background() else {}),
        }

    def uses_background(self) -> bool:
        """Whether ``background_clips`` decides the features (the `objects` family, > 0)."""
        return self.background_clips > 0 and "objects" in self.resolved_layer().split("+")

    @classmethod
    def from_feature_config(
        cls, attrs: dict[str, Any], *, weights: str | os.PathLike[str] | None = None, **settings: Any
    ) -> ExtractionConfig:
        """The inverse of :meth:`feature_config`: the config that reproduces a feature group's
        features from its attributes (``FeatureGroup.attrs``, or a checkpoint's copy of them).

        ``weights``: the local weights file, needed again when the features came from one (its
        sha256 must match the recorded ``"sha256:<digest>"``); refused for seeded random init,
        whose seed is read back from ``"random-init seed=N"`` (``parse_weights_tag``).
        ``settings``: fields that do not decide the features (``dataset``, ``device``, ...).
        Groups written before ``geometry`` or ``dtype`` were recorded read as ``"crop"`` and
        ``"float16"``, what they were written with.
        """
        from pipeline.backbones import parse_weights_tag

        need = ("backbone", "layer", "grid", "weights", "sampling")
        missing = [k for k in need if k not in attrs]
        if missing:
            raise ValueError(
                f"the feature provenance lacks {missing}: it was not written by `mktn extract` "
                "(imported features?), so the features cannot be re-extracted"
            )
        tag = str(attrs["weights"])
        seed, sha256 = parse_weights_tag(tag)
        if seed is not None and weights is not None:
            raise ValueError(f"the features used seeded random weights ({tag}); do not pass --weights")
        if sha256 is not None:
            if weights is None:
                raise FileNotFoundError(
                    f"the features were extracted with a local weights file ({tag}); "
                    "pass it again with --weights PATH"
                )
            _, got = weights_tag(weights, 0)
            if got != tag:
                raise ValueError(f"--weights {os.fspath(weights)!r} is {got}, the features used {tag}")
        s = attrs["sampling"]
        return cls(
            backbone=str(attrs["backbone"]),
            layer=str(attrs["layer"]),
            grid=int(attrs["grid"]),
            weights=None if weights is None else os.fspath(weights),
            seed=seed or 0,
            fps=float(s["fps"]),
            clip_len=int(s["clip_len"]),
            stride=int(s["stride"]),
            resize=int(s["resize"]),
            crop=int(s["crop"]),
            geometry=str(s.get("geometry", "crop")),  # type: ignore[arg-type]
            dtype=str(attrs.get("dtype", "float16")),  # type: ignore[arg-type]
            background_clips=int(attrs.get("background_clips", 0)),
            **settings,
        )

    def resolved_extractor_id(self) -> str:
        """``<backbone>-<layer>-g<grid>@<weights>-<hash8>``, e.g. ``tiny3d-layer3-g2@random0-1a2b3c4d``."""
        if self.extractor_id:
            return safe_component(self.extractor_id, what="extractor id")
        short, _ = weights_tag(self.weights, self.seed)
        digest = digest_strings(json.dumps(self.feature_config(), sort_keys=True))[:8]
        return safe_component(
            f"{self.backbone}-{self.resolved_layer()}-g{self.grid}@{short}-{digest}",
            what="extractor id",
        )


def build_extraction_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    dataset: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> ExtractionConfig:
    """``ExtractionConfig`` from JSON-able ``overrides`` (e.g. a flow's ``extractor`` parameter
    ``{"backbone": "r3d_18", "fps": 4}``) over a caller's ``defaults`` (the flows': a video
    timeout and torch threads), with ``dataset`` set last. Unknown keys are an error; the
    sampling (fps, clip, crop) and the timeout are checked before any video is touched.

    >>> build_extraction_config({"fps": 4}, dataset="d", defaults={"video_timeout_s": 60}).fps
    4
    """
    config = strict_replace(ExtractionConfig(), defaults, "extractor default(s)")
    config = strict_replace(config, overrides, "extractor setting(s)")
    if dataset is not None:
        config = replace(config, dataset=dataset)
    config.sampling()
    return config


@dataclass
class VideoResult:
    """What happened to one video: ``status`` is ``done``, ``skipped`` or ``failed``."""

    video_id: str
    path: str
    status: Literal["done", "skipped", "failed"]
    reason: str = ""
    num_clips: int = 0
    seconds: float = 0.0


@dataclass
class ExtractionSummary:
    """Per-video results of a run and its totals."""

    results: list[VideoResult] = field(default_factory=list)
    extractor_id: str = ""
    wall_seconds: float = 0.0

    def _with(self, status: str) -> list[VideoResult]:
        return [r for r in self.results if r.status == status]

    @property
    def done(self) -> list[VideoResult]:
        return self._with("done")

    @property
    def skipped(self) -> list[VideoResult]:
        return self._with("skipped")

    @property
    def failed(self) -> list[VideoResult]:
        return self._with("failed")

    @property
    def num_clips(self) -> int:
        return sum(r.num_clips for r in self.done)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def format(self) -> str:
        lines = [
            f"extractor {self.extractor_id}: {len(self.done)} done ({self.num_clips} clips), "
            f"{len(self.skipped)} skipped as already complete, {len(self.failed)} failed "
            f"in {self.wall_seconds:.1f} s"
        ]
        lines += [f"  FAILED {r.video_id} ({r.path}): {r.reason}" for r in self.failed]
        return "\n".join(lines)


# --- inputs -------------------------------------------------------------------------------


def find_videos(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Video files from a directory (recursively, by extension), a list file, or a list of paths.

    A list file has one path per line (``#`` comments and blank lines ignored; relative
    paths are relative to the list file).
    """
    if isinstance(source, str | os.PathLike):
        p = Path(source)
        if p.is_dir():
            return sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS
            )
        if p.is_file() and p.suffix.lower() in (".txt", ".lst", ".list"):
            out = []
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line)
                    out.append(q if q.is_absolute() else p.parent / q)
            return out
        if p.is_file():
            return [p]
        raise FileNotFoundError(f"--videos {str(p)!r}: no such directory, list file or video")
    return [Path(s) for s in source]


def video_id_for(path: str | os.PathLike[str]) -> str:
    """The store key of a video: its file name without extension (validated)."""
    try:
        return safe_component(
            Path(path).stem, what=f"video id (from file name {os.fspath(path)!r})"
        )
    except ValueError as exc:
        raise ValueError(f"{exc}; rename the file (its name becomes the video id)") from None


def _recorded_fingerprint(attrs: dict[str, Any]) -> FileFingerprint | None:
    d = attrs.get("source_fingerprint")
    return FileFingerprint.from_dict(d) if isinstance(d, dict) else None


def up_to_date(
    group: FeatureGroup,
    video_id: str,
    path: str | os.PathLike[str],
    *,
    verify_content: bool = False,
    attrs: dict[str, Any] | None = None,
    sha256: str | None = None,
) -> bool:
    """True when ``video_id`` is committed and its source file is unchanged.

    Size differs -> changed. Size and mtime equal -> unchanged (unless ``verify_content``).
    Mtime differs (or ``verify_content``) -> the sha256 decides; a touched file with the
    same content keeps its features and its recorded mtime is refreshed.
    ``attrs``: the video's committed attributes when the caller has read them already
    (``FeatureGroup.committed_attrs()``); ``None`` reads them from the store.
    ``sha256``: the file's content digest when the caller has computed it (the flows hash every
    file once, up front); the file is then not hashed again here.
    """
    if attrs is None:
        if not group.is_complete(video_id):
            return False
        attrs = group.video_attrs(video_id)
    recorded = _recorded_fingerprint(attrs)
    if recorded is None:
        return False
    try:
        quick = quick_unchanged(path, recorded)
    except OSError:
        return False
    if quick is False:
        return False
    if quick is True and not verify_content:
        return True
    current = fingerprint_file(path, sha256=sha256)
    if current.sha256 != recorded.sha256:
        return False
    if current.mtime_ns != recorded.mtime_ns:  # touched, same content: remember the new mtime
        refreshed = dict(recorded.to_dict(), mtime_ns=current.mtime_ns)
        group.update_video_attrs(video_id, {"source_fingerprint": refreshed})
        log.info("%s: modification time changed but content did not; not re-extracted", path)
    return True


# --- the model side -----------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"--device {device!r} requested but CUDA is not available; use --device cpu"
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    return torch.device(device)


_MODEL_CACHE: dict[tuple[Any, ...], ClipFeatureExtractor] = {}
_MODEL_LOCK = threading.Lock()


def get_model(config: ExtractionConfig, device: torch.device) -> ClipFeatureExtractor:
    """The extractor network for ``config`` on ``device``, built once per process."""
    key = (
        config.backbone,
        config.resolved_layer(),
        config.grid,
        config.weights,
        config.seed,
        config.background_clips if config.uses_background() else 0,
        str(device),
    )
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            model = build_extractor(
                config.backbone,
                layer=config.resolved_layer(),
                grid=config.grid,
                weights=config.weights,
                seed=config.seed,
                background_clips=config.background_clips if config.uses_background() else 0,
            )
            _MODEL_CACHE[key] = model.to(device)
        return _MODEL_CACHE[key]


def auto_batch_size(
    model: ClipFeatureExtractor, sampling: ClipSampling, device: torch.device
) -> int:
    """CUDA: as many clips as fit in half the free memory (1..256). CPU: see :class:`BatchSizeProbe`.

    On CPU this returns the largest probe candidate, the size the reader decodes at; the
    compute side splits those batches into the size the probe picks.
    """
    if device.type != "cuda":
        return max(CPU_BATCH_CANDIDATES)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    x = torch.zeros((2, 3, sampling.clip_len, sampling.crop, sampling.crop), device=device)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
        model(x)
    per_clip = max(1, (torch.cuda.max_memory_allocated(device) - before) // 2)
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(256, (free // 2) // per_clip)))


# --- CPU speed: the batch size by measurement, and the allocator ---------------------------

# 8 is left out: measured on R(2+1)D-18 (bench/extract_vs_peer.py, docs/benchmarks.md) its
# activations no longer fit the caches and its peak RSS passes 2 GB, for no gain per clip
CPU_BATCH_CANDIDATES: tuple[int, ...] = (1, 2, 4)


class BatchSizeProbe:
    """Picks the CPU batch size from the timings of real batches (none is wasted).

    On CPU a larger batch is not always faster per clip (the temporaries of a large batch
    fall out of the caches and, without :func:`tune_cpu_allocator`, are faulted in again for
    every batch), and where the balance lies depends on the backbone, the clip size, the
    threads and the machine. So the first batches of a run are computed at each candidate
    size in turn (ascending): ``warmup`` unmeasured chunks (the first call at a new shape
    builds its kernels), then ``trials`` measured ones. The size with the fewest seconds per
    clip (best of its trials) wins; the probe stops early once a size is clearly slower per
    clip than the one before it (by more than ``stop_margin``, 5 %: a shared machine's noise
    alone must not end the probe before the larger sizes are tried, as it did at 0.2 %).
    ``record`` ignores a chunk of another size than asked for (the short last batch of a
    video).

    >>> probe = BatchSizeProbe((1, 2, 4), warmup=0, trials=1)
    >>> for size, seconds in [(1, 1.0), (2, 1.6), (4, 3.6)]:
    ...     assert probe.next_size() == size
    ...     probe.record(size, seconds)
    >>> probe.chosen, probe.per_clip
    (2, {1: 1.0, 2: 0.8, 4: 0.9})
    """

    def __init__(
        self,
        candidates: Sequence[int] = CPU_BATCH_CANDIDATES,
        *,
        warmup: int = 1,
        trials: int = 2,
        stop_margin: float = 0.05,
        on_choice: Callable[[BatchSizeProbe], None] | None = None,
    ) -> None:
        if not candidates or min(candidates) < 1:
            raise ValueError(f"batch size candidates must be >= 1, got {candidates!r}")
        self.candidates = sorted(set(candidates))
        self._steps = [(c, i >= warmup) for c in self.candidates for i in range(warmup + trials)]
        self._step = 0
        self._seconds: dict[int, list[float]] = {}
        self.chosen: int | None = self.candidates[0] if len(self.candidates) == 1 else None
        self.remembered = False  # True: chosen from the cache of an earlier run, not measured
        self._on_choice = on_choice
        self.stop_margin = stop_margin

    @classmethod
    def remembered_choice(cls, chosen: int, per_clip: dict[int, float]) -> BatchSizeProbe:
        """A probe already decided (what an earlier run measured): nothing is measured again."""
        probe = cls((chosen,))
        probe._seconds = {b: [t * b] for b, t in per_clip.items()}
        probe.remembered = True
        return probe

    @property
    def per_clip(self) -> dict[int, float]:
        """Best measured seconds per clip of each size measured so far."""
        return {b: min(s) / b for b, s in self._seconds.items()}

    def next_size(self) -> int:
        return self.chosen if self.chosen is not None else self._steps[self._step][0]

    def record(self, size: int, seconds: float) -> None:
        if self.chosen is not None or size != self._steps[self._step][0]:
            return
        _, measured = self._steps[self._step]
        if measured:
            self._seconds.setdefault(size, []).append(seconds)
        self._step += 1
        done = self._step == len(self._steps)
        if not done and self._steps[self._step][0] != size:  # finished this size
            per = self.per_clip
            sizes = sorted(per)
            done = len(sizes) >= 2 and per[sizes[-1]] > per[sizes[-2]] * (1 + self.stop_margin)
        if done:
            per = self.per_clip
            self.chosen = min(per, key=lambda b: (per[b], b))
            log.info(
                "CPU batch size %d (seconds per clip by batch size: %s)",
                self.chosen,
                ", ".join(f"{b}: {t:.4f}" for b, t in sorted(per.items())),
            )
            if self._on_choice is not None:
                self._on_choice(self)


def pick_batch_size(
    time_batch: Callable[[int], float],
    candidates: Sequence[int] = CPU_BATCH_CANDIDATES,
    *,
    warmup: int = 1,
    trials: int = 1,
) -> int:
    """The batch size :class:`BatchSizeProbe` picks when ``time_batch(b)`` (seconds for one
    batch of ``b`` clips) is the measurement.

    >>> pick_batch_size(lambda b: {1: 1.0, 2: 1.9, 4: 3.7}[b])
    4
    """
    probe = BatchSizeProbe(candidates, warmup=warmup, trials=trials)
    while probe.chosen is None:
        size = probe.next_size()
        probe.record(size, time_batch(size))
    return probe.chosen


# The probe of each (model, clip shape, threads) lives as long as the process, so the many
# one-video calls of a Dask worker or a Prefect task measure once between them.
_PROBES: dict[tuple[Any, ...], BatchSizeProbe] = {}

# --- the probe's choice, remembered between runs -------------------------------------------

PROBE_CACHE_ENV = "MKTN_BATCH_PROBE_CACHE"  # "0": measure in every run, read and write nothing
PROBE_CACHE_FILE = "cpu-batch-size.json"
PROBE_CACHE_MAX_AGE_S = 30 * 24 * 3600  # an older choice is measured again
_PROBE_CACHE_VERSION = 1


def probe_cache_path() -> Path:
    """``$MKTN_CACHE_DIR/cpu-batch-size.json``, else ``~/.cache/mktn/cpu-batch-size.json``
    (the same root as the GloVe cache)."""
    base = os.environ.get("MKTN_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "mktn") / PROBE_CACHE_FILE


def probe_cache_enabled() -> bool:
    return os.environ.get(PROBE_CACHE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "cpu model", "hardware")):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def probe_cache_key(
    backbone: str,
    layer: str,
    grid: int,
    clip_len: int,
    crop: int,
    threads: int,
    candidates: Sequence[int] = CPU_BATCH_CANDIDATES,
) -> str:
    """What the probe's choice depends on: the network and its input size, the threads, torch,
    the candidates and the machine (architecture, CPU model, usable CPUs, host name)."""
    parts = {
        "backbone": backbone,
        "layer": layer,
        "grid": grid,
        "input": [clip_len, crop, crop],
        "threads": threads,
        "candidates": sorted(set(candidates)),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": _usable_cpus(),
        "host": platform.node(),
    }
    return json.dumps(parts, sort_keys=True, separators=(",", ":"))


def _read_probe_cache(path: Path) -> dict[str, Any]:
    """The cache's entries; an unreadable or malformed file counts as empty (logged)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("ignoring the batch size cache %s: %s", path, exc)
        return {}
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != _PROBE_CACHE_VERSION:
            raise ValueError(f"not a version {_PROBE_CACHE_VERSION} batch size cache")
        entries = data.get("entries")
        if not isinstance(entries, dict):
            raise ValueError("no entries")
    except ValueError as exc:
        log.warning(
            "ignoring the batch size cache %s (%s); the batch size is measured again "
            "and the file rewritten",
            path,
            exc,
        )
        return {}
    return entries


def lookup_probe_choice(
    key: str, candidates: Sequence[int] = CPU_BATCH_CANDIDATES, *, now: float | None = None
) -> BatchSizeProbe | None:
    """The decided probe an earlier run stored under ``key``; None when there is none, it
    is older than ``PROBE_CACHE_MAX_AGE_S``, malformed, or the cache is off."""
    if not probe_cache_enabled():
        return None
    path = probe_cache_path()
    entry = _read_probe_cache(path).get(key)
    if entry is None:
        return None
    now = time.time() if now is None else now
    try:
        chosen = entry["chosen"]
        measured_at = float(entry["measured_at"])
        per_clip = {int(b): float(t) for b, t in entry.get("per_clip", {}).items()}
        if not isinstance(chosen, int) or isinstance(chosen, bool) or chosen not in candidates:
            raise ValueError(f"batch size {chosen!r} is not a candidate")
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring a malformed entry of the batch size cache %s: %s", path, exc)
        return None
    if not 0 <= now - measured_at <= PROBE_CACHE_MAX_AGE_S:
        return None
    log.info(
        "CPU batch size %d, remembered from a probe on %s (seconds per clip: %s; %s; "
        "%s=0 measures again)",
        chosen,
        time.strftime("%Y-%m-%d %H:%M", time.localtime(measured_at)),
        ", ".join(f"{b}: {t:.4f}" for b, t in sorted(per_clip.items())) or "-",
        path,
        PROBE_CACHE_ENV,
    )
    return BatchSizeProbe.remembered_choice(chosen, per_clip)


def store_probe_choice(key: str, probe: BatchSizeProbe, *, now: float | None = None) -> None:
    """Remember ``probe``'s choice under ``key`` (JSON, written atomically; failures logged)."""
    if not probe_cache_enabled() or probe.chosen is None or probe.remembered:
        return
    path = probe_cache_path()
    entries = _read_probe_cache(path)
    entries[key] = {
        "chosen": probe.chosen,
        "per_clip": {str(b): round(t, 6) for b, t in sorted(probe.per_clip.items())},
        "measured_at": time.time() if now is None else now,
    }
    try:
        atomic_write_json(path, {"version": _PROBE_CACHE_VERSION, "entries": entries})
    except OSError as exc:
        log.warning("could not remember the CPU batch size in %s: %s", path, exc)


def cpu_batch_probe(key: tuple[Any, ...]) -> BatchSizeProbe:
    """This process's probe for ``key`` (backbone, layer, grid, clip_len, crop, threads): the
    one already running, else the choice an earlier run remembered, else a new measurement
    whose choice is remembered once made."""
    probe = _PROBES.get(key)
    if probe is None:
        cache_key = probe_cache_key(*key)
        probe = lookup_probe_choice(cache_key) or BatchSizeProbe(
            on_choice=lambda p: store_probe_choice(cache_key, p)
        )
        probe = _PROBES.setdefault(key, probe)
    return probe


_LAST_BATCH: list[int | None] = [None]


def last_batch_choice() -> int | None:
    """The compute batch size of this process's last extraction (the probe's pick on CPU)."""
    return _LAST_BATCH[0]


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_ALLOCATOR: list[bool | None] = [None]


def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process so no batch faults its temporaries in again (glibc).

    glibc serves a block above its mmap threshold (at most 32 MiB on 64-bit) with a fresh
    ``mmap`` and gives it back with ``munmap`` on free, and trims the heap top above its trim
    threshold, so the activations of every CPU batch (a 16x112x112 R(2+1)D batch of 8 has
    100 MB ones) are page-faulted in again each time. At the start of a CPU extraction this
    sets ``M_MMAP_MAX`` to 0 (large blocks come from the heap too) and ``M_TRIM_THRESHOLD``
    to 1 GiB (freed memory stays for the next batch), process-wide and once. Peak RSS is
    not raised: the memory kept is what the previous batch needed. Set ``MKTN_MALLOC_TUNING=0``
    to leave the allocator alone; elsewhere than glibc it does nothing. True when applied.
    """
    if _ALLOCATOR[0] is not None:
        return _ALLOCATOR[0]
    applied = False
    if os.environ.get("MKTN_MALLOC_TUNING", "1") != "0" and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None)
            gnu = getattr(libc, "gnu_get_libc_version", None)
            if gnu is not None and hasattr(libc, "mallopt"):
                applied = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
                    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
                )
        except OSError:
            applied = False
    _ALLOCATOR[0] = applied
    log.debug("glibc malloc tuning %s", "applied" if applied else "not applied")
    return applied


# --- the reader thread --------------------------------------------------------------------


@dataclass
class _Job:
    video_id: str
    path: str
    force: bool = False
    sha256: str | None = None  # the content digest when the caller computed it (not hashed again)


@dataclass
class _Start:
    job: _Job
    info: VideoInfo
    stream: ClipStream
    fingerprint: FileFingerprint


@dataclass
class _Batch:
    job: _Job
    indices: np.ndarray
    times: np.ndarray
    clips: torch.Tensor  # (B, L, H, W, 3) uint8, pinned on CUDA


@dataclass
class _End:
    job: _Job


@dataclass
class _Skip:
    job: _Job


@dataclass
class _Fail:
    job: _Job
    reason: str


_DONE = object()
_IDLE = object()  # nothing arrived for a poll interval: lets the driver check the video's deadline
_POLL_S = 0.25


class _Reader(threading.Thread):
    """Probes, fingerprints and decodes videos, feeding normalised batches into a bounded queue."""

    def __init__(
        self,
        jobs: list[_Job],
        group: FeatureGroup,
        config: ExtractionConfig,
        model: ClipFeatureExtractor,
        batch_size: int,
        pin: bool,
    ) -> None:
        super().__init__(name="mktn-video-reader", daemon=True)
        self.jobs = jobs
        self.group = group
        self.config = config
        self.sampling = config.sampling()
        self.model = model
        self.batch_size = batch_size
        self.pin = pin
        self.out: queue.Queue[Any] = queue.Queue(maxsize=max(1, config.prefetch_batches))
        self.stop = threading.Event()
        self.error: BaseException | None = None
        # video id -> its held writer lock; taken here before the up-to-date check, released
        # by the driver once the video is written, skipped or failed (release())
        self._locks: dict[str, contextlib.AbstractContextManager[None]] = {}
        self._locks_guard = threading.Lock()

    def _acquire(self, job: _Job) -> None:
        cm = self.group.writer_lock(job.video_id)
        cm.__enter__()
        with self._locks_guard:
            self._locks[job.video_id] = cm
        if self.stop.is_set():  # the driver gave up while we waited for the lock
            self.release(job.video_id)
            raise _Stopped

    def release(self, video_id: str) -> None:
        """Release the writer lock of ``video_id`` (any thread; no-op when not held)."""
        with self._locks_guard:
            cm = self._locks.pop(video_id, None)
        if cm is not None:
            cm.__exit__(None, None, None)

    def release_all(self) -> None:
        with self._locks_guard:
            held = list(self._locks)
        for video_id in held:
            self.release(video_id)

    def _put(self, item: Any) -> None:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Stopped

    def run(self) -> None:
        try:
            for job in self.jobs:
                if self.stop.is_set():
                    raise _Stopped
                self._one(job)
            self._put(_DONE)
        except _Stopped:
            self.release_all()
            return
        except BaseException as exc:  # a bug, not a bad video: surface it in the caller
            self.error = exc
            self.release_all()
            raise

    def _one(self, job: _Job) -> None:
        # The writer lock is held from before the up-to-date check until the driver has
        # written the video: a second extraction of it (another process, or another run in
        # this one) waits here, then finds it complete and skips it instead of redoing it.
        try:
            self._acquire(job)
        except VideoLockedError as exc:
            self._put(_Fail(job, str(exc)))
            return
        except OSError as exc:  # the lock file cannot be created (read-only store...)
            self._put(_Fail(job, f"cannot take the writer lock: {exc}"))
            return
        try:
            if not job.force and up_to_date(
                self.group, job.video_id, job.path, verify_content=self.config.verify_content,
                sha256=job.sha256,
            ):
                self._put(_Skip(job))
                return
            info = probe(job.path)
            fingerprint = fingerprint_file(job.path, sha256=job.sha256)
            stream = ClipStream(
                job.path, self.sampling, info=info, decode_threads=self.config.decode_threads
            )
        except VideoDecodeError as exc:
            self._put(_Fail(job, exc.reason))
            return
        except Exception as exc:  # unreadable file, I/O error...
            self._put(_Fail(job, f"{type(exc).__name__}: {exc}"))
            return
        self._put(_Start(job, info, stream, fingerprint))
        try:
            for batch in stream.batches(self.batch_size):
                # uint8 crosses the thread boundary (4x smaller than float32, and large
                # float buffers freed in another thread bloat glibc's per-thread arenas);
                # the compute side normalises, on the GPU when there is one.
                clips = torch.from_numpy(batch.frames)
                if self.pin:
                    clips = clips.pin_memory()
                self._put(_Batch(job, batch.indices, batch.times, clips))
        except _Stopped:
            raise
        except VideoDecodeError as exc:
            self._put(_Fail(job, exc.reason))
            return
        except Exception as exc:
            self._put(_Fail(job, f"decoding failed: {type(exc).__name__}: {exc}"))
            return
        self._put(_End(job))

    def items(self) -> Iterator[Any]:
        """The reader's items in order, with ``_IDLE`` whenever nothing came for ``_POLL_S``."""
        while True:
            try:
                item = self.out.get(timeout=_POLL_S)
            except queue.Empty:
                if not self.is_alive():
                    raise RuntimeError(f"the video reader thread died: {self.error!r}") from None
                yield _IDLE
                continue
            if item is _DONE:
                return
            yield item


class _Stopped(Exception):
    pass


# --- the driver ---------------------------------------------------------------------------


def _video_attrs(config: ExtractionConfig, start: _Start, extractor_id: str) -> dict[str, Any]:
    info, plan = start.info, start.stream.plan
    return {
        "dataset": config.dataset,
        "extractor_id": extractor_id,
        **config.feature_config(),
        "fps": config.sampling().fps,
        "clip_len": plan.clip_len,
        "stride": config.sampling().stride,
        "padded_frames": plan.padded_frames,
        "padded_clips": plan.padded_clips,
        "source_path": str(Path(start.job.path).resolve()),
        "source_fingerprint": start.fingerprint.to_dict(),
        "source_video": {
            "num_frames": info.num_frames,
            "fps": info.fps,
            "duration": info.duration,
            "width": info.width,
            "height": info.height,
            "variable_frame_rate": info.variable_frame_rate,
        },
        "duration": info.duration,
        "code_version": code_version(),
        "source_digest": source_digest(),
    }


@contextlib.contextmanager
def _cpu_threads(config: ExtractionConfig, device: torch.device) -> Iterator[None]:
    """Use ``config.threads`` (default: every core) for torch on CPU, restoring the old setting."""
    before = torch.get_num_threads()
    want = (config.threads or os.cpu_count() or 1) if device.type == "cpu" else before
    if want != before:
        torch.set_num_threads(want)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _run(
    jobs: list[_Job],
    store: FeatureStore | FeatureGroup,
    config: ExtractionConfig,
    *,
    progress: bool,
) -> ExtractionSummary:
    t0 = time.perf_counter()
    extractor_id = config.resolved_extractor_id()
    if isinstance(store, FeatureGroup):
        group = store
    else:
        group = store.group(config.dataset, extractor_id, attrs=config.feature_config())
    # a read-only or full store location is one OSError here, not one failure per video
    group.check_writable()
    device = resolve_device(config.device)
    with _cpu_threads(config, device):
        summary = _drive(jobs, group, config, device, extractor_id, progress)
    summary.wall_seconds = time.perf_counter() - t0
    return summary


def _timeout_reason(seconds: float) -> str:
    return (
        f"timed out after {seconds:g} s: decoding or extracting this video did not finish "
        "(a hung or unusually slow file); the run went on without it. For longer videos "
        "raise the limit (video_timeout_s, mktn extract --video-timeout)"
    )


def _drive(
    jobs: list[_Job],
    group: FeatureGroup,
    config: ExtractionConfig,
    device: torch.device,
    extractor_id: str,
    progress: bool,
) -> ExtractionSummary:
    """Run the reader over ``jobs`` and extract + write each video it hands over.

    With ``config.video_timeout_s``, a video that has not finished that many seconds after
    the previous one did (or the run started) fails as timed out: its reader is abandoned
    (a daemon thread, possibly stuck in the decoder) and a fresh one carries on with the
    videos after it.
    """
    model = get_model(config, device)
    batch_size = config.batch_size or auto_batch_size(model, config.sampling(), device)
    use_cuda = device.type == "cuda"
    probe: BatchSizeProbe | None = None
    if not use_cuda:
        tune_cpu_allocator()
        if config.batch_size is None:
            sampling = config.sampling()
            key = (
                config.backbone,
                config.resolved_layer(),
                config.grid,
                sampling.clip_len,
                sampling.crop,
                torch.get_num_threads(),
            )
            probe = cpu_batch_probe(key)
    summary = ExtractionSummary(extractor_id=extractor_id)
    overall = tqdm(total=len(jobs), desc="videos", unit="video", disable=not progress, position=0)
    timeout = config.video_timeout_s
    remaining = list(jobs)
    try:
        while remaining:
            reader = _Reader(remaining, group, config, model, batch_size, pin=use_cuda)
            finished: set[str] = set()
            hung = _drive_reader(
                reader, group, config, device, extractor_id, progress, summary, overall, finished,
                probe,
            )
            if hung is None:
                break
            assert timeout is not None
            log.warning("giving up on %s: %s", hung.path, _timeout_reason(timeout))
            summary.results.append(
                VideoResult(hung.video_id, hung.path, "failed", _timeout_reason(timeout))
            )
            overall.update(1)
            after = [j for j in remaining if j.video_id not in finished]
            remaining = after[1:]  # after[0] is the hung video
    finally:
        overall.close()
    return summary


def _drive_reader(
    reader: _Reader,
    group: FeatureGroup,
    config: ExtractionConfig,
    device: torch.device,
    extractor_id: str,
    progress: bool,
    summary: ExtractionSummary,
    overall: Any,
    finished: set[str],
    probe: BatchSizeProbe | None = None,
) -> _Job | None:
    """Consume one reader; returns the job that timed out (None when every job finished)."""
    model = reader.model
    use_cuda = device.type == "cuda"
    timeout = config.video_timeout_s
    per_video = None
    frames: list[np.ndarray] = []
    patches: list[np.ndarray] = []
    times: list[np.ndarray] = []
    current: _Start | None = None
    started = 0.0
    failed_ids: set[str] = set()
    autocast = torch.autocast("cuda", dtype=torch.float16) if use_cuda else contextlib.nullcontext()
    hung: _Job | None = None
    clock = time.monotonic()  # when the video now in hand became the one to wait for

    def finish(job: _Job) -> None:
        nonlocal clock, per_video, current
        finished.add(job.video_id)
        reader.release(job.video_id)
        current = None
        if per_video is not None:
            per_video.close()
            per_video = None
        overall.update(1)
        clock = time.monotonic()

    reader.start()
    try:
        for item in reader.items():
            if item is not _IDLE:
                job = item.job
                if isinstance(item, _Skip):
                    summary.results.append(
                        VideoResult(job.video_id, job.path, "skipped", "already complete")
                    )
                    finish(job)
                elif isinstance(item, _Fail):
                    log.warning("skipping %s: %s", job.path, item.reason)
                    summary.results.append(
                        VideoResult(job.video_id, job.path, "failed", item.reason)
                    )
                    failed_ids.add(job.video_id)
                    finish(job)
                elif isinstance(item, _Start):
                    current, started = item, time.perf_counter()
                    frames, patches, times = [], [], []
                    history: torch.Tensor | None = None
                    per_video = tqdm(
                        total=item.stream.plan.num_clips,
                        desc=job.video_id[:24],
                        unit="clip",
                        leave=False,
                        disable=not progress,
                        position=1,
                    )
                elif isinstance(item, _Batch):
                    if current is None or job.video_id in failed_ids:
                        continue
                    # on CPU the probe may ask for smaller chunks than the reader's batches
                    pos, total = 0, item.clips.shape[0]
                    while pos < total:
                        size = probe.next_size() if probe is not None else total
                        chunk = item.clips[pos : pos + size]
                        t0 = time.perf_counter()
                        with torch.inference_mode(), autocast:
                            x = model.normalize(chunk.to(device, non_blocking=use_cuda))
                            out = model(x, history=history)
                            if model.context_clips:  # the clips the next chunk's first ones follow
                                both = x if history is None else torch.cat([history, x])
                                history = both[-model.context_clips :]
                        frames.append(out["clip"].float().cpu().numpy())
                        patches.append(out["patches"].float().cpu().numpy())
                        if probe is not None:
                            probe.record(chunk.shape[0], time.perf_counter() - t0)
                        pos += chunk.shape[0]
                    _LAST_BATCH[0] = probe.next_size() if probe is not None else reader.batch_size
                    times.append(item.times)
                    if per_video is not None:
                        per_video.update(len(item.indices))
                elif isinstance(item, _End):
                    assert current is not None and current.job is job
                    try:
                        group.write_video(
                            job.video_id,
                            np.concatenate(frames),
                            np.concatenate(patches),
                            np.concatenate(times),
                            _video_attrs(config, current, extractor_id),
                            dtype=config.dtype,
                            overwrite=True,
                            lock=False,  # the reader took it for this video
                        )
                    except (ValueError, OSError) as exc:
                        summary.results.append(
                            VideoResult(job.video_id, job.path, "failed", f"write failed: {exc}")
                        )
                    else:
                        n = current.stream.plan.num_clips
                        summary.results.append(
                            VideoResult(
                                job.video_id, job.path, "done", "", n, time.perf_counter() - started
                            )
                        )
                    finish(job)
            if timeout is not None and time.monotonic() - clock > timeout:
                pending = [j for j in reader.jobs if j.video_id not in finished]
                if pending:
                    hung = pending[0]
                    break
    finally:
        reader.stop.set()
        reader.join(timeout=5 if hung is None else 0.2)
        reader.release_all()
        if per_video is not None:
            per_video.close()
    return hung


def assign_video_ids(
    paths: Iterable[str | os.PathLike[str]],
) -> tuple[list[tuple[str, str]], list[VideoResult]]:
    """Map each path to its video id: ``([(video_id, path), ...], failed results)``.

    A path whose id is unsafe as a store key, or whose id repeats an earlier
    path's, is reported as failed (with the reason) instead of being extracted.
    """
    jobs: list[tuple[str, str]] = []
    bad: list[VideoResult] = []
    seen: dict[str, str] = {}
    for p in paths:
        path = os.fspath(p)
        try:
            vid = video_id_for(path)
        except ValueError as exc:
            bad.append(VideoResult(Path(path).stem or path, path, "failed", str(exc)))
            continue
        if vid in seen:
            bad.append(
                VideoResult(
                    vid,
                    path,
                    "failed",
                    f"duplicate video id {vid!r}: also {seen[vid]}; rename one file",
                )
            )
            continue
        seen[vid] = path
        jobs.append((vid, path))
    return jobs, bad


def _jobs(
    paths: Iterable[str | os.PathLike[str]], force: bool
) -> tuple[list[_Job], list[VideoResult]]:
    planned, bad = assign_video_ids(paths)
    return [_Job(vid, path, force) for vid, path in planned], bad


def extract_videos(
    paths: Iterable[str | os.PathLike[str]],
    store: FeatureStore | str | os.PathLike[str],
    config: ExtractionConfig,
    *,
    force: bool = False,
    progress: bool = True,
    consolidate: bool = True,
) -> ExtractionSummary:
    """Extract every video in ``paths`` into ``store``; skip up-to-date ones; never stop on a bad one.

    Returns the per-video summary (``summary.exit_code`` is 1 when any failed). ``consolidate``:
    end with the group's metadata snapshot (``FeatureStore.consolidate``), so the next run's
    up-to-date checks read one snapshot instead of every video's metadata; a caller that writes
    more first (``mktn extract``'s normalisation statistics) passes False and consolidates last.
    """
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    jobs, bad = _jobs(paths, force)
    summary = _run(jobs, store, config, progress=progress)
    summary.results = bad + summary.results
    if consolidate and jobs:
        store.consolidate(config.dataset, summary.extractor_id)
    return summary


def extract_one(
    path: str | os.PathLike[str],
    group: FeatureGroup | FeatureStore | str | os.PathLike[str],
    config: ExtractionConfig,
    *,
    video_id: str | None = None,
    force: bool = False,
    sha256: str | None = None,
) -> VideoResult:
    """Extract one video (skipped when up to date); never raises for a bad video file.

    ``group`` is an extractor group, or a store/root in which the group for ``config``
    is opened (created on first use). Safe to call concurrently for different videos
    writing to one store. ``sha256``: the file's content digest when the caller computed it
    (the extract-features flow hashes every file once, up front): used for the up-to-date
    check and the recorded fingerprint instead of hashing the file again; without it the
    file is hashed here (once).
    """
    if not isinstance(group, FeatureGroup | FeatureStore):
        group = FeatureStore(group)
    path = os.fspath(path)
    vid = safe_component(video_id, what="video id") if video_id else video_id_for(path)
    summary = _run([_Job(vid, path, force, sha256)], group, config, progress=False)
    return summary.results[0]


# names these functions had before (deprecated, kept for callers): ``list_videos`` read like
# ``FeatureGroup.list_videos`` (committed ids), ``plan_videos`` like the synthetic benchmark's
list_videos = find_videos
plan_videos = assign_video_ids
