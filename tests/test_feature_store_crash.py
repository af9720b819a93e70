"""Issue 13, items 4-5: a killed rewrite never leaves a video that reads as complete but is
not, and two writers of one video are serialised by its lock file.

The kill is simulated by raising from the store's own file operations (zarr's ``set`` and
the ``unlink``/``rmdir`` of a group deletion) at step N of a rewrite, for every N until the
rewrite finishes; after each, a fresh reader must see the old video whole, the new video
whole, or no complete video at all, and a rerun must succeed.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr.storage

from storage.features import FeatureStore, IncompleteVideoError, VideoLockedError, file_lock


class _Killed(Exception):
    pass


def _video(t: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    starts = np.arange(t, dtype=np.float64)
    return (
        rng.normal(size=(t, 8)).astype(np.float32),
        rng.normal(size=(t, 4, 8)).astype(np.float32),
        np.stack([starts, starts + 1.0], axis=1),
    )


class _KillAt:
    """Raise ``_Killed`` at the ``n``-th store write or file deletion from now on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
        self.n, self.count, self.lock = n, 0, threading.Lock()
        real_set, real_unlink, real_rmdir = zarr.storage.LocalStore.set, os.unlink, os.rmdir

        def step() -> None:
            with self.lock:
                self.count += 1
                if self.count == self.n:
                    raise _Killed(f"killed at step {self.n}")

        async def kset(store: object, key: str, value: object, *a: object, **k: object) -> None:
            step()
            await real_set(store, key, value, *a, **k)  # type: ignore[arg-type]

        def kunlink(path: object, *a: object, **k: object) -> None:
            if not str(path).endswith(".writing"):  # the lock file itself is not a data step
                step()
            real_unlink(path, *a, **k)  # type: ignore[arg-type]

        def krmdir(path: object, *a: object, **k: object) -> None:
            step()
            real_rmdir(path, *a, **k)  # type: ignore[arg-type]

        monkeypatch.setattr(zarr.storage.LocalStore, "set", kset)
        monkeypatch.setattr(os, "unlink", kunlink)
        monkeypatch.setattr(os, "rmdir", krmdir)


def test_a_rewrite_killed_at_any_step_never_reads_complete_but_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = _video(5, seed=1), _video(7, seed=2)
    states: set[str] = set()
    for n in range(1, 200):
        root = tmp_path / f"s{n}.zarr"
        group = FeatureStore(root).extractor("d", "e", attrs={"backbone": "x"})
        group.write_video("v", *old, {"gen": "old"})
        with monkeypatch.context() as mp:
            _KillAt(mp, n)
            try:
                group.write_video("v", *new, {"gen": "new"}, overwrite=True)
                finished = True
            except _Killed:
                finished = False
        reader = FeatureStore(root).extractor("d", "e", create=False)
        if reader.is_complete("v"):
            got = reader.read_video("v", dtype="float32")  # complete => every array readable
            want = old if got.attrs["gen"] == "old" else new
            np.testing.assert_allclose(got.frames, want[0], atol=1e-2)
            np.testing.assert_allclose(got.patches, want[1], atol=1e-2)
            np.testing.assert_array_equal(got.clip_times, want[2])
            states.add(got.attrs["gen"])
        else:
            assert reader.list_videos() == []
            with pytest.raises(IncompleteVideoError):
                reader.read_video("v")
            states.add("incomplete")
        assert not list(Path(root).rglob("*.writing"))  # the lock went with the writer
        # the next run finishes the job
        reader.write_video("v", *new, {"gen": "new"}, overwrite=True)
        assert reader.read_video("v").attrs["gen"] == "new"
        if finished:
            break
    else:
        pytest.fail("the rewrite never finished")
    assert states == {"old", "incomplete", "new"}, states
    assert n > 10  # every step of the rewrite was tried


def test_reader_sees_incomplete_when_an_array_vanishes(tmp_path: Path) -> None:
    group = FeatureStore(tmp_path / "s.zarr").extractor("d", "e", attrs={"backbone": "x"})
    group.write_video("v", *_video(3, seed=0))
    import shutil

    shutil.rmtree(tmp_path / "s.zarr" / "features" / "d" / "e" / "v" / "patches")
    with pytest.raises(IncompleteVideoError, match="lost an array"):
        group.read_video("v")


def test_second_writer_of_a_video_waits_then_skips(tmp_path: Path) -> None:
    root = tmp_path / "s.zarr"
    group = FeatureStore(root).extractor("d", "e", attrs={"backbone": "x"})
    lock = group.lock_path("v")
    assert lock is not None and lock.name == ".v.writing"
    events: list[str] = []

    def first() -> None:
        with group.writer_lock("v"):
            events.append("first-in")
            time.sleep(0.5)
            group.write_video("v", *_video(3, seed=0), {"who": "first"})  # re-entrant
            events.append("first-out")

    def second() -> None:
        time.sleep(0.1)
        g2 = FeatureStore(root).extractor("d", "e", create=False)
        with g2.writer_lock("v"):
            events.append("second-in")
            if g2.is_complete("v"):
                events.append("second-skips")
                return
            g2.write_video("v", *_video(3, seed=1), {"who": "second"})

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert events == ["first-in", "first-out", "second-in", "second-skips"]
    assert group.read_video("v").attrs["who"] == "first" and not lock.exists()


def test_stale_and_live_locks(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    path = tmp_path / ".v.writing"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    path.write_text(f"{dead.stdout.strip()}@{socket.gethostname()}", encoding="utf-8")
    with file_lock(path, timeout=1.0):  # a dead writer's lock is taken over at once
        assert path.read_text(encoding="utf-8").startswith(f"{os.getpid()}@")
    assert not path.exists()
    path.write_text(f"1@{socket.gethostname()}", encoding="utf-8")  # pid 1: alive
    with pytest.raises(VideoLockedError, match="held by another writer"):
        with file_lock(path, timeout=0.3):
            pass
    assert path.exists()  # a live writer's lock is never removed
