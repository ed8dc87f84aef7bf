"""``normsearch run``, ``normsearch space validate|show|list``, ``normsearch leaderboard``, ``normsearch runs``."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import optuna
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..data import DatasetUnavailable
from ..leaderboard import (
    SORT_FIELDS,
    build_rows,
    calibration_line,
    document,
    failure_lines,
    outcome,
    sort_rows,
    table,
    trial_counts,
    winner_line,
)
from ..norm import parse_spec
from ..pipeline import with_overrides
from ..search import (
    BASELINES,
    IncompatibleStudy,
    StopRequest,
    WorkerTask,
    budget_used,
    check_comparable,
    optimize,
    prepare,
    run_workers,
    shares,
)
from ..settings import SettingsError
from ..space import SearchSpace, SpaceError, load_space, shipped_spaces
from ..storage import StaleLock, check_name, is_url, locate, open_study, study_names
from .app import app, fail, stderr, stdout

space_app = typer.Typer(help="Check, show and list search-space files.", no_args_is_help=True)
app.add_typer(space_app, name="space")

INTERRUPTED = 130


def _emit(renderable: Any) -> None:
    """A table on stdout; off a terminal at its natural width (a file or pipe has no width to fit)."""
    out = stdout if stdout.is_terminal else Console(soft_wrap=False, width=max(stdout.width, 200))
    out.print(renderable)


def _load(path: str) -> SearchSpace:
    """The validated space, or every problem on its own ``error:`` line and exit 2."""
    try:
        return load_space(path)
    except SpaceError as err:
        for problem in err.problems[:-1]:
            stderr.print(f"[bold red]error:[/] {problem}", highlight=False, soft_wrap=True)
        fail(err.problems[-1])


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


@space_app.command("validate")
def space_validate(path: str = typer.Argument(..., metavar="FILE", help="Space file or shipped name.")) -> None:
    """Check a space file without running anything (exit 2 with one line per problem)."""
    space = _load(path)
    entries = len(space.params)
    stdout.print(f"{path}: valid ({entries} entries, {_size_text(space)})", highlight=False)


@space_app.command("show")
def space_show(path: str = typer.Argument(..., metavar="FILE", help="Space file or shipped name.")) -> None:
    """Print the space as a table (option, Optuna parameter, values, condition) with its size."""
    space = _load(path)
    grid = Table(title=f"search space {space.name}: {_size_text(space)}", title_justify="left")
    for column in ("option", "Optuna parameter", "values", "when"):
        grid.add_column(column)
    for param in space.params:
        grid.add_row(param.option, param.name if param.kind != "fixed" else "-", param.describe(), param.condition())
    _emit(grid)
    probe, search, weights = space.probe, space.search, space.weights
    lines = [
        (f"probe: {probe.model}-{probe.depth} width {probe.width}{' skipinit' if probe.skipinit else ''}, "
         f"batch {probe.batch_size} {probe.data} {probe.resolution}px, {probe.seeds} seed(s) from {probe.seed}"),
        f"search: {search.sampler}, {search.n_trials} trials, seed {search.seed}"
        + (f", timeout {search.timeout:g}s" if search.timeout else ""),
        (f"score: {weights.similarity:g}·(−ln(1−similarity)) + {weights.step_loss_ratio:g}·ln(step ratio) + "
         f"{weights.activation_growth:g}·(B−1)·|growth| + {weights.grad_ratio:g}·|ln(grad ratio)|, "
         f"step at lr {probe.lr:g}"),
        f"baselines inside: {', '.join(_baselines_inside(space)) or 'none'}"
        + ("" if search.baselines else " (not enqueued: search.baselines is false)"),
    ]
    for line in lines:
        stdout.print(line, highlight=False)


@space_app.command("list")
def space_list() -> None:
    """The spaces shipped with normsearch (usable by name: ``--space groups``)."""
    grid = Table(title="shipped search spaces", title_justify="left")
    for column in ("name", "size", "trials", "description"):
        grid.add_column(column)
    for name in shipped_spaces():
        space = load_space(name)
        grid.add_row(name, _size_text(space), str(space.search.n_trials), space.description)
    _emit(grid)


# ------------------------------------------------------------------------------------------------------
# normsearch run


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[best]}"),
        console=stderr,
        disable=not stderr.is_terminal,
        transient=False,
    )


def _best(study: optuna.Study) -> str:
    rows = [row for row in build_rows(study) if row["state"] == "COMPLETE"]
    return f"best {rows[0]['score']:.3f} {rows[0]['config']}" if rows else ""


def _note(text: str) -> None:
    stderr.print(text, highlight=False, soft_wrap=True)


def _run_trials(space: SearchSpace, location: Any, study: optuna.Study, workers: int, timeout: float | None,
                seed: int) -> tuple[bool, list[int]]:
    """Run what is left of the budget; returns (stopped on request, worker exit codes)."""
    budget = space.search.n_trials
    remaining = budget - budget_used(study)
    stop = StopRequest()
    previous = signal.signal(signal.SIGINT, stop)
    codes: list[int] = []
    with _progress() as progress:
        task_id = progress.add_task(study.study_name, total=budget, completed=budget - remaining, best=_best(study))

        def update(*_: Any) -> None:
            progress.update(task_id, completed=min(budget_used(study, include_running=False), budget),
                            best=_best(study))

        try:
            if workers == 1:
                task = WorkerTask(space, location, budget, remaining, timeout, seed)
                optimize(task, stop, on_trial=update)
            elif remaining > 0:
                tasks = [WorkerTask(space, location, budget, share, timeout, seed + i)
                         for i, share in enumerate(shares(remaining, workers)) if share > 0]
                codes = run_workers(tasks, stop, poll=update)
            update()
        finally:
            signal.signal(signal.SIGINT, previous)
    return stop.requested, codes


@app.command("run")
def run(
    space_path: str = typer.Option(..., "--space", metavar="FILE", help="Space file, or a shipped space name."),
    study_name: str | None = typer.Option(None, "--study", help="Study name (default: the space's file name)."),
    n_trials: int | None = typer.Option(None, "--n-trials", min=1, help="Trial budget (default: the space's)."),
    timeout: float | None = typer.Option(None, "--timeout", min=0, help="Stop starting trials after S seconds."),
    seed: int | None = typer.Option(None, "--seed", min=0, help="Sampler seed (default: the space's)."),
    storage: str | None = typer.Option(None, "--storage", help="Optuna storage URL or journal file path."),
    runs_dir: str = typer.Option("runs", "--runs-dir", help="Where studies live."),
    workers: int = typer.Option(1, "--workers", min=1, help="Local processes sharing the study."),
    top: int = typer.Option(10, "--top", min=1, help="Rows of the final leaderboard."),
    no_confirm: bool = typer.Option(False, "--no-confirm", help="Skip the confirmation training."),
    model: str | None = typer.Option(None, "--model", help="Probe and confirmation network (default: the space's)."),
    data: str | None = typer.Option(None, "--data", help="Probe and confirmation data (default: the space's)."),
) -> None:
    """Search a space: probe each candidate, rank them, confirm the best, print the leaderboard.

    Running the same command again resumes the study (completed trials are kept; the budget counts them).
    """
    space = _load(space_path)
    try:
        space = with_overrides(space, n_trials=n_trials, timeout=timeout, seed=seed, model=model, data=data)
    except SettingsError as err:
        fail(f"--{err.path.rpartition('.')[2].replace('dataset', 'data')}: {err.message}")
    except DatasetUnavailable as err:
        fail(f"--data: {err}")
    name = study_name or space.name
    try:
        location = locate(check_name(name), runs_dir, storage)
    except ValueError as err:
        fail(f"--study: {err}")
    if storage is not None and not is_url(storage) and not Path(storage).parent.is_dir():
        fail(f"--storage: directory {Path(storage).parent} does not exist (a journal file path or an Optuna URL)")
    if not no_confirm:
        _check_confirm_data(space)
    try:
        prepared = prepare(space, location)
    except (IncompatibleStudy, StaleLock) as err:
        fail(str(err))
    study = prepared.study
    _report_preparation(prepared, space)
    start = time.perf_counter()
    try:
        stopped, codes = _run_trials(space, location, study, workers, space.search.timeout, space.search.seed)
    except KeyboardInterrupt:
        stopped, codes = True, []
    if stopped:
        done = budget_used(study, include_running=False)
        _note(f"interrupted after {done}/{space.search.n_trials} trials; the study is saved: run the same "
              "command again to resume")
        raise typer.Exit(INTERRUPTED)
    crashed = [f"worker {i} exited with code {c}" for i, c in enumerate(codes) if c != 0]
    if crashed:
        fail("; ".join(crashed), code=1)
    _note(f"{study.study_name}: {_counts_text(study)} in {time.perf_counter() - start:.1f}s → {location.directory}/")
    done = budget_used(study, include_running=False)
    if done < space.search.n_trials:
        _note(f"budget not used up: {done}/{space.search.n_trials} trials (the timeout, or the sampler ran out of "
              "configs); the same command goes on")
    if not no_confirm:
        from ..confirm import confirm_study

        try:
            confirm_study(study, space.confirm, space=space, console=stderr)
        except KeyboardInterrupt:
            _note(f"confirmation interrupted; what was trained is stored: `normsearch confirm {study.study_name}` "
                  "or the same run command goes on from there")
            raise typer.Exit(INTERRUPTED) from None
    _print_table(study, build_rows(study), top)


def _check_confirm_data(space: SearchSpace) -> None:
    """Load the confirmation data up front (cached for the confirm stage): a missing dataset is an input
    error before any trial runs, not after them."""
    from ..data import DatasetUnavailable, load_data

    confirm = space.confirm
    try:
        load_data(confirm.dataset, resolution=confirm.resolution, data_dir=confirm.data_dir, download=confirm.download)
    except DatasetUnavailable as err:
        fail(f"{space.path}: confirm.dataset: {err}")


def _report_preparation(prepared: Any, space: SearchSpace) -> None:
    study = prepared.study
    if not prepared.created:
        _note(f"resuming study {study.study_name}: {budget_used(study)}/{space.search.n_trials} trials done")
    differs = space.probe_differences()
    if differs:
        fields = "; ".join(f"{k} {v['probe']} vs {v['confirm']}" for k, v in differs.items())
        _note(f"note: the probes do not see the trained network (probe vs confirm: {fields}); their scores may "
              "not predict training")
    if prepared.space_changed:
        _note(f"note: the space differs from the one this study started with ({space.path}); stored the new one")
    if prepared.stale:
        _note(f"marked {len(prepared.stale)} trial(s) left running by a stopped process as failed: "
              f"{', '.join(map(str, prepared.stale))}")
    if prepared.enqueued:
        _note(f"baselines enqueued: {', '.join(prepared.enqueued)}")


def _counts_text(study: optuna.Study) -> str:
    counts = trial_counts(study)
    parts = [f"{counts.get('complete', 0)} complete"]
    parts += [f"{counts[k]} {k}" for k in ("fail", "running", "waiting") if counts.get(k)]
    return ", ".join(parts)


def _print_table(study: optuna.Study, rows: list[dict[str, Any]], top: int) -> None:
    """The leaderboard on stdout (off a terminal at its natural width: a file or pipe has no width), then the
    winner, the calibration and the training cost once the study is confirmed."""
    from ..confirm import cost_line

    _emit(table(study.study_name, rows[:top], total=len(rows)))
    result = outcome(study, rows)
    lines = [winner_line(result["winner"]), calibration_line(result["calibration"])]
    if result["training_cost"] is not None:
        lines.append(cost_line(result["training_cost"]))
    for line in filter(None, lines):
        stdout.print(line, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------------------
# normsearch leaderboard / runs


def _open(name: str | None, runs_dir: str, storage: str | None) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = open_study(name, runs_dir, storage)
        check_comparable(study)
    except ValueError as err:  # IncompatibleStudy included
        fail(str(err))
    return study


@app.command("leaderboard")
def leaderboard(
    study_name: str | None = typer.Argument(None, metavar="[STUDY]", help="Study (default: the latest)."),
    runs_dir: str = typer.Option("runs", "--runs-dir", help="Where studies live."),
    storage: str | None = typer.Option(None, "--storage", help="Optuna storage URL or journal path."),
    top: int = typer.Option(20, "--top", min=1, help="Rows to show."),
    sort: str = typer.Option("trained", "--sort", help=f"Sort field: {'|'.join(SORT_FIELDS)} (trained: the "
                             "winner first; see docs/search.md)."),
    include_failed: bool = typer.Option(False, "--all", help="Also list failed trials with their reason."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document {study, rows, ...}."),
) -> None:
    """The ranked candidates of a study: Pareto front ★, probe scores, score, confirmation, baselines."""
    if sort not in SORT_FIELDS:
        fail(f"--sort: {sort!r} is not a field; allowed: {', '.join(SORT_FIELDS)}")
    study = _open(study_name, runs_dir, storage)
    rows = sort_rows(build_rows(study, include_failed=include_failed), sort)
    if json_output:
        doc = document(study, rows, top=top)
        typer.echo(json.dumps(doc, indent=2))
        return
    _print_table(study, rows, top)
    for line in failure_lines(rows[:top]):
        stdout.print(line, highlight=False, soft_wrap=True)


@app.command("runs")
def runs(
    runs_dir: str = typer.Option("runs", "--runs-dir", help="Where studies live."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document {runs: [...]}."),
) -> None:
    """The studies under the runs directory: trial counts and best config."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    entries = []
    for name, modified in study_names(runs_dir):
        try:
            study = open_study(name, runs_dir)
            check_comparable(study)
        except ValueError as err:
            _note(f"skipped {runs_dir}/{name}: {err}")
            continue
        rows = [row for row in build_rows(study) if row["state"] == "COMPLETE"]
        entries.append({
            "study": name,
            "space": study.user_attrs.get("space", {}).get("name"),
            "trials": trial_counts(study),
            "best": rows[0]["config"] if rows else None,
            "best_score": rows[0]["score"] if rows else None,
            "modified": time.strftime("%Y-%m-%d %H:%M", time.localtime(modified)),
        })
    if json_output:
        typer.echo(json.dumps({"runs_dir": str(runs_dir), "runs": entries}, indent=2))
        return
    grid = Table(title=f"studies in {runs_dir}/", title_justify="left")
    for column in ("study", "space", "complete", "failed", "best config", "score", "modified"):
        grid.add_column(column)
    for e in entries:
        score = "-" if e["best_score"] is None else f"{e['best_score']:.3f}"
        grid.add_row(e["study"], e["space"] or "?", str(e["trials"].get("complete", 0)),
                     str(e["trials"].get("fail", 0)), e["best"] or "-", score, e["modified"])
    _emit(grid)
