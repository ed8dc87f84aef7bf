"""The pipeline as a library: space → probes → search → confirm → leaderboard / export, for Python callers.

    import normsearch
    study = normsearch.run("groups", model=my_net, data=(train, val), n_trials=20)
    study.leaderboard()[:3]        # rows as ``normsearch leaderboard --json`` has them
    study.winner                   # the NormConfig ranked first
    study.export("my_norm.py")     # the winner as standalone PyTorch code

``model`` is a model name (:mod:`normsearch.sources`) or a callable ``FUNC(norm_layer, num_classes) -> nn.Module``;
``data`` a dataset name (:mod:`normsearch.data`) or a pair of torch datasets (train, val). Both replace the
space's ``probe:`` and ``confirm:`` choices; with ``data`` the probes run at the data's own resolution.
In-memory callables and datasets exist in this process only: the study records their names, so a later
``normsearch`` command can show and export its results but not probe or train them again, and ``workers`` > 1
refuses them (:func:`check_workers`); a function defined in an importable module is shared by its name.

:func:`search_and_confirm` is the one sequence prepare → probe (here or in worker processes) → confirm, for
:func:`run` and the ``normsearch run`` / ``normsearch calibrate`` commands alike; they differ in what they
hand it: a :class:`Reporter` for progress (the CLI's draws bars and notes), whether Ctrl-C stops gracefully,
and overrides applied through :func:`with_overrides`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from rich.console import Console
from torch import nn

from .candidate import as_candidate
from .confirm import confirm_study
from .data import DatasetUnavailable, load_data, register_data
from .data import in_process_only as data_in_process_only
from .export import Provenance, export_source
from .leaderboard import build_rows, sort_rows
from .norm import NormConfig
from .search import (
    Prepared,
    StopRequest,
    WorkerTask,
    budget_used,
    optimize,
    prepare,
    run_workers,
    wait_for_running,
)
from .settings import SettingsError, from_mapping
from .sources import ModelUnavailable, register_model, resolve_model
from .sources import in_process_only as model_in_process_only
from .space import SearchSpace, load_space
from .storage import StudyLocation, check_name, locate, open_study


def with_overrides(
    space: SearchSpace,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    seed: int | None = None,
    model: str | None = None,
    data: str | None = None,
    confirm: Mapping[str, Any] | None = None,
) -> SearchSpace:
    """``space`` with the given search settings, model (probe and confirm), data (probe inputs at the data's
    resolution, and confirmation data at its own) and ``confirm:`` settings replaced; ``None`` keeps the
    space's. The probe settings the ``probe:`` section leaves out follow the new confirmation settings
    (:meth:`SearchSpace.with_confirm`). Invalid values raise :class:`~normsearch.settings.SettingsError`."""
    search = {"n_trials": n_trials, "timeout": timeout, "seed": seed}
    space = dataclasses.replace(
        space, search=dataclasses.replace(space.search, **{k: v for k, v in search.items() if v is not None})
    )
    confirm_settings = dataclasses.asdict(space.confirm)
    if model is not None:
        confirm_settings["model"] = model
    if data is not None:
        confirm_settings["dataset"], confirm_settings["resolution"] = data, None
    confirm_settings.update(confirm or {})
    space = space.with_confirm(from_mapping(type(space.confirm), confirm_settings, "confirm"))
    probe = dataclasses.asdict(space.probe)
    if model is not None:
        probe["model"] = model
    if data is not None:
        probe["data"], probe["resolution"] = data, load_data(data).resolution
    return dataclasses.replace(space, probe=from_mapping(type(space.probe), probe, "probe"))


@dataclass(frozen=True)
class Study:
    """A normsearch study: its leaderboard, winner and exports. ``optuna`` is the underlying Optuna study."""

    optuna: optuna.Study

    @classmethod
    def open(
        cls, name: str | None = None, *, runs_dir: str | Path = "runs", storage: str | None = None
    ) -> Study:
        """An existing study (default: the latest under ``runs_dir``); ``ValueError`` if there is none."""
        return cls(open_study(name, runs_dir, storage))

    @property
    def name(self) -> str:
        return self.optuna.study_name

    def leaderboard(self, *, sort: str = "trained", include_failed: bool = False) -> list[dict[str, Any]]:
        """The ranked rows (dicts as in ``normsearch leaderboard --json``), sorted by ``sort`` (default as the
        leaderboard: trained candidates first, best at the highest budget)."""
        return sort_rows(build_rows(self.optuna, include_failed=include_failed), sort)

    def _row(self, rank: int) -> dict[str, Any]:
        ranked = [row for row in build_rows(self.optuna) if row.get("rank") is not None]
        found = [row for row in ranked if row["rank"] == rank]
        if not found:
            raise ValueError(f"study {self.name!r} ranks {len(ranked)} trial(s); no rank {rank}")
        return found[0]

    @property
    def winner(self) -> NormConfig:
        """The config ranked first: the best trained candidate when any was trained, else the best score
        (what ``normsearch export`` picks by default)."""
        return as_candidate(self._row(1)["config"]).layer

    def export(self, path: str | Path | None = None, *, rank: int = 1, class_name: str | None = None) -> str:
        """The standalone module of the config at ``rank`` (:func:`normsearch.export.export_source`, with
        this study as provenance); written to ``path`` when given. Returns the source."""
        row = self._row(rank)
        source = export_source(
            as_candidate(row["config"]).layer,
            class_name=class_name,
            provenance=Provenance.of(self.optuna, row),
        )
        if path is not None:
            Path(path).write_text(source)
        return source


class Reporter:
    """What :func:`search_and_confirm` reports as it goes. Every hook does nothing here; ``normsearch run`` and
    ``normsearch calibrate`` render them on the terminal (subclasses in :mod:`normsearch.cli`)."""

    def prepared(self, prepared: Prepared) -> None:
        """The study is created or resumed (stale trials failed, baselines enqueued); no trial has run yet."""

    @contextlib.contextmanager
    def searching(self, study: optuna.Study, budget: int, remaining: int) -> Iterator[Callable[[], None]]:
        """Around the search stage (``remaining`` of ``budget`` trials left); yields the function called after
        each trial of this process and while worker processes run."""
        yield lambda: None

    def searched(self, study: optuna.Study, seconds: float) -> None:
        """The search stage ended without a stop request: the budget is used, the timeout passed, or the
        sampler ran out of configs (``seconds``: its wall time)."""


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C (or SIGTERM) stopped ``stage`` (``"search"`` or ``"confirm"``) of :func:`search_and_confirm`;
    everything finished before is stored in ``study`` and the same call resumes it."""

    def __init__(self, stage: str, study: optuna.Study) -> None:
        super().__init__(f"{stage} interrupted")
        self.stage, self.study = stage, study


