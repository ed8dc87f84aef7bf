"""Expected failures (a full disk, a read-only file, a damaged journal, no memory, a storage error) and the one
line that describes each: what the CLI's top-level handler and a search worker print instead of a traceback."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterator

_FULL = "free some space, then run the same command again; completed work is stored"
_HINTS = {errno.ENOSPC: _FULL, errno.EDQUOT: _FULL}


def chain(error: BaseException) -> Iterator[BaseException]:
    """The exception and those it was raised from or during, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def describe_failure(error: BaseException) -> str | None:
    """The one-line message of an expected failure anywhere in ``error``'s chain, or None for a bug.

    Expected: a damaged journal, any ``OSError`` (disk full, read-only, no permission, name too long, ...),
    ``MemoryError``, a storage error. Optuna turns a failed write into "AssertionError: Should not reach." raised
    while handling the real error: the chain is searched for it.
    """
    import optuna

    from .journal import JournalDamaged

    for cause in chain(error):
        if isinstance(cause, JournalDamaged):
            return str(cause)
        if isinstance(cause, OSError):
            output = not cause.filename and _from_output(cause)
            filename = cause.filename or (None if output else _open_file(error))
            where = f"{filename}: " if filename else ("cannot write the output: " if output else "")
            hint = None if output else _HINTS.get(cause.errno)
            return f"{where}{cause.strerror or cause}" + (f": {hint}" if hint else "")
        if isinstance(cause, MemoryError):
            return "out of memory: lower the sizes (batch_size, width, depth, resolution) or the range sizes"
        if isinstance(cause, optuna.exceptions.StorageInternalError) or type(cause).__module__.startswith(
            "sqlalchemy."
        ):
            lines = str(cause).strip().splitlines()
            return f"storage error: {lines[0] if lines else type(cause).__name__}"
    return None


def _open_file(error: BaseException) -> str | None:
    """The file being written when ``error`` was raised, for an ``OSError`` that names none (a write to an
    open file, e.g. PIL saving a figure: ENOSPC has no file name): the name of the innermost open file among
    the locals of the frames it passed, standard streams left out."""
    found = None
    for cause in chain(error):
        tb = cause.__traceback__
        while tb is not None:
            for value in tb.tb_frame.f_locals.values():
                name = getattr(value, "name", None) if isinstance(value, io.IOBase) else None
                if isinstance(name, str) and name not in ("<stdout>", "<stderr>"):
                    found = name
            tb = tb.tb_next
        if found is not None:
            return found
    return None


def _from_output(error: BaseException) -> bool:
    """Whether ``error`` was raised writing to the terminal or a pipe (by Rich or click)."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    name = tb.tb_frame.f_code.co_filename.replace(os.sep, "/") if tb is not None else ""
    return name.endswith(("rich/console.py", "click/utils.py", "typer/_typing.py"))


__all__ = ["chain", "describe_failure"]
