"""Zarr v3 feature store: clip ("frame") and patch features per video, with provenance.

Layout (one group per dataset and extractor, one group per video)::

    <root>/features/<dataset>/<extractor_id>/            attrs: extractor provenance,
                                                          "normalization" (after compute_normalization)
    <root>/features/<dataset>/<extractor_id>/<video_id>/  attrs: per-video provenance + "commit"
        frames      [T, D]     float16 (default)   dims ("clip", "feature")
        patches     [T, P, D]  float16 (default)   dims ("clip", "patch", "feature")
        clip_times  [T, 2]     float64 seconds     dims ("clip", "bound")  (start, end)

A video counts only once its commit marker (the ``"commit"`` attribute of the
video's own group) is written, and it is written last. Rewriting a video first
*un-commits* it (rewrites the group's metadata without the marker, one key), and only
then deletes its arrays and writes the new ones, so a crash at any point leaves either
the old complete video, nothing, or an uncommitted group that readers and
``list_videos()`` ignore and the next write replaces: never a video that reads as
complete with arrays missing. :meth:`FeatureGroup.read_video` re-reads the marker after
the arrays and raises :class:`IncompleteVideoError` if the video changed or lost an
array meanwhile, so "complete" always means every array was readable.

Concurrent writers of *different* videos are safe: a video write touches only
keys under that video's group (no shared group attribute is read-modified-written
per video). Writers of the *same* video are serialised by a per-video lock file
(``.<video_id>.writing`` in the extractor group's folder, created with
``O_CREAT | O_EXCL``, holding ``pid@host``; one whose process is gone is stale and
taken over): a second writer waits for the first (:meth:`FeatureGroup.writer_lock`),
then finds the video complete and skips it, or rewrites it. Locks apply to local stores;
a remote (fsspec) store has no lock and must have one writer per video. ``compute_normalization`` rewrites the extractor group's attributes
and is meant to run once, after extraction.

The root may be a local path, a ``file://`` URL, or any fsspec URL that zarr's
``FsspecStore`` understands (``memory://``, ``s3://`` with the ``mktn[s3]`` extra...), opened
with the storage options of :mod:`storage.remote`, or an existing zarr ``Store`` object.

Consolidated metadata (a *snapshot*): every video's metadata (attributes, commit marker and
array metadata) copied into the extractor group's own ``zarr.json``
(:meth:`FeatureGroup.consolidate`), so a reader learns all of them in one read instead of one
read per video (on S3, two requests per video). The rule that keeps it honest:

* a writer drops the snapshot before its first change to the group (a video written,
  re-written or un-committed, attributes updated), so a crashed or running write never
  leaves a snapshot older than the data;
* the process that ran a writing run writes a new snapshot as its last step
  (``mktn extract``, the Dask finaliser, ``mktn import-features``, the flows;
  :meth:`FeatureStore.consolidate`, or ``mktn store consolidate`` by hand);
* readers use the snapshot when there is one, but never trust it for *which* videos exist:
  membership is one listing of the group, and a video the snapshot does not know (written
  since) or knows only uncommitted is read from its own metadata. :meth:`FeatureGroup.read_video`
  checks the commit marker of the video's live metadata after reading its arrays and reads
  again without the snapshot when the two differ. A snapshot can thus cost a redundant
  re-extraction (attributes from an older state), never wrong features.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage
from zarr.abc.store import Store
from zarr.codecs import BloscCodec

from storage.keys import COMMIT_ATTR, join_key, safe_component
from storage.provenance import code_version
from storage.remote import is_remote_root, open_fsspec_store

log = logging.getLogger(__name__)

# A live writer's lock file (and the write probe) sit beside the video groups while the video
# is decoded and extracted; zarr's listing of the group would warn about each one. Only
# these names are silenced: zarr's own leftovers (``zarr.<uuid>.partial``) still warn.
warnings.filterwarnings(
    "ignore",
    message=r"Object at (.*/)?\.([^/]+\.writing|write-probe\.[^/]+\.tmp) is not recognized",
)

FEATURES_ROOT = "features"
NORMALIZATION_ATTR = "normalization"
FRAME_DIMS = ("clip", "feature")
PATCH_DIMS = ("clip", "patch", "feature")
TIME_DIMS = ("clip", "bound")
_DTYPES = ("float16", "float32")


class VideoLockedError(TimeoutError):
    """Another live process holds the writer lock of this video for longer than the timeout."""


_HELD_LOCKS: dict[str, int] = {}  # lock path + thread -> depth (re-entrant per thread)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _lock_is_stale(path: Path, grace_s: float = 30.0) -> bool:
    """A lock whose writer process is gone (same host), or an empty one older than ``grace_s``."""
    try:
        text = path.read_text(encoding="utf-8").strip()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    pid_s, _, host = text.partition("@")
    if not pid_s.isdigit():
        return age > grace_s  # killed between create and write
    if host and host != socket.gethostname():
        return False  # cannot tell from here: wait for it
    return not _pid_alive(int(pid_s))


@contextlib.contextmanager
def file_lock(path: Path, *, timeout: float | None = 600.0, poll: float = 0.1) -> Iterator[None]:
    """Hold ``path`` as an exclusive lock file (``O_CREAT | O_EXCL``) while the block runs.

    Re-entrant within a thread (another thread of the process waits like another process). A lock left by a dead process is taken over; a live
    holder is waited for up to ``timeout`` seconds (None: forever), then
    :class:`VideoLockedError`.
    """
    key = f"{os.fspath(path)}\0{threading.get_ident()}"
    if key in _HELD_LOCKS:
        _HELD_LOCKS[key] += 1
        try:
            yield
        finally:
            _HELD_LOCKS[key] -= 1
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _lock_is_stale(path):
                log.warning("taking over the stale writer lock %s", path)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            if deadline is not None and time.monotonic() >= deadline:
                holder = ""
                with contextlib.suppress(OSError):
                    holder = path.read_text(encoding="utf-8").strip()
                raise VideoLockedError(
                    f"{path} is held by another writer ({holder or 'unknown'}); wait for it, "
                    "or delete the file if that process is gone"
                ) from None
            time.sleep(poll)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}@{socket.gethostname()}")
        break
    _HELD_LOCKS[key] = 1
    try:
        yield
    finally:
        del _HELD_LOCKS[key]
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class IncompleteVideoError(KeyError):
    """The video has no committed features in this group (missing, or a crashed write)."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class VideoFeatures:
    """One video's features with their time axis.

    ``frames`` [T, D], ``patches`` [T, P, D], ``clip_times`` [T, 2] (start, end seconds),
    ``attrs`` the video's provenance attributes (commit marker included).
    """

    frames: np.ndarray
    patches: np.ndarray
    clip_times: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def num_clips(self) -> int:
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class Normalization:
    """Per-dimension mean and std of frame and patch features over a set of videos' clips.

    The one type of video normalisation statistics. :meth:`fit` computes them (streaming);
    :meth:`FeatureGroup.compute_normalization` fits them over the committed videos it is
    given and stores them as the group attribute ``"normalization"``, a description of the
    store. The model standardises with statistics fitted by the same :meth:`fit` over the
    *train split's* videos only (``model.data.fit_norm_stats``, which subclasses this type
    as ``NormStats`` to add the text statistics a checkpoint also carries); it does not
    read the store's attribute (docs/model.md "Normalisation").
    """

    frames_mean: np.ndarray
    frames_std: np.ndarray
    patches_mean: np.ndarray
    patches_std: np.ndarray
    num_videos: int = 0  # 0: not recorded (statistics built by hand or read from an old checkpoint)
    num_clips: int = 0

    @classmethod
    def fit(cls, videos: Iterable[tuple[np.ndarray, np.ndarray]], *, floor: float = 1e-6) -> Normalization:
        """Statistics over every clip (and patch) of ``videos``, ``(frames [T, D], patches
        [T, P, D])`` pairs, read one at a time.

        float64 accumulators merged with Chan's parallel-variance formula, so memory does not
        grow with the number of videos; a std below ``floor`` is stored as ``floor`` so
        standardising never divides by zero.
        """
        stats: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
        count = 0
        for frames, patches in videos:
            count += 1
            for name, x in (("frames", frames), ("patches", patches)):
                x = np.asarray(x).astype(np.float64).reshape(-1, np.shape(x)[-1])
                n_b, mean_b = x.shape[0], x.mean(axis=0)
                m2_b = ((x - mean_b) ** 2).sum(axis=0)
                if name not in stats:
                    stats[name] = (n_b, mean_b, m2_b)
                    continue
                n_a, mean_a, m2_a = stats[name]
                n = n_a + n_b
                delta = mean_b - mean_a
                stats[name] = (n, mean_a + delta * n_b / n, m2_a + m2_b + delta**2 * n_a * n_b / n)
        if not count:
            raise ValueError("cannot compute normalisation statistics from zero videos")
        fn, fmean, fm2 = stats["frames"]
        pn, pmean, pm2 = stats["patches"]
        return cls(
            frames_mean=fmean.astype(np.float32),
            frames_std=np.maximum(np.sqrt(fm2 / fn), floor).astype(np.float32),
            patches_mean=pmean.astype(np.float32),
            patches_std=np.maximum(np.sqrt(pm2 / pn), floor).astype(np.float32),
            num_videos=count,
            num_clips=int(fn),
        )

    def standardize_frames(self, frames: np.ndarray) -> np.ndarray:
        """``(frames - mean) / std`` in float32; ``frames`` [..., D]."""
        return ((np.asarray(frames, np.float32) - self.frames_mean) / self.frames_std).astype(
            np.float32
        )

    def standardize_patches(self, patches: np.ndarray) -> np.ndarray:
        """``(patches - mean) / std`` in float32; ``patches`` [..., D]."""
        return ((np.asarray(patches, np.float32) - self.patches_mean) / self.patches_std).astype(
            np.float32
        )

    def to_attrs(self) -> dict[str, Any]:
        return {
            "frames_mean": self.frames_mean.astype(float).tolist(),
            "frames_std": self.frames_std.astype(float).tolist(),
            "patches_mean": self.patches_mean.astype(float).tolist(),
            "patches_std": self.patches_std.astype(float).tolist(),
            "num_videos": self.num_videos,
            "num_clips": self.num_clips,
        }

    @classmethod
    def from_attrs(cls, d: Mapping[str, Any]) -> Normalization:
        return cls(
            frames_mean=np.asarray(d["frames_mean"], np.float32),
            frames_std=np.asarray(d["frames_std"], np.float32),
            patches_mean=np.asarray(d["patches_mean"], np.float32),
            patches_std=np.asarray(d["patches_std"], np.float32),
            num_videos=int(d.get("num_videos", 0)),
            num_clips=int(d.get("num_clips", 0)),
        )


