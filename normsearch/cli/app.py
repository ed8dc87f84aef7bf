"""The typer application every command module registers on, the helpers they share, and the entry point.

:func:`main` (run by the ``normsearch`` console script, :mod:`normsearch.console`) runs the application under one handler: every expected
failure (a file or disk error, a damaged journal, a storage error, running out of memory, a signal) ends in
one ``error:`` line on stderr and exit code 2 (130 after Ctrl-C, 143 after SIGTERM, with the resume hint in a
command that stores its work as it goes: ``command(resumes=True)``);
any other exception is a bug, reported in one line that says to rerun with ``--debug`` for the traceback.

Terminal output never carries stored text as markup or raw control codes: the shared consoles read strings
without Rich markup (style is given with :class:`rich.text.Text`) and print any control character (an ANSI
escape, a bell, ...) that reaches them as a visible ``\\x1b``-style escape.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import signal
import sys
from collections.abc import Iterable, Iterator
from importlib import import_module
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.segment import Segment
from rich.text import Text
from typer._click.core import Context  # typer's own copy of click: what it parses with and raises
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperCommand, TyperGroup, TyperOption

from .. import __version__
from ..failures import describe_failure

BAD_INPUT = 2
INTERRUPTED = 130
TERMINATED = 143
BUG = 1
RESUME = "completed work is stored: run the same command again to go on"

if TYPE_CHECKING:
    import optuna


_LIMITS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
_KINDS = {
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "bool_parsing": "true or false",
}


def usage_message(error: UsageError) -> str:
    """The one-line message of a command-line usage error: for a bad value ``--n-trials: must be >= 1, got 0``
    (typer checks values with pydantic: its first error gives the rule and the input), else click's message
    with the command's help named."""
    cause = error.__cause__
    errors = cause.errors() if isinstance(error, typer.BadParameter) and hasattr(cause, "errors") else []
    if not errors or error.param is None:
        where = f"; see `{error.ctx.command_path} --help`" if error.ctx is not None else ""
        return f"{error.format_message().rstrip('.')}{where}"
    param = error.param
    longest = max(param.opts, key=len) if isinstance(param, TyperOption) and param.opts else None
    name = longest or (param.metavar or str(param.name)).upper()
    first = errors[0]
    bound = next(iter(first.get("ctx") or {}), None)
    if first["type"] in _LIMITS and bound is not None:
        rule = f"must be {_LIMITS[first['type']]} {first['ctx'][bound]}"
    elif first["type"] in _KINDS:
        rule = f"must be {_KINDS[first['type']]}"
    else:
        rule = str(first["msg"])[:1].lower() + str(first["msg"])[1:]
    return f"{name}: {rule}, got {first['input']}"


class _PlainFlags:
    """On/off flags get no type column in the help: typer draws ``<bool>`` there for a flag without a
    metavar, its own ``--help`` and completion options included. A usage error (a bad value, an unknown
    option or command, a missing argument) is one ``error:`` line and exit 2 (:func:`usage_message`), not
    typer's box, in every command: each parses its arguments in ``make_context``, the group picks the command
    in ``resolve_command``."""

    def get_params(self, ctx: Any) -> list:
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params

    resumes = False
    """Whether the command stores completed work as it goes, so that running it again after an interruption
    goes on (:data:`RESUME`); set by :func:`command`."""

    def make_context(self, *args: Any, **kwargs: Any) -> Context:
        _INVOKED["resumes"] = self.resumes  # the group's first, then the command's own
        with _usage_errors():
            return super().make_context(*args, **kwargs)


@contextlib.contextmanager
def _usage_errors() -> Iterator[None]:
    try:
        yield
    except NoArgsIsHelpError:  # a bare `normsearch`, `normsearch space`: the help, as asked for
        raise
    except UsageError as error:
        print_error(usage_message(error))
        raise typer.Exit(BAD_INPUT) from None


class PlainFlagsCommand(_PlainFlags, TyperCommand):
    """A command whose flags have no type column (:class:`_PlainFlags`)."""


class ResumingCommand(PlainFlagsCommand):
    """A :class:`PlainFlagsCommand` that stores its work as it goes (``run``, ``confirm``, ``calibrate``)."""

    resumes = True


class PlainFlagsGroup(_PlainFlags, TyperGroup):
    """A group whose flags have no type column (:class:`_PlainFlags`)."""

    def resolve_command(self, ctx: Context, args: list[str]) -> Any:
        with _usage_errors():
            return super().resolve_command(ctx, args)


class CommandsGroup(PlainFlagsGroup):
    """The ``normsearch`` group, whose command modules are imported when a command is looked up: running
    one imports its module alone (torch, Optuna and matplotlib load only where a command needs them), and the
    ``--help`` list shows the others by the name and help :func:`normsearch.cli.command_help` reads from
    their source, importing none."""

    _listing = False

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        from . import command_help

        names = list(command_help())
        return names + [name for name in super().list_commands(ctx) if name not in names]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        from . import command_help

        found = super().get_command(ctx, cmd_name)
        known = command_help().get(cmd_name)
        if found is not None or known is None:
            return found
        if self._listing:
            return TyperCommand(cmd_name, help=known[1])
        import_module(f"{__package__}.{known[0]}")  # registers its commands on app
        self.commands.update(typer.main.get_group(app).commands)  # built by typer, as at start-up
        return self.commands.get(cmd_name)


