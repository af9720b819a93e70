"""Content fingerprints of source files, used as cache keys and provenance.

A *fingerprint* is cheap to compare (size, mtime) and exact (sha256 of the
content). ``file_digest`` streams the file so an hour-long video or an 5 GB
GloVe file is never held in memory.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file's content, streamed in 1 MiB chunks.

    Raises ``FileNotFoundError`` naming the path when it does not exist.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"cannot fingerprint {str(p)!r}: no such file")
    h = hashlib.new(algorithm)
    with p.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class FileFingerprint:
    """Size, modification time (ns) and sha256 of a file."""

    path: str
    size: int
    mtime_ns: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileFingerprint:
        return cls(path=str(d["path"]), size=int(d["size"]), mtime_ns=int(d["mtime_ns"]), sha256=str(d["sha256"]))


def fingerprint_file(path: str | os.PathLike[str], sha256: str | None = None) -> FileFingerprint:
    """Fingerprint a file: stat it and hash its content.

    ``sha256``: the content digest when the caller computed it already (the flows' fingerprint
    index): it is taken as it is and the file is not read again.
    """
    p = Path(path)
    digest = sha256 if sha256 else file_digest(p)
    st = p.stat()
    return FileFingerprint(path=str(p.resolve()), size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=digest)


def quick_unchanged(path: str | os.PathLike[str], recorded: FileFingerprint) -> bool | None:
    """Cheap check: ``True``/``False`` when size+mtime decide it, ``None`` when the content must be hashed.

    Same size and mtime -> unchanged (``True``); different size -> changed (``False``);
    same size but different mtime -> ``None`` (hash to decide).
    """
    st = Path(path).stat()
    if st.st_size != recorded.size:
        return False
    if st.st_mtime_ns == recorded.mtime_ns:
        return True
    return None


def digest_strings(*parts: str) -> str:
    """sha256 of NUL-joined strings (first 16 hex digits): a short, stable key for small inputs."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]
