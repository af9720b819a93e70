"""Feature extraction fanned out over Dask workers, all writing to one store.

    from distributed import Client
    from pipeline.distributed_extract import extract_on_dask
    summary = extract_on_dask(paths, "s3://bucket/features.zarr", config, client=Client("tcp://sched:8786"))

Each video is one Dask task that calls :func:`pipeline.extract.extract_one` on a
worker: decode, run the backbone, write the video's group and, last, its commit
marker. Videos are independent keys of the store (``storage.features`` allows
concurrent writers of different videos), so workers on several machines write
to one store with no coordination, provided the store root is a location every
worker reaches: a path on a shared file system (``file:///mnt/nfs/features.zarr``)
or object storage (``s3://...`` with the ``mktn[s3]`` extra, ``gs://...`` with gcsfs). The
storage options of a URL root (``storage.remote``) are resolved here and sent with every task.
A ``memory://`` store lives in one process and is refused.

What the client does before fanning out: validate every video id (duplicates
and unsafe names fail there, naming both files), and create the extractor
group with its provenance once, so workers never race to create it. After every task:
the normalisation statistics, then the group's metadata snapshot (``storage.features``),
so a rerun checks its videos against one read.

A video that fails (corrupt file, a worker that died twice) fails alone: its
:class:`~pipeline.extract.VideoResult` says why, the others go on. A *transient* failure
(an I/O error worth a second try, by the policy the Prefect flow's retries also follow:
``pipeline.scaleout.reason_is_transient``/``is_transient``) is resubmitted up to
``pipeline.scaleout.RETRIES`` times after the shared backoff (the task waits on its worker
before it starts); a deterministic one is not.
:func:`verify_store` then checks the store is complete and consistent: every
video reported done is committed, has the clip count it reported, arrays agree
in shape with each other and with the extractor's dimensions, and no
uncommitted leftovers remain.

This is the Prefect-free path (a script, a notebook, ``mktn extract --dask``); the other is
the ``extract-features`` flow on Prefect's ``DaskTaskRunner`` over the same scheduler
(``flows/runners.py``). Both read the ``--dask`` address and choose what to retry in one place,
``pipeline/scaleout.py``, which also says why both exist. The videos must be readable at the
same path on every worker (a shared mount).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pipeline.extract import (
    ExtractionConfig,
    ExtractionSummary,
    VideoResult,
    assign_video_ids,
    extract_one,
)
from pipeline.scaleout import (
    LOCAL,
    RETRIES,
    is_transient,
    parse_dask_address,
    reason_is_transient,
    retry_delay,
)
from storage.features import FeatureGroup, FeatureStore
from storage.keys import COMMIT_ATTR
from storage.remote import is_remote_root, resolve_storage_options

log = logging.getLogger(__name__)


def _check_store_root(root: str | os.PathLike[str]) -> str:
    text = os.fspath(root)
    if text.startswith("memory://"):
        raise ValueError(
            f"feature store {text!r} is in-memory and private to one process; Dask workers need "
            "a shared location: a file:// path on a shared file system or an object-store URL"
        )
    if "://" not in text:
        # A relative path would resolve against each worker's own working directory.
        text = Path(text).resolve().as_uri()
    return text


@contextlib.contextmanager
def dask_client(address: str, *, workers: int = 2) -> Iterator[Any]:
    """A ``distributed.Client``: ``"local"`` starts a ``LocalCluster`` of ``workers`` processes with
    one thread each (closed on exit); anything else is a scheduler address (``tcp://host:8786``
    or ``host:8786``) to connect to."""
    from distributed import Client, LocalCluster

    target = parse_dask_address(address)  # the same reading as the flows' DaskTaskRunner
    if target == LOCAL:
        if workers < 1:
            raise ValueError(f"--dask-workers must be >= 1, got {workers}")
        with LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(target, timeout="30s")
    except OSError as exc:
        raise ValueError(
            f"cannot reach the Dask scheduler at {target}: {exc}; start one with `dask scheduler` "
            "(or the compose profile `dask`), or use --dask local"
        ) from exc
    with client:
        yield client


def _extract_task(
    path: str, store_root: str, config: ExtractionConfig, video_id: str, force: bool, delay: float = 0.0,
    storage_options: dict[str, Any] | None = None,
) -> VideoResult:
    """Runs on a worker: one video into the shared store (never raises for a bad video).
    ``delay``: seconds to wait first (a retry's backoff); ``storage_options``: the client's
    options of a URL root (None: the worker's own ``MKTN_STORAGE_OPTIONS``)."""
    if delay > 0:
        time.sleep(delay)
    store = FeatureStore(store_root, storage_options=storage_options)
    return extract_one(path, store, config, video_id=video_id, force=force)


@dataclass
class StoreCheck:
    """What :func:`verify_store` found; ``ok`` when ``problems`` is empty."""

    complete: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _plan(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[tuple[str, str]], list[VideoResult]]:
    """``assign_video_ids`` on absolute paths: workers on other machines see the same names."""
    return assign_video_ids(os.path.abspath(os.fspath(p)) for p in paths)


def extract_on_dask(
    paths: Iterable[str | os.PathLike[str]],
    store_root: str | os.PathLike[str],
    config: ExtractionConfig,
    *,
    client: Any,
    force: bool = False,
    threads_per_worker: int = 1,
    retries: int = 1,
    normalize: bool = True,
    progress: bool = True,
    consolidate: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> ExtractionSummary:
    """Extract ``paths`` into ``store_root`` with one task per video on ``client``'s workers.

    ``client``: a ``distributed.Client``. ``threads_per_worker``: torch CPU threads each
    task may use when ``config.threads`` is unset (one per Dask worker thread by default,
    so N single-threaded workers on an N-core machine never oversubscribe it).
    ``retries``: Dask's resubmissions of a task whose worker died. Apart from those, a video
    whose failure is transient (``pipeline.scaleout``: the policy of the flows' retries too) is
    resubmitted up to ``pipeline.scaleout.RETRIES`` times after ``retry_delay``; a bad *video*
    is not retried: it returns ``failed``. ``normalize``: when any video was extracted,
    recompute the group's normalisation statistics here, once, after every worker is done
    (``FeatureGroup.compute_normalization``). ``consolidate``: end with the group's metadata
    snapshot (``FeatureStore.consolidate``; the caller's job when it writes more after).
    ``storage_options``: the fsspec options of a URL root, for this process and every task
    (None: this process's ``MKTN_STORAGE_OPTIONS``, resolved here and sent with the tasks).
    Returns the per-video summary, in input order.
    """
    t0 = time.perf_counter()
    root = _check_store_root(store_root)
    if config.threads is None:
        config = replace(config, threads=max(1, threads_per_worker))
    extractor_id = config.resolved_extractor_id()
    options = resolve_storage_options(storage_options) if is_remote_root(root) else None
    # Create (or check) the extractor group once, here, before any worker writes.
    FeatureStore(root, storage_options=options).group(
        config.dataset, extractor_id, attrs=config.feature_config()
    )

    jobs, bad = _plan(paths)
    # A fresh key per run: Dask answers a key it still holds with the old result instead of
    # running the task again (a rerun, or another store, would silently do nothing).
    run_id = uuid.uuid4().hex[:8]

    def submit(vid: str, path: str, attempt: int = 0, delay: float = 0.0) -> Any:
        return client.submit(
            _extract_task, path, root, config, vid, force, delay, options,
            key=f"extract-{run_id}-{vid}" + (f"-retry{attempt}" if attempt else ""),
            pure=False, retries=retries,
        )

    futures = {submit(vid, path): (vid, path) for vid, path in jobs}
    from distributed import as_completed

    results: dict[str, VideoResult] = {}
    attempts: dict[str, int] = {}
    bar = tqdm(total=len(futures), desc="videos (dask)", unit="video", disable=not progress)
    try:
        pending = as_completed(list(futures))
        for fut in pending:
            vid, path = futures.pop(fut)
            try:
                res = fut.result()
                transient = res.status == "failed" and reason_is_transient(res.reason or "")
            except Exception as exc:  # the worker died, or the task could not run at all
                res = VideoResult(vid, path, "failed", f"{type(exc).__name__}: {exc}")
                transient = is_transient(exc)
            done_tries = attempts.get(vid, 0)
            if transient and done_tries < RETRIES:
                attempts[vid] = done_tries + 1
                delay = retry_delay(done_tries)
                log.warning("video %s: transient failure (%s); retry %d/%d in %.0f s",
                            vid, res.reason, done_tries + 1, RETRIES, delay)
                again = submit(vid, path, done_tries + 1, delay)
                futures[again] = (vid, path)
                pending.add(again)
                continue
            if res.status == "failed":
                log.warning("video %s failed: %s", vid, res.reason)
            results[vid] = res
            bar.update(1)
    finally:
        bar.close()
    if normalize and any(r.status == "done" for r in results.values()):
        store = FeatureStore(root, storage_options=options)
        store.group(config.dataset, extractor_id).compute_normalization()
    if consolidate:  # the last step, after every worker: the metadata snapshot (storage.features)
        FeatureStore(root, storage_options=options).consolidate(config.dataset, extractor_id)
    summary = ExtractionSummary(
        results=bad + [results[vid] for vid, _ in jobs],
        extractor_id=extractor_id,
        wall_seconds=time.perf_counter() - t0,
    )
    log.info("%s", summary.format())
    return summary


def verify_store(
    store_root: str | os.PathLike[str] | FeatureStore,
    dataset: str,
    extractor_id: str,
    *,
    expected: Sequence[VideoResult] | None = None,
) -> StoreCheck:
    """Check one extractor group: complete videos are readable and consistent.

    Every committed video: frames [T, D], patches [T, P, D], clip_times [T, 2] with
    the group's ``feature_dim``/``num_patches`` and the ``num_clips`` of its commit
    marker, clip times increasing. ``expected`` (a run's results): every ``done`` or
    ``skipped`` video is committed with the clip count reported. Uncommitted groups
    (a crashed write that no rerun replaced) are reported as problems.
    """
    store = store_root if isinstance(store_root, FeatureStore) else FeatureStore(store_root)
    group: FeatureGroup = store.group(dataset, extractor_id, create=False)
    check = StoreCheck()
    gattrs = group.attrs
    dim, num_patches = gattrs.get("feature_dim"), gattrs.get("num_patches")
    committed = set(group.list_videos(complete_only=True))
    present = set(group.list_videos(complete_only=False))
    for vid in sorted(present - committed):
        check.problems.append(f"{vid}: uncommitted group (crashed write); rerun the extraction")
    for vid in sorted(committed):
        try:
            v = group.read_video(vid)
        except Exception as exc:
            check.problems.append(f"{vid}: committed but unreadable: {exc}")
            continue
        t = v.frames.shape[0]
        shape_ok = (
            v.frames.ndim == 2
            and v.patches.shape[0] == t
            and v.clip_times.shape == (t, 2)
            and v.patches.shape[2] == v.frames.shape[1]
            and (dim is None or v.frames.shape[1] == dim)
            and (num_patches is None or v.patches.shape[1] == num_patches)
        )
        if not shape_ok:
            check.problems.append(
                f"{vid}: inconsistent shapes frames {v.frames.shape}, patches {v.patches.shape}, "
                f"clip_times {v.clip_times.shape} (group feature_dim={dim}, num_patches={num_patches})"
            )
            continue
        marker = v.attrs.get(COMMIT_ATTR, {})
        if marker.get("num_clips") != t:
            check.problems.append(f"{vid}: commit marker says {marker.get('num_clips')} clips, arrays hold {t}")
            continue
        starts = v.clip_times[:, 0]
        if t > 1 and not (starts[1:] > starts[:-1]).all():
            check.problems.append(f"{vid}: clip start times are not increasing")
            continue
        check.complete.append(vid)
    for res in expected or ():
        if res.status not in ("done", "skipped"):
            continue
        if res.video_id not in committed:
            check.problems.append(f"{res.video_id}: reported {res.status} but not committed in the store")
        elif res.status == "done" and res.num_clips:
            n = group.video_attrs(res.video_id).get("num_clips")
            if n != res.num_clips:
                check.problems.append(f"{res.video_id}: reported {res.num_clips} clips, store holds {n}")
    return check
