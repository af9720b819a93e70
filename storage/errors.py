"""One line, naming the problem and the fix, for a store location that cannot be written.

A read-only location (``EACCES``/``EPERM``/``EROFS``) or a full disk (``ENOSPC``/``EDQUOT``)
reaches a command as a bare ``OSError`` from zarr or from a lock/probe file; the commands
that write a store (``mktn extract``, ``mktn embed``) turn it into one line and exit 2.
"""

from __future__ import annotations

import errno
import os

READ_ONLY_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _under(path: str | None, root: str) -> bool:
    if not path:
        return True  # no file named: the store's own write is the likely one
    try:
        a, b = os.path.realpath(path), os.path.realpath(root)
    except (OSError, ValueError):
        return False
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep) or b.startswith(a.rstrip(os.sep) + os.sep)


def store_write_problem(
    exc: BaseException, root: object, *, what: str = "store", doing: str = "writing", option: str = "--store"
) -> str | None:
    """The one-line message for ``exc`` when it means ``root`` cannot be written, else None.

    ``what`` names the store ("feature store"), ``doing`` the step ("writing the
    normalisation statistics to"), ``option`` the flag that picks the location.

    >>> store_write_problem(PermissionError(13, "Permission denied", "/ro/s.zarr/zarr.json"), "/ro/s.zarr",
    ...                     what="feature store")  # doctest: +NORMALIZE_WHITESPACE
    "cannot write the feature store '/ro/s.zarr': permission denied (/ro/s.zarr/zarr.json); choose
    a writable location with --store, or make it writable (chmod/chown)"
    >>> store_write_problem(OSError(28, "No space left on device"), "s.zarr", what="feature store")
    "disk full while writing the feature store 's.zarr'; free space (or choose another disk with --store) and run the command again"
    >>> store_write_problem(ValueError("bad"), "s.zarr") is None
    True
    """
    if not isinstance(exc, OSError) or exc.errno is None:
        return None
    text = os.fspath(root) if isinstance(root, str | os.PathLike) else str(root)
    if not _under(exc.filename, text):
        return None
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in FULL_ERRNOS:
        return (
            f"disk full while {doing} the {what} {text!r}; free space (or choose another disk "
            f"with {option}) and run the command again"
        )
    if exc.errno == errno.EROFS:
        return (
            f"cannot write the {what} {text!r}: read-only file system{where}; choose a location "
            f"on a writable disk with {option}"
        )
    if exc.errno in READ_ONLY_ERRNOS:
        return (
            f"cannot write the {what} {text!r}: permission denied{where}; choose a writable "
            f"location with {option}, or make it writable (chmod/chown)"
        )
    return None


def probe_writable(root: object) -> None:
    """Raise the ``OSError`` a write into the local store folder ``root`` would raise (else nothing).

    A probe file is created and removed, so an existing store that is now read-only is found
    before minutes of work rather than at the first write. URLs and stores are not probed.
    """
    if not isinstance(root, str | os.PathLike):
        return
    text = os.fspath(root)
    if "://" in text and not text.startswith("file://"):
        return
    folder = text[len("file://") :] if text.startswith("file://") else text
    if not os.path.isdir(folder):
        return  # created by the first write, which then reports its own error
    # named like an atomic_open temporary, so `mktn store gc` removes one a kill left behind
    probe = os.path.join(folder, f".write-probe.{os.getpid():06d}.tmp")
    fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"ok")
    finally:
        os.close(fd)
        try:
            os.unlink(probe)
        except FileNotFoundError:
            pass