class WorkersFailed(RuntimeError):
    """Search worker processes exited with these ``codes`` (one per worker); 2 means the worker printed one
    ``error:`` line saying why (:func:`~normsearch.search.run_workers`)."""

    def __init__(self, codes: list[int]) -> None:
        super().__init__("; ".join(f"worker {i} exited with code {c}" for i, c in enumerate(codes) if c != 0))
        self.codes = codes

    @property
    def explained(self) -> bool:
        """Whether every failed worker said why (exit code 2) and none crashed."""
        return all(c in (0, 2) for c in self.codes)


def check_workers(space: SearchSpace, workers: int) -> None:
    """``ValueError`` when ``workers`` > 1 would need a model or dataset that exists in this process only
    (:func:`~normsearch.sources.register_model`, :func:`~normsearch.data.register_data`): worker processes
    are started fresh (``spawn``) and cannot see it. The message names the fix."""
    if workers <= 1:
        return
    if model_in_process_only(space.probe.model):
        raise ValueError(
            f"workers={workers}: model {space.probe.model!r} exists in this process only and the workers are new "
            "processes; define the function in an importable module (it is then named module:FUNC and "
            "shared) or give it as 'FILE.py:FUNC', or use workers=1"
        )
    if data_in_process_only(space.probe.data):
        raise ValueError(
            f"workers={workers}: data {space.probe.data!r} (in-memory datasets) exists in this process only and "
            "the workers are new processes; give it as 'FILE.py:FUNC' returning (train, val), or use workers=1"
        )


