"""The typer application every command module registers on, and the helpers they share."""

from __future__ import annotations

import os
from typing import Any, NoReturn

import typer
from rich.console import Console

from .. import __version__

app = typer.Typer(
    name="normsearch",
    help="Search the design space of normalization layers with init-time probes (Beyond BatchNorm).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

stdout = Console(soft_wrap=False)
stderr = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line ``error: ...`` to stderr and exit with ``code`` (2: bad input, 1: runtime failure)."""
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def output_width() -> int | None:
    """The width to fit tables to: the terminal's, or ``$COLUMNS``; None (natural width) off a terminal."""
    return stdout.width if stdout.is_terminal or os.environ.get("COLUMNS") else None


def emit(renderable: Any) -> None:
    """A table on stdout at :func:`output_width` (a file or pipe has no width to fit: natural width)."""
    width = output_width()
    out = stdout if stdout.is_terminal else Console(soft_wrap=False, width=width or 100_000)
    out.print(renderable)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"normsearch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """normsearch: space → norm → probes → search → confirm → leaderboard/export."""
