"""The ``normsearch`` console script: imports the CLI (torch, Optuna, every command: seconds) and runs it under
its top-level handler (:func:`normsearch.cli.app.main`). A Ctrl-C or SIGTERM during that start-up is one
``error:`` line too, not a traceback out of some import."""

from __future__ import annotations

import signal
import sys
from typing import NoReturn

from .allocator import keep_freed_memory


class _Terminated(KeyboardInterrupt):
    pass


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def run() -> NoReturn:
    """Entry point of the ``normsearch`` command (its allocator keeps freed memory: :mod:`normsearch.allocator`)."""
    keep_freed_memory()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        from .cli.app import main
    except KeyboardInterrupt as interrupt:
        sys.stderr.write("error: interrupted during start-up; nothing was written\n")
        sys.exit(143 if isinstance(interrupt, _Terminated) else 130)
    sys.exit(main())