def _check_models(space: SearchSpace, confirm: bool) -> None:
    """``SettingsError`` at ``probe.model`` / ``confirm.model`` for a ``python:`` model that another process
    registered (:class:`~normsearch.sources.ModelUnavailable`): it stops here, before any trial, not in each."""
    sections = (("probe", space.probe), ("confirm", space.confirm)) if confirm else (("probe", space.probe),)
    for section, settings in sections:
        try:
            resolve_model(settings.model)
        except ModelUnavailable as err:
            raise SettingsError(f"{section}.model", str(err)) from None


def _check_confirm_data(space: SearchSpace) -> None:
    """Load the confirmation data up front (cached for the confirm stage): a missing dataset is an input
    error before any trial runs, not after them. ``SettingsError`` at ``confirm.dataset`` saying why."""
    confirm = space.confirm
    try:
        load_data(
            confirm.dataset,
            resolution=confirm.resolution,
            data_dir=confirm.data_dir,
            download=confirm.download,
        )
    except DatasetUnavailable as err:
        raise SettingsError("confirm.dataset", str(err)) from None


def _search(
    space: SearchSpace,
    location: StudyLocation,
    study: optuna.Study,
    *,
    workers: int,
    exhaustive: bool,
    interruptible: bool,
    reporter: Reporter,
    finish: bool = False,
) -> None:
    """Run what is left of the budget here (``workers`` = 1) or in ``workers`` spawned processes, together
    with any other processes on the study; ``finish``: then wait for the trials other processes still run
    (the confirmation that follows reads the finished study). Raises :class:`Interrupted` or
    :class:`WorkersFailed`."""
    budget = space.search.n_trials
    remaining = budget - budget_used(study)
    timeout = None if exhaustive else space.search.timeout
    task = WorkerTask(space, location, budget, timeout, space.search.seed)
    stop = StopRequest()
    previous = signal.signal(signal.SIGINT, stop) if interruptible else None
    codes: list[int] = []
    start = time.perf_counter()
    try:
        with reporter.searching(study, budget, remaining) as update:
            if workers == 1:
                optimize(task, stop, on_trial=lambda *_: update())
            elif remaining > 0:
                codes = run_workers([task] * min(workers, remaining), stop, poll=update)
            if finish and not any(codes):  # other processes' last trials: the study is then whole
                wait_for_running(study, stop, update)
            update()
    except KeyboardInterrupt:
        raise Interrupted("search", study) from None
    finally:
        if interruptible:
            signal.signal(signal.SIGINT, previous)
    if stop.requested:
        raise Interrupted("search", study)
    if any(codes):
        raise WorkersFailed(codes)
    reporter.searched(study, time.perf_counter() - start)


