"""The typer application every command module registers on, and the helpers they share."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console

from .. import __version__

if TYPE_CHECKING:
    import optuna

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


def open_study_or_fail(name: str | None, runs_dir: str, storage: str | None) -> optuna.Study:
    """The existing study a command reads (:func:`normsearch.storage.open_study`: ``name`` None is the only
    study in ``storage``, else the latest under ``runs_dir``), or one ``error:`` line and exit 2."""
    import optuna

    from ..storage import open_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return open_study(name, runs_dir, storage)
    except ValueError as err:
        fail(str(err))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"normsearch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """normsearch: space → norm → probes → search → confirm → leaderboard/export."""
