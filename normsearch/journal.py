"""Optuna journal files that survive interrupted writes: no append ever lands on a partial line.

An Optuna journal (``JournalFileBackend``) is one JSON record per line. A writer killed mid-line, or a write
cut short by a full disk, leaves a last line without its newline; Optuna's reader ignores such a line (it may
be a write in progress), but its writer appends the next record straight onto it, and from then on the glued
line is invalid JSON in the middle of the file and the whole study is unreadable.

:class:`SafeJournalFileBackend` is Optuna's backend with three changes:

- **opening** cuts a partial last line (under the journal lock, so never another writer's line in progress);
  every complete record is kept. Without write access (a read-only journal) the file is left as it is:
  readers skip the partial line anyway;
- **a failed append** (ENOSPC, EROFS, EACCES, …) is rolled back to the size the file had before it, under the
  same lock, and raised as :class:`JournalWriteError` (an ``OSError`` naming the file);
- **reading** a line that is not a record first tries to salvage it: a line glued onto a partial one (left by
  an older version, or another tool) is replaced by its last complete record, and the partial record, which no
  reader ever applied, is dropped. A line that cannot be salvaged raises :class:`JournalDamaged` naming the
  file and the line; a line of JSON that is no Optuna record (another program's JSON lines) raises
  :class:`ForeignJournal`, and the file is never written.

A lock that exists when the journal is opened is reported through the ``normsearch`` logger: the first write
waits for it (Optuna breaks a lock left by a killed process after its grace period).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Generator
from typing import Any

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.storages.journal._file import LOCK_FILE_SUFFIX, get_lock_file

_logger = logging.getLogger("normsearch")
_RECORD_START = b'{"op_code":'
"""How Optuna writes every record (``json.dumps(log, separators=(",", ":"))``, op_code first)."""
_TAIL_CHUNK = 1 << 16


class JournalDamaged(ValueError):
    """A line of a journal file that is not a journal record and cannot be salvaged."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(
            f"{path}: line {line} is not a journal record ({reason}); keep a copy of the file, then remove "
            "that line to read the records around it"
        )
        self.path = path
        self.line = line


class ForeignJournal(JournalDamaged):
    """A journal file whose records are JSON but not Optuna's (another program's JSON lines)."""

    def __init__(self, path: str, line: int) -> None:
        ValueError.__init__(
            self,
            f"{path}: line {line} is JSON but not an Optuna journal record (no op_code): another program's "
            "file, left as it is; use another --study name or --runs-dir",
        )
        self.path = path
        self.line = line


class JournalWriteError(OSError):
    """A journal append that failed; the journal is as it was before the append."""


def _last_newline_end(handle: Any, size: int) -> int:
    """The offset just past the last newline of an open binary file of ``size`` bytes (0 if none)."""
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        handle.seek(start)
        found = handle.read(end - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def _ends_partial(path: str) -> bool:
    """Whether the file's last byte is not a newline (an empty file is complete)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return False
        handle.seek(size - 1)
        return handle.read(1) != b"\n"


def cut_partial_tail(path: str) -> int:
    """Truncate a partial last line (the caller holds the journal lock); returns the bytes removed."""
    with open(path, "rb+") as handle:
        size = os.fstat(handle.fileno()).st_size
        keep = _last_newline_end(handle, size)
        if keep < size:
            handle.truncate(keep)
            os.fsync(handle.fileno())
        return size - keep


def _salvage_line(line: bytes) -> bytes | None:
    """The last complete record inside a line glued onto a partial one, or None."""
    start = line.rfind(_RECORD_START)
    while start > 0:
        try:
            record = json.loads(line[start:])
        except ValueError:
            record = None
        if isinstance(record, dict) and "op_code" in record:
            return line[start:]
        start = line.rfind(_RECORD_START, 0, start)
    return None


def salvage(path: str) -> int:
    """Rewrite ``path`` with every glued line replaced by its last record (caller holds the lock).

    Returns the number of lines salvaged; raises :class:`JournalDamaged` at the first line that is neither a
    record nor a glued one. The rewrite goes through a temporary file and a rename (mode kept).
    """
    with open(path, "rb") as handle:
        lines = handle.read().split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    fixed = 0
    for number, line in enumerate(lines, 1):
        try:
            json.loads(line)
            continue
        except ValueError as err:
            reason = str(err)
        replacement = _salvage_line(line)
        if replacement is None:
            raise JournalDamaged(path, number, reason)
        lines[number - 1] = replacement
        fixed += 1
    if fixed:
        directory, name = os.path.split(path)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(b"\n".join(lines) + (b"\n" if lines else b"") + tail)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
    return fixed


class SafeJournalFileBackend(JournalFileBackend):
    """Optuna's journal file backend that never appends onto a partial line (see the module docstring)."""

    def __init__(self, file_path: str, lock_obj: JournalFileSymlinkLock) -> None:
        super().__init__(file_path, lock_obj)
        lock = file_path + LOCK_FILE_SUFFIX
        if os.path.lexists(lock):
            grace = getattr(lock_obj, "grace_period", None)
            _logger.warning(
                f"{lock} exists: another process is writing this study, or one was killed "
                f"mid-write; writes wait for it (a lock left by a killed process is broken after "
                f"{grace} s)"
            )
        if _ends_partial(file_path):
            self._cut_tail()

    def _cut_tail(self) -> None:
        try:
            with get_lock_file(self._lock):
                removed = cut_partial_tail(self._file_path)
        except (OSError, RuntimeError):  # no write access: readers skip a partial line anyway
            return
        if removed:
            _logger.warning(
                f"{self._file_path}: removed an incomplete last record ({removed} bytes) left by an "
                "interrupted write; every complete record is kept"
            )

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        read = 0
        try:
            for log in super().read_logs(log_number_from):
                read += 1
                if not isinstance(log, dict) or "op_code" not in log:
                    raise ForeignJournal(self._file_path, log_number_from + read)
                yield log
            return
        except ForeignJournal:
            raise
        except ValueError:  # json.JSONDecodeError included: a line that is not a record
            pass
        try:
            with get_lock_file(self._lock):
                fixed = salvage(self._file_path)
        except (OSError, RuntimeError) as err:  # no write access: name the line instead
            cause = err.__context__ if isinstance(err, RuntimeError) and err.__context__ else err
            raise JournalDamaged(
                self._file_path, log_number_from + read + 1, f"not repaired: {cause}"
            ) from None
        if fixed:
            _logger.warning(f"{self._file_path}: salvaged {fixed} record(s) written onto an incomplete line")
        self._log_number_offset = {0: 0}
        yield from super().read_logs(log_number_from + read)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with get_lock_file(self._lock):
            size = os.path.getsize(self._file_path)
            try:
                with open(self._file_path, "ab") as handle:
                    handle.write(text.encode("utf-8"))
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as err:
                try:
                    os.truncate(self._file_path, size)
                except OSError:
                    pass  # cut on the next open
                raise JournalWriteError(err.errno, err.strerror, self._file_path) from err


__all__ = [
    "ForeignJournal",
    "JournalDamaged",
    "JournalWriteError",
    "SafeJournalFileBackend",
    "cut_partial_tail",
    "salvage",
]
