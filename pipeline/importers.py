"""Published clip features in, and out: the readers behind ``mktn import-features`` /
``mktn export-features``.

Formats, in the layouts their users have on disk (``FORMATS``):

- ``c3d-hdf5``: one HDF5 file, one group per video id holding a ``c3d_features`` dataset
  [T, 500] (the ActivityNet challenge release read by 2D-TAN, MMN and others);
- ``hdf5``: one HDF5 file, one dataset per video name [T, D] (2D-TAN's TACoS and Charades);
- ``npy-dir``: one ``<vid>.npy`` [T, D] per video (Charades-STA I3D of VSLNet and others);
- ``npz-dir``: one ``<vid>.npz`` with key ``features`` [T, D] (Moment-DETR, Lighthouse);
- ``video-features``: v-iashin/video_features ``save_numpy`` output,
  ``<name>_<type>.npy`` [T, D] beside ``<name>_fps.npy`` and ``<name>_timestamps_ms.npy``.

Each video is written to the same Zarr feature store ``mktn extract`` writes
(``storage.features``): ``frames`` [T, D], ``patches`` [T, 1, D] (published features have
no patches: P = 1, a copy of the frames), ``clip_times`` [T, 2], and provenance.

The time axis (seconds of each clip), in this order: ``--clip-seconds S`` / ``--fps F``
when given (clip i = [i S, (i+1) S]); else the source's own (``clip_times`` in an npz,
video_features' ``timestamps_ms``); else the annotations' duration d of the video, T clips
spread evenly over it (clip i = [i d / T, (i+1) d / T]). The rule used is recorded in the
extractor group's and each video's attributes (``time_axis``).

One bad video never stops a run: a video named by the annotations but absent from the
source, a NaN row, or a width unlike the other videos' is one line in the summary, and
the other videos are imported. NumPy files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pipeline.provenance import code_version, source_digest
from storage.features import FeatureGroup, FeatureStore
from storage.fingerprint import file_digest
from storage.keys import safe_component

log = logging.getLogger(__name__)

FORMATS: dict[str, str] = {
    "c3d-hdf5": "one HDF5 file, one group per video id holding a 'c3d_features' dataset [T, 500]",
    "hdf5": "one HDF5 file, one dataset per video name [T, D]",
    "npy-dir": "a directory of <vid>.npy files, each [T, D]",
    "npz-dir": "a directory of <vid>.npz files with key 'features' [T, D]",
    "video-features": "v-iashin/video_features output: <name>_<type>.npy [T, D] with "
    "<name>_fps.npy and <name>_timestamps_ms.npy",
}
EXPORT_FORMATS = ("npz-dir", "npy-dir")
C3D_KEY = "c3d_features"
NPY_DIR_TIMES = "clip_times.npz"  # npy-dir sidecar written by export: {vid: clip_times [T, 2]}
_VF_META = ("fps", "timestamps_ms")


class FeatureImportError(ValueError):
    """The whole source is unusable (not an HDF5 file, no such directory, wrong layout)."""


class VideoImportError(ValueError):
    """One video of the source cannot be imported; the others go on."""


@dataclass
class SourceVideo:
    """One video as the source holds it: ``features`` [T, D], its own ``clip_times`` if any."""

    features: np.ndarray
    clip_times: np.ndarray | None = None
    time_source: str = ""  # what the source's own clip_times came from
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- readers


class FeatureSource:
    """A published feature file or folder: video ids and ``read(video_id)``."""

    format = ""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def video_ids(self) -> list[str]:
        raise NotImplementedError

    def read(self, video_id: str) -> SourceVideo:
        raise NotImplementedError

    def files(self) -> list[Path]:
        """The files whose content decides the features (for the source digest)."""
        return [self.path]

    def close(self) -> None:
        pass

    def __enter__(self) -> FeatureSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hdf5_file(path: Path, fmt: str) -> Any:
    import h5py

    if not path.is_file():
        raise FeatureImportError(f"--source {str(path)!r}: no such file (--format {fmt} reads one HDF5 file)")
    if not h5py.is_hdf5(str(path)):
        raise FeatureImportError(
            f"--source {str(path)!r} is not an HDF5 file (no HDF5 signature); check the path, "
            "or pick the --format that matches it (npy-dir, npz-dir, video-features)"
        )
    try:
        return h5py.File(str(path), "r")
    except OSError as exc:
        raise FeatureImportError(f"--source {str(path)!r}: cannot open the HDF5 file ({exc})") from None


class _Hdf5Source(FeatureSource):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._file = _hdf5_file(self.path, self.format)
        self._ids = sorted(str(k) for k in self._file.keys())
        if not self._ids:
            raise FeatureImportError(f"--source {str(self.path)!r}: the HDF5 file holds no entries")
        self._check_layout(self._file[self._ids[0]])

    def _check_layout(self, first: Any) -> None:
        raise NotImplementedError

    def video_ids(self) -> list[str]:
        return list(self._ids)

    def close(self) -> None:
        self._file.close()

    def _node(self, video_id: str) -> Any:
        """The file's entry for ``video_id`` (a missing one is a per-video failure)."""
        node = self._file.get(video_id)
        if node is None:
            raise VideoImportError(f"{video_id}: not in {self.path}")
        return node

    def _dataset(self, video_id: str) -> Any:
        raise NotImplementedError

    def read(self, video_id: str) -> SourceVideo:
        ds = self._dataset(video_id)
        return SourceVideo(np.asarray(ds[()]), meta={"source_key": ds.name})