def open_zarr_store(
    root: str | os.PathLike[str] | Store, storage_options: Mapping[str, Any] | None = None
) -> Store:
    """A zarr ``Store`` for a local path, a ``file://`` URL, another fsspec URL, or a Store.

    ``storage_options``: the fsspec filesystem's options for a URL root (None: those of
    ``MKTN_STORAGE_OPTIONS``; :mod:`storage.remote`). A URL whose filesystem package is missing
    (``s3://`` without s3fs) is one ``ValueError`` naming what to install.
    """
    if isinstance(root, Store):
        return root
    text = os.fspath(root)
    if text.startswith("file://"):
        return zarr.storage.LocalStore(text[len("file://") :])
    if is_remote_root(text):
        return open_fsspec_store(text, storage_options)
    return zarr.storage.LocalStore(Path(text))


def _open_group(store: Store, path: str, mode: str, **kwargs: Any) -> zarr.Group:
    # zarr_format=3: the store is v3 only; without it zarr also probes three v2 keys per open
    return zarr.open_group(store=store, path=path, mode=mode, zarr_format=3, **kwargs)  # type: ignore[arg-type]


def _list_dir(store: Store, path: str) -> list[str]:
    """The names directly under ``path`` (one listing request on an object store)."""
    from zarr.core.sync import sync

    async def collect() -> list[str]:
        return [name async for name in store.list_dir(path)]

    return sync(collect())


