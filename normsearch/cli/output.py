"""Writing an output file the way a careful Unix tool does (``export -o PATH``).

- a new or existing **regular file** is written to a temporary file in the same folder, then renamed over it:
  readers see the old or the new content, never half of it; an existing file keeps its mode (and, for root,
  its owner). A file the user may not write (mode 0444 for a non-root user) is refused, as ``cp`` does;
- a **symlink** is followed: its target is written as above and the link is kept;
- a **device, FIFO or other non-regular file** receives the bytes through a plain open-for-writing, and is
  never replaced or truncated (``-o /dev/stdout``, a named pipe);
- a directory is an error.

:func:`write_output` returns what it did, so the caller can say when an existing file was replaced.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

CREATED = "created"
REPLACED = "replaced"
STREAMED = "streamed"
"""Results of :func:`write_output`: a new file, an existing regular file replaced, bytes sent to a device/FIFO."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace(target: Path, data: bytes, existing: os.stat_result | None) -> None:
    """Write ``data`` to a temporary file next to ``target`` and rename it over ``target``."""
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if existing is None:
            os.chmod(temporary, 0o666 & ~_umask())
        else:
            os.chmod(temporary, stat.S_IMODE(existing.st_mode))
            if os.geteuid() == 0:
                os.chown(temporary, existing.st_uid, existing.st_gid)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_output(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` (see the module docstring); returns CREATED, REPLACED or STREAMED.

    Raises ``OSError`` naming ``path``: a directory, a missing folder, a file the user may not write, a full disk.
    """
    data = text.encode("utf-8")
    target = Path(os.path.realpath(path))  # a symlink's target; the link itself stays
    try:
        existing = os.stat(target)
    except FileNotFoundError:
        existing = None
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        fd = os.open(target, os.O_WRONLY)  # no O_CREAT, no O_TRUNC: the device or pipe stays what it is
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return STREAMED
    if existing is not None and not os.access(target, os.W_OK):
        raise PermissionError(
            errno.EACCES, "the file is read-only (remove it or make it writable first)", str(path)
        )
    if not target.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"folder {target.parent} does not exist", str(path))
    _replace(target, data, existing)
    return CREATED if existing is None else REPLACED


__all__ = ["CREATED", "REPLACED", "STREAMED", "write_output"]