def command(*args: Any, on: typer.Typer | None = None, resumes: bool = False, **kwargs: Any) -> Any:
    """``app.command(...)`` (or ``on.command``) with :class:`PlainFlagsCommand`: how every command registers.
    ``resumes``: the command stores completed work as it goes, and an interruption says to run it again."""
    return (on or app).command(*args, cls=ResumingCommand if resumes else PlainFlagsCommand, **kwargs)


app = typer.Typer(
    cls=CommandsGroup,
    name="normsearch",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """``text`` with every control character but newline and tab shown as an escape (``\\x1b``)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class SafeConsole(Console):
    """A console that reads strings as plain text (no markup) and escapes control characters in them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, **kwargs)

    def render(self, renderable: Any, options: Any = None) -> Iterable[Segment]:
        return _escaped(super().render(renderable, options))


def _escaped(segments: Iterable[Segment]) -> Iterator[Segment]:
    for segment in segments:
        if segment.control is None and _CONTROL.search(segment.text):
            segment = Segment(escape_controls(segment.text), segment.style)
        yield segment


stdout = SafeConsole(soft_wrap=False)
stderr = SafeConsole(stderr=True)


def print_error(message: str) -> None:
    """One line ``error: message`` on stderr (the message printed as plain text)."""
    stderr.print(
        Text.assemble(("error:", "bold red"), " ", escape_controls(message)), highlight=False, soft_wrap=True
    )


def fail(message: str, code: int = BAD_INPUT) -> NoReturn:
    """Print one line ``error: ...`` to stderr and exit with ``code`` (2: bad input, 1: runtime failure)."""
    print_error(message)
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
    out = stdout if stdout.is_terminal else SafeConsole(soft_wrap=False, width=width or 100_000)
    out.print(renderable)


def open_study_or_fail(
    name: str | None, runs_dir: str, storage: str | None, heartbeat: int | None = None
) -> optuna.Study:
    """The existing study a command reads (:func:`normsearch.storage.open_study`: ``name`` None is the only
    study in ``storage``, else the latest under ``runs_dir``; ``heartbeat``: seconds between heartbeats on RDB
    storages, None: the default), or one ``error:`` line and exit 2."""
    import optuna

    from ..storage import HEARTBEAT_S, open_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return open_study(name, runs_dir, storage, heartbeat or HEARTBEAT_S)
    except ValueError as err:
        fail(str(err))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"normsearch {__version__}")
        raise typer.Exit()


_DEBUG = {"on": bool(os.environ.get("NORMSEARCH_DEBUG"))}


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an unexpected error."),
) -> None:
    """Search the design space of normalization layers with init-time probes (Beyond BatchNorm).

    The pipeline: space → norm → probes → search → confirm → leaderboard, report, export. Start with
    `normsearch run --space groups`; `normsearch COMMAND --help` shows each command with an example.
    """
    _DEBUG["on"] = _DEBUG["on"] or debug


# ------------------------------------------------------------------------------------------------------
# The entry point


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it stops the way Ctrl-C does (work is stored)."""


def _silence_failed_stdout() -> None:
    """Once stdout cannot be written (full, closed), point fd 1 at /dev/null, so that the interpreter's final
    flush does not report the failure a second time."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


_SIGNALS: dict[str, int | None] = {"last": None}
_INVOKED = {"resumes": False}
"""Whether the command being run resumes (:attr:`_PlainFlags.resumes`): what an interruption says."""


def _interrupted_line() -> str:
    return f"interrupted; {RESUME}" if _INVOKED["resumes"] else "interrupted"


def _on_sigterm(signum: int, frame: Any) -> None:
    _SIGNALS["last"] = signum
    raise Terminated


def _interrupted() -> int:
    """The exit code of an interruption: 143 after SIGTERM, else 130 (Ctrl-C)."""
    return TERMINATED if _SIGNALS["last"] == signal.SIGTERM else INTERRUPTED


def _caused_by_interrupt(error: BaseException) -> bool:
    """Whether ``error`` is a Ctrl-C/SIGTERM, or was raised while handling one (e.g. Optuna's journal lock
    release failing because the signal landed inside its rename)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__context__
    return False


def main(args: list[str] | None = None) -> int:
    """Run the CLI under the top-level handler (see the module docstring); returns the exit code."""
    logging.basicConfig(format="note: %(message)s", level=logging.WARNING, stream=sys.stderr)
    _DEBUG["on"] = bool(os.environ.get("NORMSEARCH_DEBUG"))
    _SIGNALS["last"] = None
    _INVOKED["resumes"] = False
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app(args=args, prog_name="normsearch")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if code == INTERRUPTED:
            context = exit_.__context__
            if context is not None and isinstance(context.__cause__, KeyboardInterrupt):
                print_error(_interrupted_line())  # typer's exit 130: the command itself said nothing
            code = _interrupted()
        return code
    except BaseException as error:
        if _caused_by_interrupt(error):  # also a cleanup that failed because the signal cut it short
            print_error(_interrupted_line())
            return _interrupted()
        message = describe_failure(error)
        _silence_failed_stdout()
        if message is not None:
            print_error(message)
            return BAD_INPUT
        if _DEBUG["on"]:
            raise
        print_error(
            f"unexpected {type(error).__name__}: {error} (a bug: rerun with --debug for the traceback)"
        )
        return BUG
    return 0
