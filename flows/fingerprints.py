"""Content digests of many source files, re-hashing only the files whose size or mtime moved.

Cache keys need each video's sha256, but hashing every video on every rerun
would cost the rerun most of its budget. The index file
(``<work>/fingerprints.json``) keeps the last :class:`FileFingerprint` per
path; a file whose size and mtime are unchanged reuses its digest
(``storage.fingerprint.quick_unchanged``), anything else is hashed again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from storage.atomic import atomic_write_json
from storage.fingerprint import FileFingerprint, file_digest, fingerprint_file, quick_unchanged

logger = logging.getLogger(__name__)

INDEX_NAME = "fingerprints.json"


class FingerprintIndex:
    """A JSON index of file fingerprints at ``path``; thread-safe, saved atomically."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, FileFingerprint] = {}
        if self.path.is_file():
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                self._entries = {k: FileFingerprint.from_dict(v) for k, v in raw.items()}
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                logger.warning("ignoring unreadable fingerprint index %s (%s); rehashing", self.path, exc)

    def digest(self, file: str | os.PathLike[str]) -> str:
        """sha256 of ``file``, from the index when its size and mtime are unchanged."""
        key = str(Path(file).resolve())
        with self._lock:
            recorded = self._entries.get(key)
        if recorded is not None:
            same = quick_unchanged(key, recorded)
            if same is True:
                return recorded.sha256
            if same is None and file_digest(key) == recorded.sha256:
                fp = fingerprint_file(key)  # content same, mtime moved: refresh the stat
                with self._lock:
                    self._entries[key] = fp
                return fp.sha256
        fp = fingerprint_file(key)
        with self._lock:
            self._entries[key] = fp
        return fp.sha256

    def digests(self, files: Iterable[str | os.PathLike[str]]) -> dict[str, str]:
        return {str(f): self.digest(f) for f in files}

    def save(self) -> None:
        with self._lock:
            data = {k: v.to_dict() for k, v in sorted(self._entries.items())}
        atomic_write_json(self.path, data)
