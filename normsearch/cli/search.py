"""``normsearch run``, ``normsearch space validate|show|list``, ``normsearch leaderboard``, ``normsearch runs``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import optuna
import typer
from rich import box
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column as TableColumn
from rich.table import Table
from rich.text import Text

from ..data import DatasetUnavailable
from ..leaderboard import (
    SORT_FIELDS,
    build_rows,
    document,
    outcome,
    sort_rows,
    trial_counts,
)
from ..norm import parse_spec
from ..pipeline import Interrupted, Reporter, WorkersFailed, search_and_confirm, with_overrides
from ..search import BASELINES, IncompatibleStudy, Prepared, budget_used, check_comparable
from ..settings import SettingsError
from ..sources import network_label
from ..space import SearchSpace, SpaceError, load_space, shipped_spaces
from ..storage import (
    HEARTBEAT_S,
    StorageError,
    StudyLocation,
    check_name,
    locate,
    masked,
    open_study,
    stored_study_names,
    study_names,
)
from .app import (
    PlainFlagsGroup,
    app,
    choices_text,
    command,
    emit,
    fail,
    open_study_or_fail,
    output_width,
    print_error,
    stderr,
    stdout,
)
from .tables import (
    Column,
    calibration_line,
    collapse_line,
    default_line,
    failure_lines,
    fit_table,
    leaderboard_table,
    margin_line,
    mark_winner,
    number,
    rows_that_fit,
    winner_line,
)

space_app = typer.Typer(
    cls=PlainFlagsGroup, help="Check, show and list search-space files.", no_args_is_help=True
)
app.add_typer(space_app, name="space")

INTERRUPTED = 130


def _load(path: str) -> SearchSpace:
    """The validated space, or every problem on its own ``error:`` line and exit 2."""
    try:
        space = load_space(path)
    except SpaceError as err:
        for problem in err.problems[:-1]:
            print_error(problem)
        fail(err.problems[-1])
    note = space.probe.resolution_note()
    if note is not None:
        _note(f"warning: {space.path}: probe.{note}")
    return space


# ------------------------------------------------------------------------------------------------------
# normsearch space ...


def _size_text(space: SearchSpace) -> str:
    if not space.is_finite():
        continuous = sorted({p.option for p in space.params if p.values() is None})
        return f"continuous ({', '.join(continuous)})"
    points, valid = space.size()
    if points is None:
        return "more than 20000 points"
    return f"{valid} valid configs" + (f" of {points} points" if points != valid else "")


def _baselines_inside(space: SearchSpace) -> list[str]:
    return [name for name, spec in BASELINES.items() if space.params_for(parse_spec(spec))]


def _size(space: SearchSpace) -> dict[str, Any]:
    """The space's size for --json: finite or not, points and valid configs (None when unknown), as text."""
    points, valid = space.size() if space.is_finite() else (None, None)
    return {"finite": space.is_finite(), "points": points, "valid": valid, "text": _size_text(space)}


def _params(space: SearchSpace) -> list[dict[str, Any]]:
    return [
        {
            "option": p.option,
            "parameter": p.name if p.kind != "fixed" else None,
            "values": p.describe(),
            "when": p.condition() or None,
        }
        for p in space.params
    ]


SpaceFile = Annotated[str, typer.Argument(metavar="FILE", help="Space file or shipped name.")]
SpaceJson = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


@command("validate", on=space_app, epilog="Example: `normsearch space validate my_space.yaml`")
def space_validate(path: SpaceFile, json_output: SpaceJson = False) -> None:
    """Check a space file without running anything (exit 2 with one line per problem on stderr)."""
    space = _load(path)
    entries = len(space.params)
    if json_output:
        typer.echo(
            json.dumps(
                {"path": path, "valid": True, "name": space.name, "entries": entries, "size": _size(space)},
                indent=2,
            )
        )
        return
    stdout.print(f"{path}: valid ({entries} entries, {_size_text(space)})", highlight=False)


