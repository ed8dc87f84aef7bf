"""The typer application every command module registers on, and the helpers they share."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any, NoReturn

import typer
from rich.console import Console

from .. import __version__

app = typer.Typer(
    name="normsearch",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

stdout = Console(soft_wrap=False)
stderr = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line ``error: ...`` to stderr and exit with ``code`` (2: bad input, 1: runtime failure)."""
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def choices_text(values: Iterable[str]) -> str:
    """Allowed values for a help text, in full: 'one of: a, b, c'."""
    return "one of: " + ", ".join(values)


def setting_option(cls: type, name: str, *decls: str, **kwargs: Any) -> Any:
    """A typer option for field ``name`` of settings dataclass ``cls``: the field's help with its choices
    spelled out, and a metavar from its type (N, X, DIR, the field name for a choice; none for a flag)."""
    spec = {f.name: f for f in dataclasses.fields(cls)}[name]
    choices = spec.metadata.get("choices")
    kind = str(spec.type)
    help_text = spec.metadata.get("help", "") + (f"; {choices_text(choices)}" if choices else "")
    metavar = (
        ""
        if "bool" in kind
        else name.upper()
        if choices
        else "N"
        if "int" in kind
        else "X"
        if "float" in kind
        else "DIR"
        if name.endswith("dir")
        else "TEXT"
    )
    names = decls or (f"--{name.replace('_', '-')}",)
    default = (kwargs.pop("default"),) if "default" in kwargs else ()  # positional, as typer.Option takes it
    return typer.Option(*default, *names, help=help_text, metavar=metavar, **kwargs)


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
        False, "--version", callback=_version, is_eager=True, metavar="", help="Show the version."
    ),
) -> None:
    """Search the design space of normalization layers with init-time probes (Beyond BatchNorm).

    The pipeline: space → norm → probes → search → confirm → leaderboard, report, export. Start with
    `normsearch run --space groups`; `normsearch COMMAND --help` shows each command with an example.
    """