def search_and_confirm(
    space: SearchSpace,
    location: StudyLocation,
    *,
    workers: int = 1,
    confirm: bool = True,
    exhaustive: bool = False,
    interruptible: bool = False,
    reporter: Reporter | None = None,
    console: Console | None = None,
) -> optuna.Study:
    """The pipeline on a validated ``space`` and study ``location``; returns the Optuna study.

    1. check the input: the models can be built here and the confirmation data loads (``confirm``),
       workers can build the model (:func:`check_workers`);
    2. create or resume the study (:func:`~normsearch.search.prepare`);
    3. probe candidates until the space's budget is used, counting other processes' trials
       (:func:`~normsearch.search.optimize` here, or ``workers`` spawned processes:
       :func:`~normsearch.search.run_workers`);
    4. unless ``confirm`` is false, train the selected candidates (:func:`~normsearch.confirm.confirm_study`
       with ``space.confirm``, progress on ``console``, default none).

    ``exhaustive``: every candidate is probed (no timeout) and trained at the final budget at every learning
    rate (``normsearch calibrate``). ``interruptible``: the first SIGINT during the search stops it after the
    running trials, the second interrupts them (call from the main thread). Progress goes to ``reporter``.
    Raises :class:`~normsearch.settings.SettingsError` (bad ``confirm.dataset``, a ``python:`` model
    registered in another process), ``ValueError``
    (:func:`check_workers`), :class:`~normsearch.search.IncompatibleStudy`,
    :class:`~normsearch.storage.StorageError`, :class:`Interrupted` (nothing runs after it) and
    :class:`WorkersFailed`.
    """
    reporter = reporter or Reporter()
    check_workers(space, workers)
    _check_models(space, confirm)
    if confirm:
        _check_confirm_data(space)
    prepared = prepare(space, location)
    reporter.prepared(prepared)
    study = prepared.study
    _search(
        space,
        location,
        study,
        workers=workers,
        exhaustive=exhaustive,
        interruptible=interruptible,
        reporter=reporter,
        finish=confirm,
    )
    if confirm:
        try:
            confirm_study(
                study,
                space.confirm,
                console=console or Console(quiet=True),
                exhaustive=exhaustive,
            )
        except KeyboardInterrupt:
            raise Interrupted("confirm", study) from None
    return study


def run(
    space: str | Path | SearchSpace = "groups",
    *,
    model: str | Callable[..., nn.Module] | None = None,
    data: str | tuple[Any, Any] | None = None,
    study: str | None = None,
    storage: str | None = None,
    runs_dir: str | Path = "runs",
    n_trials: int | None = None,
    timeout: float | None = None,
    seed: int | None = None,
    workers: int = 1,
    confirm: bool | Mapping[str, Any] = True,
    reporter: Callable[[SearchSpace, StudyLocation], Reporter] | None = None,
    console: Console | None = None,
) -> Study:
    """Search ``space`` (a shipped name, a YAML path or a :class:`SearchSpace`) and return the :class:`Study`
    (named after ``normsearch run``; ``normsearch.search`` is the Optuna search module).

    Probes every drawn candidate on ``model`` with ``data`` (see the module docstring), in this process or in
    ``workers`` processes, then, unless ``confirm`` is false, trains the selected candidates (``confirm`` may
    be a mapping of ``confirm:`` settings to change, e.g. ``{"epochs": 1, "top_k": 2}``). The study is
    ``study`` (default: the space's name) in ``storage`` (an Optuna URL or journal path; default
    ``runs_dir/NAME/journal.log``); calling again resumes it. The search's progress goes to
    ``reporter(space, location)`` and the confirmation's to ``console`` (default: none of either;
    :func:`normsearch.run` passes those of ``normsearch run``).
    Raises :class:`~normsearch.space.SpaceError`, :class:`~normsearch.settings.SettingsError` or
    ``ValueError`` for bad input (before anything is written; ``workers`` > 1 with an in-memory model or
    data: :func:`check_workers`), :class:`~normsearch.search.IncompatibleStudy` for a study probed with other
    settings, :class:`Interrupted` (a ``KeyboardInterrupt``) on Ctrl-C; :func:`search_and_confirm` does the work.
    """
    if not isinstance(space, SearchSpace):
        space = load_space(str(space))
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")
    model_name = register_model(model) if callable(model) else model
    data_name = register_data(*data) if isinstance(data, tuple) else data
    space = with_overrides(
        space, n_trials=n_trials, timeout=timeout, seed=seed, model=model_name, data=data_name,
        confirm=confirm if isinstance(confirm, Mapping) else None,
    )  # fmt: skip
    location = locate(check_name(study or space.name), runs_dir, storage)
    return Study(
        search_and_confirm(
            space,
            location,
            workers=workers,
            confirm=confirm is not False,
            reporter=None if reporter is None else reporter(space, location),
            console=console,
        )
    )


__all__ = [
    "Interrupted",
    "Reporter",
    "Study",
    "WorkersFailed",
    "check_workers",
    "run",
    "search_and_confirm",
    "with_overrides",
]