def _without_snapshot(group: zarr.Group) -> zarr.Group:
    """The same group with its consolidated metadata set aside: members read from the store."""
    from zarr.core.group import AsyncGroup

    meta = dataclasses.replace(group.metadata, consolidated_metadata=None)
    return zarr.Group(AsyncGroup(metadata=meta, store_path=group.store_path))


def _jsonable(value: Any) -> Any:
    """Attributes must be JSON: convert numpy scalars/arrays, tuples and paths."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _array(group: zarr.Group, name: str) -> zarr.Array:
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise TypeError(f"{group.path}/{name} is a group, expected a feature array")
    return node


class FeatureStore:
    """A Zarr v3 feature store rooted at a path, URL or zarr Store."""

    def __init__(
        self,
        root: str | os.PathLike[str] | Store,
        *,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``storage_options``: the fsspec options of a URL root (None: ``MKTN_STORAGE_OPTIONS``)."""
        self.root = root if isinstance(root, Store) else os.fspath(root)
        self._store = open_zarr_store(root, storage_options)

    def __repr__(self) -> str:
        return f"FeatureStore({self.root!r})"

    def group(
        self,
        dataset: str,
        extractor_id: str,
        *,
        attrs: Mapping[str, Any] | None = None,
        create: bool = True,
    ) -> FeatureGroup:
        """The group for ``dataset`` and ``extractor_id``.

        A new group is created with ``attrs`` (the extractor's provenance) when
        ``create``. If the group exists and ``attrs`` is given, every key they share
        must agree; a mismatch is a ``ValueError`` naming the keys (use another
        extractor id for another configuration).
        """
        path = join_key(FEATURES_ROOT, dataset, extractor_id, what="dataset/extractor id")
        try:
            group = _open_group(self._store, path, "r+")
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError) as exc:
            if not create:
                raise KeyError(
                    f"no feature group {path!r} in {self.root!r}; run `mktn extract` first"
                ) from exc
            base: dict[str, Any] = {
                "dataset": dataset,
                "extractor_id": extractor_id,
                "code_version": code_version(),
            }
            base.update(_jsonable(dict(attrs or {})))
            group = _open_group(self._store, path, "a", attributes=base)
            return FeatureGroup(group, dataset, extractor_id)
        if attrs:
            existing = group.attrs.asdict()
            wanted = _jsonable(dict(attrs))
            diff = sorted(k for k in wanted if k in existing and existing[k] != wanted[k])
            if diff:
                details = ", ".join(f"{k}: stored {existing[k]!r} != {wanted[k]!r}" for k in diff)
                raise ValueError(
                    f"feature group {path!r} was made with a different configuration ({details}); "
                    "choose another extractor id, or delete the group to re-extract"
                )
            missing = {k: v for k, v in wanted.items() if k not in existing}
            if missing:
                group.attrs.update(missing)
        return FeatureGroup(group, dataset, extractor_id)


    # the name ``group`` had before (it returns a FeatureGroup, not an extractor): deprecated,
    # kept so every caller of it still works
    extractor = group

    def list_extractors(self) -> list[tuple[str, str]]:
        """``(dataset, extractor_id)`` pairs present in the store."""
        try:
            root = _open_group(self._store, FEATURES_ROOT, "r")
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
            return []
        out = []
        for ds_name, ds_group in sorted(root.groups()):
            for ex_name, _ in sorted(ds_group.groups()):
                out.append((ds_name, ex_name))
        return out

    def select_group(
        self,
        dataset: str | None = None,
        extractor_id: str | None = None,
        *,
        hint: str = "pass --dataset and --extractor to choose one",
    ) -> FeatureGroup:
        """The one existing group matching ``dataset`` and ``extractor_id`` (None matches any).

        The only place a reader picks a (dataset, extractor) group. No match, or more than
        one, is a one-line ``ValueError`` naming the matches (or, when none match, every
        group in the store) and ending with ``hint``, the caller's way to choose.
        """
        every = self.list_extractors()
        pairs = [p for p in every
                 if (dataset is None or p[0] == dataset) and (extractor_id is None or p[1] == extractor_id)]
        if len(pairs) != 1:
            wanted = ", ".join(f"{k}={v!r}" for k, v in (("dataset", dataset), ("extractor", extractor_id))
                               if v is not None)
            found = f"{pairs}" if pairs else f"none (the store holds {every or 'no groups'})"
            raise ValueError(
                f"feature store {self.root!s} holds {len(pairs)} (dataset, extractor) groups"
                f"{' for ' + wanted if wanted else ''}: {found}; {hint}"
            )
        return self.group(*pairs[0], create=False)

    def consolidate(self, dataset: str, extractor_id: str, *, force: bool = False) -> bool:
        """Write the metadata snapshot of one group (module docstring), the last step of a
        writing run. A group that has one already keeps it unless ``force`` (a snapshot is
        dropped by every write, so one that exists is as new as the data). True when written.
        """
        group = self.group(dataset, extractor_id, create=False)
        if group.has_snapshot and not force:
            return False
        group.consolidate()
        return True