@command("show", on=space_app, epilog="Example: `normsearch space show groups`")
def space_show(path: SpaceFile, json_output: SpaceJson = False) -> None:
    """Print the space as a table (option, Optuna parameter, values, condition) with its size."""
    space = _load(path)
    if json_output:
        doc = {
            "name": space.name,
            "path": space.path,
            "description": space.description,
            "size": _size(space),
            "params": _params(space),
            "probe": dataclasses.asdict(space.probe),
            "search": dataclasses.asdict(space.search),
            "weights": dataclasses.asdict(space.weights),
            "confirm": dataclasses.asdict(space.confirm),
            "baselines_inside": _baselines_inside(space),
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    columns = [
        Column("option", lambda p: p["option"], justify="left"),
        Column("Optuna parameter", lambda p: p["parameter"] or "-", justify="left", wraps=True),
        Column("values", lambda p: p["values"], justify="left", wraps=True),
        Column("when", lambda p: p["when"] or "", justify="left", wraps=True),
    ]
    emit(
        fit_table(
            columns,
            _params(space),
            width=output_width(),
            title=f"search space {space.name}: {_size_text(space)}",
            title_justify="left",
            box=box.SQUARE,
            padding=(0, 1),
            show_edge=True,
        )
    )
    probe, search, weights = space.probe, space.search, space.weights
    lines = [
        (
            f"probe: {network_label(probe.model, probe.depth, probe.width)}{' skipinit' if probe.skipinit else ''}, "
            f"batch {probe.batch_size} {probe.data} {probe.resolution}px, {probe.seeds} seed(s) from {probe.seed}"
        ),
        f"search: {search.sampler}, {search.n_trials} trials, seed {search.seed}"
        + (f", timeout {search.timeout:g}s" if search.timeout else ""),
        (
            f"score: {weights.similarity:g}·(−ln(1−similarity)) + {weights.step_loss_ratio:g}·ln(step ratio) + "
            f"{weights.activation_growth:g}·(B−1)·|growth| + {weights.grad_ratio:g}·|ln(grad ratio)|, "
            f"step at lr {probe.lr:g}"
        ),
        f"baselines inside: {', '.join(_baselines_inside(space)) or 'none'}"
        + ("" if search.baselines else " (not enqueued: search.baselines is false)"),
    ]
    for line in lines:
        stdout.print(line, highlight=False)


@command("list", on=space_app, epilog="Example: `normsearch space list --json`")
def space_list(json_output: SpaceJson = False) -> None:
    """The spaces shipped with normsearch (usable by name: `--space groups`)."""
    if json_output:
        spaces = [
            {
                "name": name,
                "size": _size(space),
                "trials": space.search.n_trials,
                "description": space.description,
            }
            for name, space in ((name, load_space(name)) for name in shipped_spaces())
        ]
        typer.echo(json.dumps({"spaces": spaces}, indent=2))
        return
    grid = Table(title="shipped search spaces", title_justify="left")
    for column in ("name", "size", "trials", "description"):
        grid.add_column(column)
    for name in shipped_spaces():
        space = load_space(name)
        grid.add_row(name, _size_text(space), str(space.search.n_trials), space.description)
    emit(grid)


# ------------------------------------------------------------------------------------------------------
# normsearch run


def _progress() -> Progress:
    """The search bar: study, bar, trials done/budget, elapsed, time left (rich's estimate from the recent
    trial rate), and the best score and config so far (the config is what an 80-column line cuts)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn(
            "{task.fields[best]}",
            markup=False,
            table_column=TableColumn(ratio=1, no_wrap=True, overflow="ellipsis"),
        ),
        console=stderr,
        disable=not stderr.is_terminal,
        transient=False,
        expand=True,
    )


def _best(study: optuna.Study) -> str:
    rows = [row for row in build_rows(study) if row["state"] == "COMPLETE"]
    return f"best {rows[0]['score']:.3f} {rows[0]['config']}" if rows else ""


def _note(text: str) -> None:
    stderr.print(text, highlight=False, soft_wrap=True)


class _Terminal(Reporter):
    """The pipeline's progress on stderr: notes on the study, a progress bar over the budget, the counts."""

    def __init__(self, space: SearchSpace, location: StudyLocation) -> None:
        self.space, self.location = space, location

    def prepared(self, prepared: Prepared) -> None:
        _report_preparation(prepared, self.space)

    @contextlib.contextmanager
    def searching(self, study: optuna.Study, budget: int, remaining: int) -> Iterator[Callable[[], None]]:
        with _progress() as progress:
            task_id = progress.add_task(
                study.study_name, total=budget, completed=budget - remaining, best=_best(study)
            )

            def update() -> None:
                progress.update(
                    task_id,
                    completed=min(budget_used(study, include_running=False), budget),
                    best=_best(study),
                )

            yield update

    def searched(self, study: optuna.Study, seconds: float) -> None:
        _note(f"{study.study_name}: {_counts_text(study)} in {seconds:.1f}s → {self.location.directory}/")
        _note_shortfall(study, self.space, seconds)


@command("run", resumes=True, epilog="Example: `normsearch run --space groups` (again: resumes)")
def run(
    space_path: str = typer.Option(
        ..., "--space", metavar="FILE", help="Space file, or a shipped space name."
    ),
    study_name: str | None = typer.Option(
        None, "--study", metavar="NAME", help="Study name (default: the space's file name)."
    ),
    n_trials: int | None = typer.Option(
        None, "--n-trials", min=1, metavar="N", help="Trial budget (default: the space's)."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0, metavar="S", help="Stop starting trials after S seconds."
    ),
    seed: int | None = typer.Option(
        None, "--seed", min=0, metavar="N", help="Sampler seed (default: the space's)."
    ),
    storage: str | None = typer.Option(
        None, "--storage", metavar="URL|PATH", help="Optuna storage URL or journal file path."
    ),
    runs_dir: str = typer.Option("runs", "--runs-dir", metavar="DIR", help="Where studies live."),
    workers: int = typer.Option(
        1, "--workers", min=1, metavar="N", help="Local processes sharing the study."
    ),
    heartbeat: int = typer.Option(
        HEARTBEAT_S,
        "--heartbeat",
        min=1,
        metavar="S",
        help="RDB storages: a trial silent for 2×S seconds is failed and retried.",
    ),
    top: int | None = typer.Option(
        None,
        "--top",
        min=1,
        metavar="N",
        help="Rows of the final leaderboard (default: what fits the terminal, at most 10; 10 off a terminal).",
    ),
    no_confirm: bool = typer.Option(False, "--no-confirm", help="Skip the confirmation training."),
    model: str | None = typer.Option(
        None, "--model", metavar="NAME", help="Probe and confirmation network (default: the space's)."
    ),
    data: str | None = typer.Option(
        None, "--data", metavar="NAME", help="Probe and confirmation data (default: the space's)."
    ),
    json_output: bool = typer.Option(
        False, "--json", help="Print the final leaderboard as one JSON document (progress: stderr)."
    ),
) -> None:
    """Search a space: probe each candidate, rank them, confirm the best, print the leaderboard.

    Running the same command again resumes the study (completed trials are kept; the budget counts them).
    """
    space = _load(space_path)
    try:
        space = with_overrides(space, n_trials=n_trials, timeout=timeout, seed=seed, model=model, data=data)
    except SettingsError as err:
        fail(f"--{err.path.rpartition('.')[2].replace('dataset', 'data').replace('_', '-')}: {err.message}")
    except DatasetUnavailable as err:
        fail(f"--data: {err}")
    name = space.name if study_name is None else study_name
    try:
        location = locate(check_name(name), runs_dir, storage, heartbeat)
    except ValueError as err:
        fail(f"--study: {err}")
    try:
        study = search_and_confirm(
            space,
            location,
            workers=workers,
            confirm=not no_confirm,
            interruptible=True,
            reporter=_Terminal(space, location),
            console=stderr,
        )
    except SettingsError as err:  # the confirmation data is missing
        fail(f"{space.path}: {err}")
    except (IncompatibleStudy, StorageError) as err:
        fail(str(err))
    except WorkersFailed as err:
        if err.explained:  # each failed worker said why in one line
            raise typer.Exit(2) from None
        fail(str(err), code=1)
    except Interrupted as err:
        if err.stage == "search":
            done = budget_used(err.study, include_running=False)
            _note(
                f"interrupted after {done}/{space.search.n_trials} trials; the study is saved: run the same "
                "command again to resume"
            )
        else:
            _note(
                f"confirmation interrupted; what was trained is stored: `normsearch confirm "
                f"{err.study.study_name}` or the same run command goes on from there"
            )
        raise typer.Exit(INTERRUPTED) from None
    rows = build_rows(study)
    if json_output:
        typer.echo(json.dumps(document(study, rows, top=top or 10), indent=2))
        return
    _print_table(study, rows, top, 10, after=_next_steps(study))


def _next_steps(study: optuna.Study) -> list[str]:
    """What to do with a finished study, one command a line: the report and the export (the confirmation
    first, if it was skipped)."""
    name = study.study_name
    steps = [
        (f"normsearch report {name}", "the HTML report"),
        (f"normsearch export {name} -o my_norm.py", "the winner as a PyTorch module"),
    ]
    if not any(row.get("budget") for row in build_rows(study)):
        steps.insert(0, (f"normsearch confirm {name}", "train the best candidates"))
    return [
        f"{'next:' if i == 0 else '     '} `{command}` ({what})" for i, (command, what) in enumerate(steps)
    ]


def _note_shortfall(study: optuna.Study, space: SearchSpace, elapsed: float) -> None:
    """Say why the budget is not used up yet, if it is not: other processes still running, or this run's limit."""
    budget = space.search.n_trials
    done = budget_used(study, include_running=False)
    running = budget_used(study) - done
    if done >= budget:
        return
    if done + running >= budget:
        _note(f"{running} trial(s) still running in other processes: {done}/{budget} done")
        return
    timeout = space.search.timeout
    if space.search.sampler == "brute_force" and not (timeout is not None and elapsed >= timeout):
        _note(f"budget not used up: {done}/{budget} trials (brute_force tried every config of the space)")
        return
    why = "the timeout" if timeout is not None and elapsed >= timeout else "trials were interrupted"
    _note(f"budget not used up: {done}/{budget} trials ({why}); the same command goes on")


def _report_preparation(prepared: Prepared, space: SearchSpace) -> None:
    study = prepared.study
    if not prepared.created:
        _note(f"resuming study {study.study_name}: {budget_used(study)}/{space.search.n_trials} trials done")
    differs = space.probe_differences()
    if differs:
        fields = "; ".join(f"{k} {v['probe']} vs {v['confirm']}" for k, v in differs.items())
        _note(
            f"note: the probes do not see the trained network (probe vs confirm: {fields}); their scores may "
            "not predict training"
        )
    if prepared.space_changed:
        _note(
            f"note: the space differs from the one this study started with ({space.path}); stored the new one"
        )
    if prepared.stale:
        _note(
            f"marked {len(prepared.stale)} trial(s) left running by a stopped process as failed: "
            f"{', '.join(map(str, prepared.stale))}"
        )
    if prepared.enqueued:
        _note(f"baselines enqueued: {', '.join(prepared.enqueued)}")


def _counts_text(study: optuna.Study) -> str:
    counts = trial_counts(study)
    parts = [f"{counts.get('complete', 0)} complete"]
    parts += [f"{counts[k]} {k}" for k in ("fail", "running", "waiting") if counts.get(k)]
    return ", ".join(parts)


def _print_table(
    study: optuna.Study, rows: list[dict[str, Any]], top: int | None, most: int, after: Sequence[str] = ()
) -> None:
    """The leaderboard on stdout (fitted to the terminal; off a terminal at its natural width), then the
    winner, the calibration and the training cost once the study is confirmed, then ``after``.

    ``top`` None: on a terminal, as many rows (at most ``most``) as fit its height with the lines under the
    table; ``most`` rows off a terminal."""
    from ..confirm import cost_line

    result = outcome(study, rows)
    rows = mark_winner(rows, result["winner"])
    lines = [
        winner_line(result["winner"]),
        default_line(result["winner"], result["default"]),
        margin_line(rows, result["winner"]),
        collapse_line(rows),
        calibration_line(result["calibration"]),
    ]
    if result["training_cost"] is not None:
        lines.append(cost_line(result["training_cost"]))
    lines += after
    width = output_width()

    def draw(count: int) -> list[Any]:
        table = leaderboard_table(study.study_name, rows[:count], total=len(rows), width=width)
        return [table, *(Text(line) for line in filter(None, lines))]

    if top is None:
        height = output_height()
        top = (
            most
            if width is None or height is None
            else rows_that_fit(draw, min(most, len(rows)), width, height)
        )
    for renderable in draw(top):
        emit(renderable)  # lines wrapped at words on a terminal, whole lines off it


def output_height() -> int | None:
    """The terminal's height (or ``$LINES``); None off a terminal."""
    return stdout.height if stdout.is_terminal or os.environ.get("LINES") else None


# ------------------------------------------------------------------------------------------------------
# normsearch leaderboard / runs


def _open(name: str | None, runs_dir: str, storage: str | None) -> optuna.Study:
    study = open_study_or_fail(name, runs_dir, storage)
    try:
        check_comparable(study)
    except IncompatibleStudy as err:
        fail(str(err))
    return study


@command("leaderboard", epilog="Example: `normsearch leaderboard groups --top 20 --sort accuracy`")
def leaderboard(
    study_name: str | None = typer.Argument(None, metavar="STUDY", help="Study (default: the latest)."),
    runs_dir: str = typer.Option("runs", "--runs-dir", metavar="DIR", help="Where studies live."),
    storage: str | None = typer.Option(
        None, "--storage", metavar="URL|PATH", help="Optuna storage URL or journal path."
    ),
    top: int | None = typer.Option(
        None,
        "--top",
        min=1,
        metavar="N",
        help="Rows to show (default: what fits the terminal, at most 20; 20 off a terminal).",
    ),
    sort: str = typer.Option(
        "trained",
        "--sort",
        metavar="FIELD",
        help=f"Sort field; {choices_text(SORT_FIELDS)} (trained: the winner first, see docs/search.md; accuracy: "
        "highest first).",
    ),
    include_failed: bool = typer.Option(False, "--all", help="Also list failed trials with their reason."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document {study, rows, ...}."),
) -> None:
    """The ranked candidates of a study: Pareto front ★, probe scores, score, confirmation, baselines."""
    if sort not in SORT_FIELDS:
        fail(f"--sort: {sort!r} is not a field; allowed: {', '.join(SORT_FIELDS)}")
    study = _open(study_name, runs_dir, storage)
    rows = sort_rows(build_rows(study, include_failed=include_failed), sort)
    if json_output:
        doc = document(study, rows, top=top or 20)
        typer.echo(json.dumps(doc, indent=2))
        return
    _print_table(study, rows, top, 20, after=failure_lines(rows[: top or 20]))


@command("runs", epilog="Example: `normsearch runs --runs-dir runs`")
def runs(
    runs_dir: str = typer.Option("runs", "--runs-dir", metavar="DIR", help="Where studies live."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document {runs: [...]}."),
    storage: str | None = typer.Option(
        None, "--storage", metavar="URL|PATH", help="List the studies of this storage (URL or journal)."
    ),
) -> None:
    """The studies under the runs directory (or in --storage): trial counts and best config."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is None:
        if not Path(runs_dir).is_dir():
            fail(f"--runs-dir {runs_dir}: no such directory (studies are made there by `normsearch run`)")
        found: list[tuple[str, float | None]] = list(study_names(runs_dir))
    else:
        try:
            found = [(name, None) for name in stored_study_names(storage)]
        except StorageError as err:
            fail(str(err))
    entries = []
    for name, modified in found:
        try:
            study = open_study(name, runs_dir, storage)
            check_comparable(study)
        except ValueError as err:
            _note(f"skipped {runs_dir}/{name}: {err}")
            continue
        rows = [row for row in build_rows(study) if row["state"] == "COMPLETE"]
        entries.append(
            {
                "study": name,
                "space": study.user_attrs.get("space", {}).get("name"),
                "trials": trial_counts(study),
                "best": rows[0]["config"] if rows else None,
                "best_score": rows[0]["score"] if rows else None,
                "modified": None
                if modified is None
                else time.strftime("%Y-%m-%d %H:%M", time.localtime(modified)),
            }
        )
    if json_output:
        where = {"runs_dir": str(runs_dir)} if storage is None else {"storage": masked(storage)}
        typer.echo(json.dumps({**where, "runs": entries}, indent=2))
        return
    columns = [
        Column("study", lambda e: e["study"], justify="left"),
        Column("space", lambda e: e["space"] or "?", 2, "left"),
        Column("complete", lambda e: str(e["trials"].get("complete", 0)), 1),
        Column("failed", lambda e: str(e["trials"].get("fail", 0)), 2),
        Column("score", lambda e: number(e["best_score"])),
        Column("modified", lambda e: e["modified"] or "-", 3, "left"),
        Column("best config", lambda e: e["best"] or "-", justify="left"),
    ]
    emit(
        fit_table(
            columns,
            entries,
            width=output_width(),
            wrapped="best config",
            title=f"studies in {runs_dir}/" if storage is None else f"studies in {masked(storage)}",
            title_justify="left",
        )
    )