class C3DHdf5Source(_Hdf5Source):
    format = "c3d-hdf5"

    def _check_layout(self, first: Any) -> None:
        import h5py

        if isinstance(first, h5py.Dataset):
            raise FeatureImportError(
                f"--source {str(self.path)!r} holds datasets at its top level (e.g. {first.name!r}), "
                f"not groups with a {C3D_KEY!r} dataset; use --format hdf5"
            )

    def _dataset(self, video_id: str) -> Any:
        import h5py

        node = self._node(video_id)
        if not isinstance(node, h5py.Group) or C3D_KEY not in node:
            raise VideoImportError(f"{video_id}: {node.name!r} in {self.path} has no {C3D_KEY!r} dataset")
        return node[C3D_KEY]


class Hdf5Source(_Hdf5Source):
    format = "hdf5"

    def _check_layout(self, first: Any) -> None:
        import h5py

        if isinstance(first, h5py.Group):
            hint = "use --format c3d-hdf5" if C3D_KEY in first else "one dataset per video is expected"
            raise FeatureImportError(
                f"--source {str(self.path)!r} holds groups at its top level (e.g. {first.name!r}), "
                f"not [T, D] datasets; {hint}"
            )

    def _dataset(self, video_id: str) -> Any:
        import h5py

        node = self._node(video_id)
        if not isinstance(node, h5py.Dataset):
            raise VideoImportError(f"{video_id}: {node.name!r} in {self.path} is a group, not a [T, D] dataset")
        return node


def _require_dir(path: Path, fmt: str, pattern: str) -> list[Path]:
    if not path.is_dir():
        raise FeatureImportError(
            f"--source {str(path)!r} is not a directory (--format {fmt} reads a folder of {pattern} files)"
        )
    files = sorted(p for p in path.glob(pattern) if p.is_file())
    if not files:
        raise FeatureImportError(f"--source {str(path)!r} holds no {pattern} file (--format {fmt})")
    return files


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except ValueError as exc:  # object arrays need pickle: refused
        raise VideoImportError(f"{path.name}: cannot be read without pickle ({exc}); re-save it as a float array") from None
    except OSError as exc:
        raise VideoImportError(f"{path.name}: not a readable .npy file ({exc})") from None


class NpyDirSource(FeatureSource):
    format = "npy-dir"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._files = {p.stem: p for p in _require_dir(self.path, self.format, "*.npy")}
        self._times: dict[str, np.ndarray] = {}
        sidecar = self.path / NPY_DIR_TIMES
        if sidecar.is_file():
            with np.load(sidecar, allow_pickle=False) as z:
                self._times = {k: np.asarray(z[k]) for k in z.files}

    def video_ids(self) -> list[str]:
        return sorted(self._files)

    def files(self) -> list[Path]:
        extra = [self.path / NPY_DIR_TIMES] if self._times else []
        return sorted(self._files.values()) + extra

    def read(self, video_id: str) -> SourceVideo:
        path = self._files.get(video_id)
        if path is None:
            raise VideoImportError(f"{video_id}: no {video_id}.npy in {self.path}")
        times = self._times.get(video_id)
        return SourceVideo(_load_npy(path), times, NPY_DIR_TIMES if times is not None else "",
                           meta={"source_key": path.name})