class FeatureGroup:
    """The videos of one dataset and extractor. Build with ``FeatureStore.group``.

    Reads use the group's metadata snapshot when it has one (module docstring); writes always
    go to the videos' own metadata, and the first write drops the snapshot.
    """

    def __init__(self, group: zarr.Group, dataset: str, extractor_id: str) -> None:
        self._set_group(group)
        self.dataset = dataset
        self.extractor_id = extractor_id
        self.changed = False  # True once this object wrote to the group

    def _set_group(self, group: zarr.Group) -> None:
        if group.metadata.consolidated_metadata is not None:
            self._snapshot: zarr.Group | None = group
            self._group = _without_snapshot(group)  # the live view: writes and checks
        else:
            self._snapshot = None
            self._group = group

    @property
    def has_snapshot(self) -> bool:
        """True while this object reads through a metadata snapshot (module docstring)."""
        return self._snapshot is not None

    def _snapshot_entry(self, video_id: str) -> Any:
        """The snapshot's metadata of ``video_id`` when it records it committed, else None."""
        if self._snapshot is None:
            return None
        consolidated = self._snapshot.metadata.consolidated_metadata
        meta = consolidated.metadata.get(video_id) if consolidated is not None else None
        if meta is None or getattr(meta, "node_type", None) != "group":
            return None
        return meta if COMMIT_ATTR in meta.attributes else None

    def _drop_snapshot(self) -> None:
        """Before this object's first change: rewrite the group's metadata without the snapshot."""
        self.changed = True
        if self._snapshot is None:
            return
        self._group.update_attributes({})  # the live view's metadata carries no snapshot
        self._snapshot = None

    def ensure_snapshot(self) -> bool:
        """:meth:`consolidate` unless this object still reads through a snapshot (one that no
        write of its own has dropped); the end of a writing run. True when one was written."""
        if self._snapshot is not None:
            return False
        self.consolidate()
        return True

    def consolidate(self) -> None:
        """Copy every member's metadata into the group's ``zarr.json`` (the snapshot) and read
        through it from now on. Costs one read per member (on S3: about five requests a video);
        run it once, after a run's writes (:meth:`FeatureStore.consolidate`).
        """
        with warnings.catch_warnings():
            # zarr warns on every consolidation that consolidated metadata is not (yet) in the
            # v3 spec; the snapshot is this store's own cache, read back only by zarr-python
            warnings.filterwarnings("ignore", message=r"Consolidated metadata is currently not")
            zarr.consolidate_metadata(self._group.store, path=self._group.path, zarr_format=3)
        self._set_group(_open_group(self._group.store, self._group.path, "r+"))

    def __repr__(self) -> str:
        return f"FeatureGroup({self._group.path!r})"

    @property
    def attrs(self) -> dict[str, Any]:
        """The extractor group's attributes (provenance, normalisation)."""
        return dict(self._group.attrs.asdict())

    # -- writing --------------------------------------------------------------------------

    def _local_dir(self) -> Path | None:
        """The extractor group's folder on a local store (None for remote stores)."""
        store = self._group.store
        if isinstance(store, zarr.storage.LocalStore):
            return Path(store.root) / self._group.path
        return None

    def lock_path(self, video_id: str) -> Path | None:
        """The writer lock file of ``video_id`` (None where the store has no local folder)."""
        safe_component(video_id, what="video id")
        folder = self._local_dir()
        return None if folder is None else folder / f".{video_id}.writing"

    @contextlib.contextmanager
    def writer_lock(self, video_id: str, *, timeout: float | None = 600.0) -> Iterator[None]:
        """Exclusive writer of ``video_id`` while the block runs (see the module docstring).

        Take it around the decode + extract + :meth:`write_video` of a video and check
        :meth:`is_complete` inside it, so a second process skips instead of redoing the work.
        """
        path = self.lock_path(video_id)
        if path is None:
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path, timeout=timeout):
            yield

    def check_writable(self) -> None:
        """Raise the ``OSError`` (``EACCES``, ``EROFS``, ``ENOSPC``...) a write here would raise.

        Creates and removes a small probe file in the group's folder, so a read-only store
        location is one error before any video is decoded rather than one per video. A
        remote store is not probed.
        """
        folder = self._local_dir()
        if folder is None:
            return
        # named like an atomic_open temporary, so `mktn store gc` removes one a kill left behind
        probe = folder / f".write-probe.{os.getpid()}_{threading.get_ident()}.tmp"
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                probe.unlink()

    def _uncommit(self, video_id: str) -> None:
        """Rewrite the video's metadata without its commit marker (one key, before any delete)."""
        try:
            vgroup = self._group[video_id]
        except Exception:  # unreadable metadata already reads as incomplete
            return
        if not isinstance(vgroup, zarr.Group):
            return
        attrs = dict(vgroup.attrs.asdict())
        if COMMIT_ATTR in attrs:
            del attrs[COMMIT_ATTR]
            vgroup.attrs.put(attrs)

    def write_video(
        self,
        video_id: str,
        frames: np.ndarray,
        patches: np.ndarray,
        clip_times: np.ndarray,
        attrs: Mapping[str, Any] | None = None,
        *,
        dtype: str = "float16",
        overwrite: bool = False,
        lock: bool = True,
    ) -> None:
        """Write one video's features; the commit marker is written last.

        ``frames`` [T, D], ``patches`` [T, P, D], ``clip_times`` [T, 2] seconds.
        A committed video is replaced only with ``overwrite=True``
        (``FileExistsError`` otherwise); an uncommitted leftover of a crashed write
        is always replaced. Runs under the video's :meth:`writer_lock`; ``lock=False``
        when the caller already holds it on this video's behalf (taken in another thread
        of this process: the extraction's reader thread takes it before decoding).
        """
        safe_component(video_id, what="video id")
        frames = np.asarray(frames)
        patches = np.asarray(patches)
        clip_times = np.asarray(clip_times, dtype=np.float64)
        if dtype not in _DTYPES:
            raise ValueError(f"feature dtype {dtype!r} is not supported; use one of {_DTYPES}")
        if frames.ndim != 2 or frames.shape[0] == 0:
            raise ValueError(
                f"video {video_id!r}: frames must be [T, D] with T >= 1, got {frames.shape}"
            )
        t, d = frames.shape
        if patches.ndim != 3 or patches.shape[0] != t or patches.shape[2] != d:
            raise ValueError(
                f"video {video_id!r}: patches must be [T={t}, P, D={d}], got {patches.shape}"
            )
        if clip_times.shape != (t, 2):
            raise ValueError(
                f"video {video_id!r}: clip_times must be [T={t}, 2], got {clip_times.shape}"
            )
        if not np.all(np.isfinite(frames)) or not np.all(np.isfinite(patches)):
            raise ValueError(
                f"video {video_id!r}: features contain NaN or inf; refusing to store them"
            )
        if dtype == "float16":
            big = max(float(np.abs(frames).max()), float(np.abs(patches).max()))
            if big > 65000.0:
                raise ValueError(
                    f"video {video_id!r}: feature magnitude {big:.3g} overflows float16; "
                    "store with dtype='float32'"
                )

        if not lock:
            self._write_locked(video_id, frames, patches, clip_times, attrs, dtype, overwrite)
            return
        with self.writer_lock(video_id):
            self._write_locked(video_id, frames, patches, clip_times, attrs, dtype, overwrite)

    def _write_locked(
        self,
        video_id: str,
        frames: np.ndarray,
        patches: np.ndarray,
        clip_times: np.ndarray,
        attrs: Mapping[str, Any] | None,
        dtype: str,
        overwrite: bool,
    ) -> None:
        t, d = frames.shape
        self._drop_snapshot()
        if video_id in self._group:
            if self.is_complete(video_id) and not overwrite:
                raise FileExistsError(
                    f"video {video_id!r} is already complete in {self!r}; pass overwrite=True to replace it"
                )
            # Un-commit first: deleting the group removes its arrays before its metadata,
            # and a kill in between would leave the marker on a video with no arrays.
            self._uncommit(video_id)
            del self._group[video_id]

        p = patches.shape[1]
        # overwrite: also clears what a killed deletion left without the group's zarr.json
        vgroup = self._group.create_group(
            video_id, attributes={"video_id": video_id}, overwrite=True
        )
        compressor = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")
        arr = vgroup.create_array(
            "frames",
            shape=(t, d),
            chunks=(min(t, 1024), d),
            dtype=dtype,
            compressors=compressor,
            dimension_names=FRAME_DIMS,
        )
        arr[...] = frames.astype(dtype)
        arr = vgroup.create_array(
            "patches",
            shape=(t, p, d),
            chunks=(min(t, 128), p, d),
            dtype=dtype,
            compressors=compressor,
            dimension_names=PATCH_DIMS,
        )
        arr[...] = patches.astype(dtype)
        arr = vgroup.create_array(
            "clip_times",
            shape=(t, 2),
            chunks=(t, 2),
            dtype="float64",
            compressors=compressor,
            dimension_names=TIME_DIMS,
        )
        arr[...] = clip_times
        meta = _jsonable(dict(attrs or {}))
        meta.update(
            {
                "video_id": video_id,
                "num_clips": t,
                "num_patches": p,
                "feature_dim": d,
                "dtype": dtype,
                "dimension_names": {
                    "frames": list(FRAME_DIMS),
                    "patches": list(PATCH_DIMS),
                    "clip_times": list(TIME_DIMS),
                },
                "code_version": meta.get("code_version", code_version()),
            }
        )
        vgroup.attrs.update(meta)
        # The commit marker: written last, in the video's own group.
        vgroup.attrs.update({COMMIT_ATTR: {"time": time.time(), "num_clips": t}})

    def update_video_attrs(self, video_id: str, attrs: Mapping[str, Any]) -> None:
        """Merge ``attrs`` into a committed video's attributes (e.g. a refreshed source mtime).

        The commit marker cannot be changed this way. A crash during the (single-key)
        metadata write leaves the video unreadable, hence re-extracted, never half-valid.
        """
        self.video_attrs(video_id)  # raises IncompleteVideoError if not committed
        if COMMIT_ATTR in attrs:
            raise ValueError(f"the {COMMIT_ATTR!r} attribute is written only by write_video")
        self._drop_snapshot()
        vgroup = self._group[video_id]
        assert isinstance(vgroup, zarr.Group)
        vgroup.attrs.update(_jsonable(dict(attrs)))

    # -- reading --------------------------------------------------------------------------

    def _live_video_attrs(self, video_id: str) -> dict[str, Any] | None:
        """The video's attributes from its own metadata (never the snapshot); None if unreadable."""
        try:
            vgroup = self._group[video_id]
        except (KeyError, FileNotFoundError):
            return None
        except Exception as exc:  # corrupt metadata from a crashed write
            log.debug("video %r metadata unreadable: %s", video_id, exc)
            return None
        if not isinstance(vgroup, zarr.Group):
            return None
        return dict(vgroup.attrs.asdict())

    def _video_attrs(self, video_id: str) -> dict[str, Any] | None:
        meta = self._snapshot_entry(video_id)
        if meta is not None:
            return dict(meta.attributes)
        return self._live_video_attrs(video_id)

    def is_complete(self, video_id: str) -> bool:
        """True when ``video_id`` has committed features."""
        safe_component(video_id, what="video id")
        attrs = self._video_attrs(video_id)
        return attrs is not None and COMMIT_ATTR in attrs

    def video_attrs(self, video_id: str) -> dict[str, Any]:
        """The attributes of a committed video (``IncompleteVideoError`` if not committed)."""
        safe_component(video_id, what="video id")
        attrs = self._video_attrs(video_id)
        if attrs is None or COMMIT_ATTR not in attrs:
            raise IncompleteVideoError(
                f"video {video_id!r} has no complete features in {self!r}; "
                "run `mktn extract` again to (re)extract it"
            )
        return attrs

    def read_video(self, video_id: str, *, dtype: str | None = None) -> VideoFeatures:
        """The committed features of ``video_id`` as numpy arrays (stored dtype unless ``dtype``).

        Through the snapshot when it records the video; if the video's own commit marker read
        after the arrays is not the snapshot's (rewritten since), it is read again without it.
        """
        safe_component(video_id, what="video id")
        if self._snapshot_entry(video_id) is not None:
            try:
                return self._read_video(video_id, dtype, snapshot=True)
            except IncompleteVideoError:
                log.debug("video %r changed since the metadata snapshot; reading it again", video_id)
        return self._read_video(video_id, dtype, snapshot=False)

    def _read_video(self, video_id: str, dtype: str | None, *, snapshot: bool) -> VideoFeatures:
        if snapshot:
            assert self._snapshot is not None
            attrs = dict(self._snapshot_entry(video_id).attributes)
            source = self._snapshot
        else:
            attrs = self._live_video_attrs(video_id) or {}
            if COMMIT_ATTR not in attrs:
                raise IncompleteVideoError(
                    f"video {video_id!r} has no complete features in {self!r}; "
                    "run `mktn extract` again to (re)extract it"
                )
            source = self._group
        try:
            vgroup = source[video_id]
            assert isinstance(vgroup, zarr.Group)
            frames = np.asarray(_array(vgroup, "frames")[...])
            patches = np.asarray(_array(vgroup, "patches")[...])
            times = np.asarray(_array(vgroup, "clip_times")[...])
        except (KeyError, FileNotFoundError, OSError, ValueError) as exc:
            raise IncompleteVideoError(
                f"video {video_id!r} in {self!r} lost an array while being read ({exc!r}): "
                "it is being rewritten or a write crashed; run `mktn extract` again"
            ) from None
        again = self._live_video_attrs(video_id)
        if again is None or again.get(COMMIT_ATTR) != attrs[COMMIT_ATTR]:
            raise IncompleteVideoError(
                f"video {video_id!r} in {self!r} was rewritten while being read; read it again"
            )
        if dtype is not None:
            frames, patches = frames.astype(dtype), patches.astype(dtype)
        return VideoFeatures(frames=frames, patches=patches, clip_times=times, attrs=attrs)

    def _video_groups(self) -> dict[str, dict[str, Any]]:
        """``{name: attributes}`` of every member group (video), committed or not, sorted.

        Without a snapshot: zarr's listing of the group, every member's metadata read (at once).
        With one: one listing of the group's names (membership is never taken from the
        snapshot), the snapshot's attributes of the committed videos it records, and the own
        metadata of the rest (written since the snapshot, or recorded uncommitted).
        """
        if self._snapshot is None:
            return dict(sorted((n, dict(g.attrs.asdict())) for n, g in self._group.groups()))
        out: dict[str, dict[str, Any]] = {}
        unknown: list[str] = []
        for name in _list_dir(self._group.store, self._group.path):
            if name == "zarr.json" or name.startswith(".") or "/" in name:
                continue
            meta = self._snapshot_entry(name)
            if meta is not None:
                out[name] = dict(meta.attributes)
            else:
                unknown.append(name)
        if unknown:
            from zarr.core.sync import sync

            async def fetch() -> list[Any]:
                ag = self._group._async_group
                return await asyncio.gather(*(ag.getitem(n) for n in unknown),
                                            return_exceptions=True)

            for name, node in zip(unknown, sync(fetch()), strict=True):
                if isinstance(node, zarr.AsyncGroup):
                    out[name] = dict(node.attrs)
        return dict(sorted(out.items()))

    def list_videos(self, complete_only: bool = True) -> list[str]:
        """Sorted video ids; only committed ones unless ``complete_only=False``."""
        groups = self._video_groups()
        return [n for n, attrs in groups.items() if not complete_only or COMMIT_ATTR in attrs]

    def committed_attrs(self) -> dict[str, dict[str, Any]]:
        """``{video_id: attributes}`` of every committed video, read in one pass over the group.

        With a snapshot: one read of the group and one listing, whatever the number of videos;
        without: one listing of the group's members (their metadata read concurrently) instead
        of a metadata read per video: what a cached rerun checks 200 videos against.
        """
        return {n: a for n, a in self._video_groups().items() if COMMIT_ATTR in a}

    def __iter__(self) -> Iterator[str]:
        return iter(self.list_videos())

    def __len__(self) -> int:
        return len(self.list_videos())

    # -- normalisation --------------------------------------------------------------------

    def compute_normalization(self, video_ids: list[str] | None = None) -> Normalization:
        """:meth:`Normalization.fit` over ``video_ids`` (default: every committed video), stored
        as the group attribute ``"normalization"``.

        These statistics describe the store (``mktn extract`` prints them, other readers may
        use them); the model does not train with them: it fits its own over the train
        split's videos (``model.data.fit_norm_stats``), because a store knows no splits.
        """
        ids = self.list_videos() if video_ids is None else list(video_ids)
        if not ids:
            raise ValueError(f"{self!r} has no complete videos to compute normalisation over")

        def arrays() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for vid in ids:
                feats = self.read_video(vid)
                yield feats.frames, feats.patches

        norm = Normalization.fit(arrays())
        # the live view's metadata has no snapshot: this write drops it (module docstring)
        self.changed, self._snapshot = True, None
        self._group.attrs.update({NORMALIZATION_ATTR: norm.to_attrs()})
        return norm

    def normalization(self) -> Normalization | None:
        """The stored normalisation statistics, or None before ``compute_normalization``."""
        d = self._group.attrs.get(NORMALIZATION_ATTR)
        if not isinstance(d, Mapping):
            return None
        return Normalization.from_attrs(d)
