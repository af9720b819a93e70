"""Content digests of many source files, re-hashing only the files that may have changed.

Cache keys need each video's sha256, but hashing every video on every rerun
would cost the rerun most of its budget. The index file
(``<work>/fingerprints.json``) keeps, per path, the last :class:`FileFingerprint`
(size, mtime, sha256) plus the file's inode and ctime. A file whose size,
mtime, inode and ctime are all unchanged reuses its digest; anything else is
hashed again. ctime cannot be set from user space (``touch -d``, ``cp -p`` and
``rsync -t`` preserve an mtime, never a ctime) and the inode changes when a file
is replaced by another, so a same-size replacement with a preserved mtime is
still re-hashed. ``mktn reproduce --rehash`` (or deleting the index) forces every
file to be hashed again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from storage.atomic import atomic_write_json
from storage.fingerprint import FileFingerprint, file_digest

logger = logging.getLogger(__name__)

INDEX_NAME = "fingerprints.json"


def _stat_key(st: os.stat_result) -> dict[str, int]:
    """The stat fields a reused digest must match besides size and mtime."""
    return {"ino": int(st.st_ino), "ctime_ns": int(st.st_ctime_ns)}


class FingerprintIndex:
    """A JSON index of file fingerprints at ``path``; thread-safe, saved atomically."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, FileFingerprint] = {}
        self._stats: dict[str, dict[str, int]] = {}
        self.hashed: list[str] = []  # files hashed (not reused) by this instance
        if self.path.is_file():
            try:
                raw: dict[str, dict[str, Any]] = json.loads(self.path.read_text(encoding="utf-8"))
                for key, value in raw.items():
                    self._entries[key] = FileFingerprint.from_dict(value)
                    if "ino" in value and "ctime_ns" in value:
                        self._stats[key] = {"ino": int(value["ino"]), "ctime_ns": int(value["ctime_ns"])}
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
                logger.warning("ignoring unreadable fingerprint index %s (%s); rehashing", self.path, exc)
                self._entries, self._stats = {}, {}

    def digest(self, file: str | os.PathLike[str]) -> str:
        """sha256 of ``file``, from the index when its size, mtime, inode and ctime are unchanged."""
        key = str(Path(file).resolve())
        st = os.stat(key)
        with self._lock:
            recorded = self._entries.get(key)
            stats = self._stats.get(key)
        if (
            recorded is not None
            and recorded.size == st.st_size
            and recorded.mtime_ns == st.st_mtime_ns
            and stats == _stat_key(st)
        ):
            return recorded.sha256
        sha = file_digest(key)
        after = os.stat(key)
        if (after.st_size, after.st_mtime_ns, _stat_key(after)) != (st.st_size, st.st_mtime_ns, _stat_key(st)):
            logger.warning("%s changed while it was hashed; it will be hashed again next time", key)
            return sha  # not recorded: the digest may mix two versions of the file
        fp = FileFingerprint(path=key, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha)
        with self._lock:
            self._entries[key] = fp
            self._stats[key] = _stat_key(st)
            self.hashed.append(key)
        return sha

    def digests(self, files: Iterable[str | os.PathLike[str]]) -> dict[str, str]:
        return {str(f): self.digest(f) for f in files}

    def save(self) -> None:
        with self._lock:
            data = {k: {**v.to_dict(), **self._stats.get(k, {})} for k, v in sorted(self._entries.items())}
        atomic_write_json(self.path, data)
