"""Leftovers of killed or disk-full writes, found and removed by ``mktn store check|gc``.

What counts as a leftover (all on local paths):

* ``zarr.<uuid>.partial``: zarr's temporary file of an interrupted chunk/metadata write
  (every later listing of its group prints a ``ZarrUserWarning``);
* ``.<name>.<random>.tmp``: :func:`storage.atomic.atomic_open`'s temporary file
  (e.g. ``.last.pt.k3j2.tmp`` after a kill during a checkpoint write);
* ``.<video_id>.writing``: a feature-store writer lock whose process is gone;
* an uncommitted video group of a feature store (no commit marker: a killed first write).

Temporary files younger than ``min_age`` seconds may belong to a writer that is still
running and are reported but never removed; a lock of a live process, or an uncommitted
video whose lock is held, is left alone too.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from storage.features import COMMIT_ATTR, FEATURES_ROOT, _lock_is_stale

_PARTIAL = re.compile(r"^zarr\.[0-9a-f]{32}\.partial$")
_ATOMIC_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")


@dataclass(frozen=True)
class Leftover:
    path: str
    kind: str  # "partial", "tmp", "stale-lock", "uncommitted-video"
    age_s: float
    removable: bool
    why: str = ""


def _uncommitted_videos(root: Path) -> list[Path]:
    out: list[Path] = []
    features = root / FEATURES_ROOT
    if not features.is_dir():
        return out
    for meta in sorted(features.glob("*/*/*/zarr.json")):
        try:
            doc = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            out.append(meta.parent)  # unreadable metadata reads as incomplete
            continue
        if doc.get("node_type") == "group" and COMMIT_ATTR not in doc.get("attributes", {}):
            out.append(meta.parent)
    # a video folder whose zarr.json is gone (a killed deletion) is uncommitted too
    for folder in sorted(features.glob("*/*/*")):
        if folder.is_dir() and not (folder / "zarr.json").exists() and folder not in out:
            out.append(folder)
    return out


def find_leftovers(root: str | Path, *, min_age: float = 600.0) -> list[Leftover]:
    """Every leftover under ``root`` (a store or a runs folder), oldest first."""
    base = Path(root)
    if not base.exists():
        raise FileNotFoundError(f"{base} does not exist")
    now = time.time()
    found: list[Leftover] = []
    for path in base.rglob("*"):
        if not path.is_file():
            continue
        name = path.name
        kind = ""
        if _PARTIAL.match(name):
            kind = "partial"
        elif _ATOMIC_TMP.match(name):
            kind = "tmp"
        elif name.startswith(".") and name.endswith(".writing"):
            stale = _lock_is_stale(path)
            age = now - path.stat().st_mtime
            why = "" if stale else "its writer is alive"
            found.append(Leftover(str(path), "stale-lock" if stale else "lock", age, stale, why))
            continue
        if kind:
            age = now - path.stat().st_mtime
            young = age < min_age
            why = f"younger than {min_age:.0f} s: a writer may still be running" if young else ""
            found.append(Leftover(str(path), kind, age, not young, why))
    for folder in _uncommitted_videos(base):
        lock = folder.parent / f".{folder.name}.writing"
        held = lock.exists() and not _lock_is_stale(lock)
        age = now - folder.stat().st_mtime
        young = age < min_age
        removable = not held and not young
        why = "its writer lock is held" if held else ("recent" if young else "")
        found.append(Leftover(str(folder), "uncommitted-video", age, removable, why))
    return sorted(found, key=lambda x: -x.age_s)


def remove_leftovers(items: list[Leftover]) -> list[Leftover]:
    """Remove the removable ``items``; returns those removed."""
    done: list[Leftover] = []
    for item in items:
        if not item.removable:
            continue
        p = Path(item.path)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        done.append(item)
    return done


def as_dicts(items: list[Leftover]) -> list[dict[str, object]]:
    return [asdict(i) for i in items]