class NpzDirSource(FeatureSource):
    format = "npz-dir"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._files = {p.stem: p for p in _require_dir(self.path, self.format, "*.npz")}

    def video_ids(self) -> list[str]:
        return sorted(self._files)

    def files(self) -> list[Path]:
        return sorted(self._files.values())

    def read(self, video_id: str) -> SourceVideo:
        path = self._files.get(video_id)
        if path is None:
            raise VideoImportError(f"{video_id}: no {video_id}.npz in {self.path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                if "features" not in z.files:
                    raise VideoImportError(f"{path.name}: no 'features' key (it has {sorted(z.files)})")
                feats = np.asarray(z["features"])
                times = np.asarray(z["clip_times"]) if "clip_times" in z.files else None
        except (ValueError, OSError) as exc:
            if isinstance(exc, VideoImportError):
                raise
            raise VideoImportError(f"{path.name}: not a readable .npz file without pickle ({exc})") from None
        return SourceVideo(feats, times, "clip_times key" if times is not None else "",
                           meta={"source_key": path.name})


class VideoFeaturesSource(FeatureSource):
    """``<name>_<type>.npy``; ``type`` from ``--feature-type`` (``rgb+flow`` joins i3d's two
    streams along the feature axis) or, when the folder holds one type only, from the names."""

    format = "video-features"

    def __init__(self, path: str | os.PathLike[str], feature_type: str | None = None) -> None:
        super().__init__(path)
        files = _require_dir(self.path, self.format, "*.npy")
        names = [p.name for p in files]
        feats = [n for n in names if not any(n.endswith(f"_{m}.npy") for m in _VF_META)]
        if feature_type is None:
            types = sorted({n[:-4].rpartition("_")[2] for n in feats if "_" in n})
            if len(types) != 1:
                raise FeatureImportError(
                    f"--source {str(self.path)!r} holds feature types {types or 'none'} "
                    "(<name>_<type>.npy); pass --feature-type (e.g. rgb, or rgb+flow to join i3d's streams)"
                )
            feature_type = types[0]
        self.types = feature_type.split("+")
        suffix = f"_{self.types[0]}.npy"
        self._names = sorted(n[: -len(suffix)] for n in feats if n.endswith(suffix) and len(n) > len(suffix))
        if not self._names:
            raise FeatureImportError(f"--source {str(self.path)!r} holds no <name>{suffix} file")
        self.feature_type = feature_type

    def video_ids(self) -> list[str]:
        return list(self._names)

    def files(self) -> list[Path]:
        out = []
        for name in self._names:
            for kind in (*self.types, *_VF_META):
                p = self.path / f"{name}_{kind}.npy"
                if p.is_file():
                    out.append(p)
        return out

    def read(self, video_id: str) -> SourceVideo:
        parts = []
        for kind in self.types:
            p = self.path / f"{video_id}_{kind}.npy"
            if not p.is_file():
                raise VideoImportError(f"{video_id}: no {p.name} in {self.path}")
            parts.append(_load_npy(p))
        if len(parts) > 1:
            lengths = {a.shape[0] if a.ndim else 0 for a in parts}
            if len(lengths) != 1 or any(a.ndim != 2 for a in parts):
                raise VideoImportError(
                    f"{video_id}: the {'+'.join(self.types)} streams have shapes "
                    f"{[a.shape for a in parts]}; they must be [T, D_i] with one T"
                )
        feats = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        meta: dict[str, Any] = {"source_key": f"{video_id}_{self.feature_type}"}
        fps_p = self.path / f"{video_id}_fps.npy"
        if fps_p.is_file():
            meta["source_fps"] = float(np.asarray(_load_npy(fps_p)).reshape(-1)[0])
        ts_p = self.path / f"{video_id}_timestamps_ms.npy"
        times = None
        if ts_p.is_file():
            ts = np.asarray(_load_npy(ts_p), dtype=np.float64).reshape(-1) / 1000.0
            if feats.ndim == 2 and len(ts) != feats.shape[0]:
                raise VideoImportError(
                    f"{video_id}: {ts_p.name} has {len(ts)} timestamps for {feats.shape[0]} feature rows"
                )
            times = centred_windows(ts)
        return SourceVideo(feats, times, "timestamps_ms (clip centres)" if times is not None else "", meta)


def centred_windows(centres: np.ndarray) -> np.ndarray:
    """[T] clip times (seconds) -> [T, 2] windows centred on them, as wide as their median
    spacing, the first clipped at 0. One timestamp: a 1-second window."""
    c = np.asarray(centres, dtype=np.float64)
    width = float(np.median(np.diff(c))) if len(c) > 1 else 1.0
    if not width > 0:
        width = 1.0
    return np.stack([np.maximum(c - width / 2, 0.0), c + width / 2], axis=1)


def open_source(fmt: str, path: str | os.PathLike[str], *, feature_type: str | None = None) -> FeatureSource:
    """The reader of ``fmt`` on ``path`` (``FeatureImportError`` for an unusable source)."""
    if fmt not in FORMATS:
        raise FeatureImportError(f"unknown feature format {fmt!r}; choose one of {sorted(FORMATS)}")
    if feature_type is not None and fmt != "video-features":
        raise FeatureImportError("--feature-type applies to --format video-features only")
    if not Path(path).exists():
        raise FeatureImportError(f"--source {os.fspath(path)!r}: no such file or directory")
    if fmt == "c3d-hdf5":
        return C3DHdf5Source(path)
    if fmt == "hdf5":
        return Hdf5Source(path)
    if fmt == "npy-dir":
        return NpyDirSource(path)
    if fmt == "npz-dir":
        return NpzDirSource(path)
    return VideoFeaturesSource(path, feature_type)


def source_sha256(files: Sequence[Path], digests: Mapping[str, str] | None = None) -> str:
    """sha256 of one file's content; of several, over their names and contents' sha256.

    ``digests``: the files' own sha256 by ``str(path)`` when the caller already has them (the
    flows' fingerprint index); a file it lacks is hashed here.
    """
    def one(p: Path) -> str:
        known = None if digests is None else digests.get(str(p))
        return known if known is not None else file_digest(p)

    if len(files) == 1:
        return one(files[0])
    h = hashlib.sha256()
    for p in sorted(files):
        h.update(p.name.encode())
        h.update(b"\0")
        h.update(one(p).encode())
        h.update(b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------- time axis


@dataclass(frozen=True)
class TimeAxisPolicy:
    """How clip indices become seconds; ``clip_seconds`` None: the source's, else annotations'."""

    clip_seconds: float | None = None
    requested_as: str = ""  # "--clip-seconds 1.0" / "--fps 2.0"

    def to_attrs(self) -> dict[str, Any]:
        if self.clip_seconds is not None:
            return {"policy": "fixed", "clip_seconds": self.clip_seconds, "requested_as": self.requested_as,
                    "rule": f"clip i covers [i*{self.clip_seconds:g}, (i+1)*{self.clip_seconds:g}] seconds"}
        return {"policy": "source, else annotations",
                "rule": "the source's own clip times where it has them; else clip i covers "
                        "[i*d/T, (i+1)*d/T] of the annotations' duration d of the video"}


def time_axis_policy(clip_seconds: float | None = None, fps: float | None = None) -> TimeAxisPolicy:
    if clip_seconds is not None and fps is not None:
        raise FeatureImportError("give --clip-seconds or --fps, not both")
    for name, v in (("--clip-seconds", clip_seconds), ("--fps", fps)):
        if v is not None and not (np.isfinite(v) and v > 0):
            raise FeatureImportError(f"{name} must be a positive number of seconds/clips per second, got {v}")
    if clip_seconds is not None:
        return TimeAxisPolicy(float(clip_seconds), f"--clip-seconds {clip_seconds:g}")
    if fps is not None:
        return TimeAxisPolicy(1.0 / float(fps), f"--fps {fps:g}")
    return TimeAxisPolicy()


def resolve_clip_times(video_id: str, num_clips: int, src: SourceVideo, policy: TimeAxisPolicy,
                       duration: float | None) -> tuple[np.ndarray, dict[str, Any]]:
    """``clip_times`` [T, 2] and the record of how they were made (see the module docstring)."""
    t = num_clips
    idx = np.arange(t, dtype=np.float64)
    if policy.clip_seconds is not None:
        s = policy.clip_seconds
        return np.stack([idx * s, (idx + 1) * s], axis=1), {"mode": "fixed", "clip_seconds": s,
                                                            "requested_as": policy.requested_as}
    if src.clip_times is not None:
        times = np.asarray(src.clip_times, dtype=np.float64)
        if times.shape != (t, 2) or not np.all(np.isfinite(times)):
            raise VideoImportError(
                f"{video_id}: the source's clip times have shape {times.shape}, expected [T={t}, 2] finite seconds"
            )
        return times, {"mode": "source", "from": src.time_source}
    if duration is None:
        raise VideoImportError(
            f"{video_id}: the source gives no time axis and no annotation names this video; "
            "pass --annotations that include it, or --clip-seconds/--fps"
        )
    if not duration > 0:
        raise VideoImportError(f"{video_id}: the annotations give it duration {duration}; cannot spread {t} clips over it")
    s = duration / t
    return np.stack([idx * s, (idx + 1) * s], axis=1), {"mode": "annotations", "duration": duration,
                                                        "clip_seconds": s}


# ---------------------------------------------------------------- annotations


def annotation_durations(specs: Sequence[str], fmt: str | None = None,
                         durations: Sequence[str] | None = None) -> dict[str, float]:
    """``{video_id: duration}`` from annotation files given as ``PATH`` or ``SPLIT=PATH``
    (the same parsers and durations tables as ``mktn embed``; the longest duration wins)."""
    from pipeline.datasets import load_annotations, parse_split_arg

    records = []
    seen: set[str] = set()
    for split, path in [parse_split_arg(item) for item in specs]:  # all checked before any is read
        res = load_annotations(None if fmt in (None, "auto") else fmt, path,
                               durations=list(durations) if durations else None, split=split,
                               seen_query_ids=seen)
        records.extend(res.records)
    return record_durations(records)


def record_durations(records: Iterable[Any]) -> dict[str, float]:
    """``{video_id: duration}`` of already parsed ``QueryMoment`` records (the longest wins)."""
    out: dict[str, float] = {}
    for r in records:
        out[r.video_id] = max(out.get(r.video_id, 0.0), float(r.duration))
    return out


# ---------------------------------------------------------------- the import


@dataclass
class ImportSummary:
    extractor_id: str = ""
    dataset: str = ""
    source: str = ""
    feature_dim: int | None = None
    done: list[str] = field(default_factory=list)
    num_clips: int = 0
    skipped: list[str] = field(default_factory=list)  # already complete
    missing: list[str] = field(default_factory=list)  # annotated, not in the source
    failed: dict[str, str] = field(default_factory=dict)  # video id -> one-line reason
    unannotated: int = 0  # in the source, in no annotation: not imported
    wall_seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if not self.done and not self.skipped:
            return 2
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        return {"extractor_id": self.extractor_id, "dataset": self.dataset, "source": self.source,
                "feature_dim": self.feature_dim, "done": len(self.done), "num_clips": self.num_clips,
                "skipped": len(self.skipped), "missing": list(self.missing), "failed": dict(self.failed),
                "unannotated": self.unannotated, "wall_seconds": round(self.wall_seconds, 3)}

    def format(self) -> str:
        lines = [
            f"imported {len(self.done)} videos ({self.num_clips} clips, width {self.feature_dim}) into "
            f"{self.dataset}/{self.extractor_id}; {len(self.skipped)} already complete, "
            f"{len(self.missing)} missing from the source, {len(self.failed)} failed"
            + (f", {self.unannotated} not in the annotations (not imported)" if self.unannotated else "")
            + f" in {self.wall_seconds:.1f} s"
        ]
        lines += [f"  MISSING {v}: in the annotations but not in {self.source}" for v in self.missing]
        lines += [f"  FAILED {v}: {why}" for v, why in self.failed.items()]
        return "\n".join(lines)


def default_extractor_id(fmt: str, digest: str, feature_type: str | None = None) -> str:
    """``<format>[-<type>]@<sha8>``, e.g. ``c3d-hdf5@1a2b3c4d``."""
    kind = f"{fmt}-{feature_type}" if feature_type else fmt
    return safe_component(f"{kind}@{digest[:8]}", what="extractor id")


def _check_features(video_id: str, x: np.ndarray, width: int | None, where: str) -> np.ndarray:
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise VideoImportError(f"{video_id}: features have shape {x.shape} in {where}; expected [T, D] with T, D >= 1")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise VideoImportError(f"{video_id}: features have dtype {x.dtype} in {where}; expected real numbers")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise VideoImportError(
            f"{video_id}: row {int(rows[0])} of {x.shape[0]} is NaN/inf in {where}"
            + (f" ({len(rows)} such rows)" if len(rows) > 1 else "")
            + "; fix the source or leave this video out"
        )
    if width is not None and x.shape[1] != width:
        raise VideoImportError(
            f"{video_id}: feature width {x.shape[1]} in {where}, but the other videos have {width}; "
            "one store group holds one width (import it under another --dataset/--extractor-id)"
        )
    return x


def import_features(
    fmt: str,
    source: str | os.PathLike[str],
    store: FeatureStore,
    dataset: str,
    *,
    durations: Mapping[str, float] | None = None,
    clip_seconds: float | None = None,
    fps: float | None = None,
    extractor_id: str | None = None,
    feature_type: str | None = None,
    dtype: str = "float16",
    force: bool = False,
    normalize: bool = True,
    progress: bool = True,
    file_digests: Mapping[str, str] | None = None,
) -> ImportSummary:
    """Import every video of ``source`` (only those ``durations`` names, when given) into
    ``store``'s ``dataset`` group; one video's problem is recorded in the summary, never raised.

    ``file_digests``: the sha256 of the source's files by path, when the caller has them (see
    :func:`source_sha256`), so a large file is not hashed twice.
    Raises ``FeatureImportError`` for a source that cannot be used at all.
    """
    t0 = time.perf_counter()
    safe_component(dataset, what="dataset")
    policy = time_axis_policy(clip_seconds, fps)
    if dtype not in ("float16", "float32"):
        raise FeatureImportError(f"--dtype {dtype!r}: choose float16 or float32")
    with open_source(fmt, source, feature_type=feature_type) as src:
        digest = source_sha256(src.files(), file_digests)
        ex_id = (safe_component(extractor_id, what="extractor id") if extractor_id
                 else default_extractor_id(fmt, digest, getattr(src, "feature_type", None)))
        summary = ImportSummary(extractor_id=ex_id, dataset=dataset, source=str(source))
        available = src.video_ids()
        if durations is not None:
            have = set(available)
            wanted = sorted(durations)
            summary.missing = [v for v in wanted if v not in have]
            summary.unannotated = len(have - set(wanted))
            wanted = [v for v in wanted if v in have]
            if not wanted:
                raise FeatureImportError(
                    f"none of the {len(durations)} annotated videos is in {source} "
                    f"(it holds {len(available)}, e.g. {available[:3]}); check --source and --annotations"
                )
        else:
            wanted = available
        group_attrs: dict[str, Any] = {
            "imported": True,
            "format": fmt,
            "source_sha256": digest,
            "num_patches": 1,
            "patches": "none in the source: patches [T, 1, D] are a copy of frames",
            "time_axis": policy.to_attrs(),
            "dtype": dtype,
        }
        if feature_type:
            group_attrs["feature_type"] = feature_type
        group: FeatureGroup | None = None
        width: int | None = None
        try:
            group = store.group(dataset, ex_id, create=False)
        except KeyError:
            group = None
        if group is not None:
            try:  # the same group must have been made from the same source, the same way
                group = store.group(dataset, ex_id, attrs=group_attrs)
            except ValueError as exc:
                raise FeatureImportError(str(exc)) from None
            stored_w = group.attrs.get("feature_dim")
            width = int(stored_w) if stored_w is not None else None
        complete = set(group.list_videos()) if group is not None and not force else set()
        for vid in tqdm(wanted, desc="importing", disable=not progress, leave=False):
            if vid in complete:
                summary.skipped.append(vid)
                continue
            try:
                safe_component(vid, what="video id")
                video = src.read(vid)
                where = f"{source}" + (f" ({video.meta['source_key']})" if "source_key" in video.meta else "")
                feats = _check_features(vid, np.asarray(video.features), width, where)
                duration = None if durations is None else durations.get(vid)
                times, axis = resolve_clip_times(vid, feats.shape[0], video, policy, duration)
                if group is None:
                    width = int(feats.shape[1])
                    group = store.group(dataset, ex_id, attrs={**group_attrs, "feature_dim": width})
                frames = feats.astype(np.float32)
                attrs = {
                    "dataset": dataset,
                    "extractor_id": ex_id,
                    **{k: v for k, v in group_attrs.items() if k != "time_axis"},
                    "feature_dim": int(feats.shape[1]),
                    "source_dtype": str(feats.dtype),
                    **video.meta,
                    "source_path": str(Path(source).resolve()),
                    "time_axis": axis,
                    "duration": float(duration) if duration is not None else float(times[-1, 1]),
                    "code_version": code_version(),
                    "source_digest": source_digest(),
                }
                group.write_video(vid, frames, frames[:, None, :], times, attrs, dtype=dtype, overwrite=True)
            except (VideoImportError, ValueError, OSError, KeyError) as exc:
                reason = str(exc)
                prefix = f"{vid}: "
                summary.failed[vid] = reason[len(prefix):] if reason.startswith(prefix) else reason
                log.warning("%s: %s", vid, summary.failed[vid])
                continue
            summary.done.append(vid)
            summary.num_clips += int(feats.shape[0])
        summary.feature_dim = width
    if summary.done and normalize and group is not None:
        group.compute_normalization()
    if group is not None:  # the run's last step: the metadata snapshot (storage.features)
        group.ensure_snapshot()
    summary.wall_seconds = time.perf_counter() - t0
    return summary


# ---------------------------------------------------------------- export


@dataclass
class ExportSummary:
    out: str
    format: str
    videos: int = 0
    feature_dim: int = 0


def export_features(store: FeatureStore, dataset: str, out: str | os.PathLike[str], fmt: str, *,
                    extractor_id: str | None = None, progress: bool = True) -> ExportSummary:
    """Write every committed video's frames as ``npz-dir`` (``<vid>.npz``: ``features`` float32
    [T, D] and ``clip_times`` [T, 2]) or ``npy-dir`` (``<vid>.npy`` float32 [T, D], the time axis
    in ``clip_times.npz`` beside them); ``import-features`` reads either back unchanged."""
    if fmt not in EXPORT_FORMATS:
        raise FeatureImportError(f"--format {fmt!r}: export writes one of {list(EXPORT_FORMATS)}")
    try:
        group = store.select_group(dataset, extractor_id, hint="pass --extractor to choose one")
    except ValueError as exc:
        raise FeatureImportError(str(exc)) from None
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary(str(dest), fmt)
    times: dict[str, np.ndarray] = {}
    for vid in tqdm(group.list_videos(), desc="exporting", disable=not progress, leave=False):
        v = group.read_video(vid, dtype="float32")
        summary.feature_dim = int(v.frames.shape[1])
        if fmt == "npz-dir":
            _atomic_save(dest / f"{vid}.npz", lambda fh, v=v: _savez(
                fh, {"features": v.frames, "clip_times": np.asarray(v.clip_times, np.float64)}))
        else:
            _atomic_save(dest / f"{vid}.npy", lambda fh, v=v: np.save(fh, v.frames, allow_pickle=False))
            times[vid] = np.asarray(v.clip_times, np.float64)
        summary.videos += 1
    if fmt == "npy-dir" and times:
        _atomic_save(dest / NPY_DIR_TIMES, lambda fh: _savez(fh, times))
    return summary


def _atomic_save(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        write(fh)
    os.replace(tmp, path)


def _savez(fh: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` with any key (a video named ``file`` included), no pickles."""
    import zipfile

    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, arr in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(arr), allow_pickle=False)
