"""The search: an Optuna study whose trials draw a config from the space and score it with the probes.

Every trial is probed (:class:`~normsearch.probes.ProbeResult`), then filtered and ranked as
:mod:`normsearch.score` says: a config that cannot train is *rejected* (:func:`~normsearch.score.rejection`),
with the reason as user attr ``rejected`` (None when it passes) and the Optuna constraint ``rejected`` = 1, so
``best_trials`` and the constrained samplers treat it as infeasible; the study minimises
:data:`~normsearch.score.OBJECTIVES`, and the scalar ``score`` orders the survivors. What a trial stores:
:class:`normsearch.records.TrialRecord`; what the study stores: :class:`normsearch.records.StudyRecord`.

Studies made with other objectives (:data:`OBJECTIVES_VERSION`) or an unknown record schema
(:data:`~normsearch.records.SCHEMA_VERSION`) do not compare and are refused on resume.

One trial (:class:`Objective`):

1. draw options from the space; a contradictory combination fails the trial (``fail_reason``);
2. canonical config string (the candidate's: layer spec and network options,
   :class:`~normsearch.models.CandidateConfig`) → user attr ``config``; a config already scored in this
   study reuses that trial's result (``duplicate_of``), so repeated samples cost nothing (the same layer
   with other network options is another config); a config another process is probing
   right now is waited for, then reused (:meth:`Objective._claim`: a claim through the storage);
3. probe it with the process's one :class:`~normsearch.probes.ProbeRunner` (inputs cached across trials);
   a config that does not fit the network (ValueError) or any exception fails the trial with its reason;
4. store ``probe`` (scores, stds, reason, rounded curves), ``seconds``, ``score``, ``rejected``; an unstable
   pass (NaN/inf) completes with its capped worst scores and the constraints ``unstable`` = ``rejected`` = 1
   (infeasible, :func:`set_constraints`), so Optuna's ``best_trials`` and constrained samplers skip it, and
   optuna-dashboard shows it infeasible, while the leaderboard still shows it.

Budget: ``n_trials`` counts every finished trial of the study except interrupted ones (left RUNNING by a
killed process, failed by the heartbeat, or stopped by a second Ctrl-C), so rerunning the same command
resumes and completes it. Any number of processes, on any machines, may run on one study: each goes on until
the study holds ``n_trials`` counted or running trials. Trial numbers order the trials of a study in every
Optuna storage, so a trial that finds ``n_trials`` such trials numbered before it (two processes that took
the last slot at once) is the one too many: it is recorded PRUNED with ``surplus`` = true, which does not
count, and its process stops. ``--workers N`` spawns N such processes on one machine.

Seeds: the sampler is re-made for each trial with a seed drawn from (``search.seed``, trial number)
(:class:`TrialSeeded`): one process reproduces its trials from the seed, and processes on one study never
draw from the same random state.

Stopping: the first Ctrl-C (SIGINT; SIGTERM in workers) lets the running trial finish, then stops; a second
one interrupts the trial, which is recorded FAIL with ``interrupted`` = true.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import optuna
import torch
from optuna.samplers import BaseSampler, BruteForceSampler, NSGAIISampler, RandomSampler, TPESampler
from optuna.study._constrained_optimization import _CONSTRAINTS_KEY
from optuna.trial import FixedTrial, FrozenTrial, Trial, TrialState

from . import __version__
from .allocator import keep_freed_memory
from .failures import describe_failure
from .norm import parse_spec
from .probes import ProbeResult, ProbeRunner
from .records import (
    PREPARED_KEY,
    SCHEMA_VERSION,
    STUDY_FIELDS,
    IncompatibleStudy,
    ProbeRecord,
    StudyRecord,
    TrialRecord,
    check_schema,
    trial_attrs,
    trial_score,
    write,
)
from .score import MAX_STEP_LOSS_RATIO, OBJECTIVES, OBJECTIVES_VERSION, objective_values, rejection
from .settings import SettingsError
from .space import SearchSettings, SearchSpace, format_options
from .space.fit import probe_channels
from .storage import (
    StudyLocation,
    create_or_load,
    fail_silent_trials,
    fail_stale_trials,
    is_url,
    masked,
    worker_id,
)

CLAIM_POLL_S = 0.2
"""How often a trial waiting for another process's probe of the same config looks again."""
PREPARE_WAIT_S = 20.0
"""How long a process that finds a study without settings waits for its creator to store them."""

METRIC_NAMES = list(OBJECTIVES)
"""The study's metric names (``study.set_metric_names``): what each objective value is, for Optuna's
dataframes and plots and optuna-dashboard."""
CONSTRAINTS = ("unstable", "rejected")
"""The trial constraints (feasible when ≤ 0), in the order of the list stored by :func:`set_constraints`."""
SPACE_TEXT = "normsearch:space:"
"""Study system attr prefix: ``normsearch:space:<sha256>`` holds the text of that space file, once."""
DIRECTIONS = ["minimize"] * len(OBJECTIVES)
BASELINES = {
    "bn": "bn",
    "ln": "ln",
    "in": "in",
    "gn": "gn",
    **{f"gn C/G={k}": f"gn:group_size={k}" for k in (2, 4, 8, 16, 32)},
}
"""The classic layers enqueued when they fall inside the space: BN, LN, IN, and GN as the paper runs it
(its default 32 groups, and its group sizes 2…32)."""
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


class CandidateFailed(Exception):
    """A candidate that cannot be scored; its trial is recorded FAIL with this reason and the run goes on."""


# ------------------------------------------------------------------------------------------------------
# Samplers


def _tpe(settings: SearchSettings, seed: int) -> BaseSampler:
    with warnings.catch_warnings():  # `group` is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return TPESampler(
            seed=seed,
            n_startup_trials=settings.startup_trials,
            multivariate=True,
            group=True,
            constant_liar=True,
        )


def _brute_force(settings: SearchSettings, seed: int) -> BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return BruteForceSampler(seed=seed)


SAMPLER_FACTORIES: dict[str, Callable[[SearchSettings, int], BaseSampler]] = {
    "tpe": _tpe,
    "random": lambda settings, seed: RandomSampler(seed=seed),
    "nsga2": lambda settings, seed: NSGAIISampler(seed=seed),
    "brute_force": _brute_force,
}


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number`` of a study searched with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeeded(BaseSampler):
    """A sampler re-made before each trial with :func:`trial_seed` (study seed, trial number).

    Trial numbers are unique in a study, so processes sharing it never sample from the same random state,
    whatever machine they run on; a single process still reproduces the same trials from the same seed.
    """

    def __init__(self, factory: Callable[[int], BaseSampler], seed: int) -> None:
        self._factory = factory
        self._seed = seed
        self._sampler = factory(seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._sampler = self._factory(trial_seed(self._seed, trial.number))
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()


def make_sampler(settings: SearchSettings, seed: int) -> BaseSampler:
    """The sampler named by ``settings.sampler``, re-seeded per trial from ``seed`` (:class:`TrialSeeded`)."""
    factory = SAMPLER_FACTORIES[settings.sampler]
    return TrialSeeded(lambda trial_seed_: factory(settings, trial_seed_), seed)


# ------------------------------------------------------------------------------------------------------
# Trial records


def compact(result: ProbeResult) -> dict[str, Any]:
    """The ``probe`` user attr: :class:`~normsearch.records.ProbeRecord` of a probe result, as a mapping."""
    return ProbeRecord.of(result).attr()


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Finished trials count, except those interrupted by a killed process or a forced stop, those failed from
    outside a worker (no ``fail_reason``: Optuna's heartbeat, which enqueues a retry), and surplus ones."""
    record = TrialRecord.of(trial)
    if trial.state not in FINISHED or record.interrupted or record.surplus:
        return False
    return trial.state != TrialState.FAIL or record.fail_reason is not None


def budget_used(study: optuna.Study, include_running: bool = True) -> int:
    """Trials that count toward ``n_trials`` (plus, by default, those running now)."""
    trials = study.get_trials(deepcopy=False)
    used = sum(counts_toward_budget(t) for t in trials)
    return used + (sum(t.state == TrialState.RUNNING for t in trials) if include_running else 0)


def set_constraints(trial: Trial, **values: float) -> None:
    """Store the trial's constraints (names from :data:`CONSTRAINTS`, a name left out is 0: feasible) as one
    list in the ``constraints`` system attr, in :data:`CONSTRAINTS` order: the form optuna-dashboard reads,
    and Optuna's samplers, ``best_trials`` and ``trial.constraints`` (keys "0", "1", …) too. Optuna 5's
    ``Trial.set_constraint`` stores named keys instead, which the dashboard does not show."""
    unknown = set(values) - set(CONSTRAINTS)
    if unknown:
        raise ValueError(f"unknown constraint(s) {sorted(unknown)}; allowed: {', '.join(CONSTRAINTS)}")
    listed = [float(values.get(name, 0.0)) for name in CONSTRAINTS]
    trial.storage.set_trial_system_attr(trial._trial_id, _CONSTRAINTS_KEY, listed)


def named_constraints(trial: FrozenTrial) -> dict[str, float]:
    """A trial's constraints by name (:data:`CONSTRAINTS`), read back from Optuna's positional keys."""
    return {
        name: trial.constraints[str(i)] for i, name in enumerate(CONSTRAINTS) if str(i) in trial.constraints
    }


class Objective:
    """The function a study optimizes: draw, dedupe, probe, record (see the module docstring).

    ``budget``: the study's trial budget; a trial beyond it is pruned as ``surplus`` (None: no limit).
    """

    def __init__(
        self, space: SearchSpace, runner: ProbeRunner | None = None, budget: int | None = None
    ) -> None:
        self.space = space
        self.runner = runner or ProbeRunner(space.probe)
        self.budget = budget
        self._backoff = random.Random()  # claim back-off only: not part of what a seed reproduces
        self._seen: list[FrozenTrial] = []  # the study as read when the trial started

    def __call__(self, trial: Trial) -> list[float]:
        write(trial.set_user_attr, worker=worker_id())
        self._seen = trial.study.get_trials(
            deepcopy=False
        )  # one read for the budget and the claim's first look
        if self.budget is not None and self._ahead(trial, self._seen) >= self.budget:
            write(trial.set_user_attr, surplus=True)
            trial.study.stop()
            raise optuna.TrialPruned("surplus: the study's budget was taken by other processes")
        if "baseline" not in trial.user_attrs:
            write(trial.set_user_attr, baseline=False)
        try:
            return self._evaluate(trial)
        except KeyboardInterrupt:
            write(trial.set_user_attr, fail_reason="interrupted (Ctrl-C)", interrupted=True)
            raise
        except OSError as err:  # the storage could not be written (a full disk): not the candidate's fault
            with contextlib.suppress(OSError):  # recorded if there is room (the short record first)
                write(trial.set_user_attr, interrupted=True, fail_reason=f"interrupted: {err}")
            raise

    def _evaluate(self, trial: Trial) -> list[float]:
        options = self.space.sample(trial)
        try:
            candidate = self.space.candidate(options)
        except ValueError as err:
            write(trial.set_user_attr, config=format_options(options))
            self._fail(trial, f"invalid config: {err}")
        spec = candidate.spec()
        write(trial.set_user_attr, config=spec)
        earlier = self._claim(trial, spec)
        if earlier is not None:
            return self._reuse(trial, earlier)
        start = time.perf_counter()
        try:
            result = self.runner.run(candidate)
        except ValueError as err:
            self._fail(trial, f"does not fit the probe network: {err}")
        except Exception as err:  # noqa: BLE001 - one candidate's crash must not stop the search
            self._fail(trial, f"{type(err).__name__}: {err}")
        record = compact(result)
        return self._record(trial, record, time.perf_counter() - start)

    def _record(self, trial: Trial, record: dict[str, Any], seconds: float) -> list[float]:
        rejected = rejection(record, lr=self.space.probe.lr)
        write(
            trial.set_user_attr,
            probe=record,
            seconds=round(seconds, 4),
            score=self.space.weights.score(record, blocks=record["blocks"]),
            rejected=rejected,
        )
        set_constraints(
            trial, unstable=1.0 if record["unstable"] else 0.0, rejected=0.0 if rejected is None else 1.0
        )
        return objective_values(record)

    @staticmethod
    def _ahead(trial: Trial, trials: list[FrozenTrial]) -> int:
        """Trials numbered before this one that hold a slot of the budget (counted, running or waiting)."""
        return sum(
            other.number < trial.number
            and (other.state in (TrialState.RUNNING, TrialState.WAITING) or counts_toward_budget(other))
            for other in trials
        )

    def _claim(self, trial: Trial, spec: str) -> FrozenTrial | None:
        """The earlier trial whose result this one reuses, or None once this trial holds the claim to probe.

        The claim is the user attr ``probing`` on a RUNNING trial, taken in two phases: with no other
        claimant in sight, set it, then look again; if another claimant appeared meanwhile, drop it and retry
        after a random pause. Each process's write reaches the storage before its next read, so two
        claimants cannot both miss each other. While another trial holds the claim this one waits (failing
        stale trials, so a dead claimant's config is taken over), then reuses that trial's result. The first
        look may use the read made when the trial started; the look after setting the claim is always fresh.
        """
        seen = self._seen
        while True:
            earlier, claimed = self._others(trial, spec, seen or trial.study.get_trials(deepcopy=False))
            seen = []
            if earlier is not None:
                return earlier
            if not claimed:
                write(trial.set_user_attr, probing=True)
                earlier, claimed = self._others(trial, spec, trial.study.get_trials(deepcopy=False))
                if earlier is not None:  # finished while this trial looked the other way: reuse it
                    return earlier
                if not claimed:
                    return None
                write(trial.set_user_attr, probing=False)
                time.sleep(self._backoff.uniform(0.05, 0.5))
                continue
            time.sleep(CLAIM_POLL_S)
            fail_stale_trials(trial.study)  # a claimant killed on this host
            fail_silent_trials(trial.study)  # one that stopped beating elsewhere (RDB storages)

    @staticmethod
    def _others(trial: Trial, spec: str, trials: list[FrozenTrial]) -> tuple[FrozenTrial | None, bool]:
        """Among ``trials``: (the first other trial of ``spec`` that completed or failed for a reason of its
        own, whether another RUNNING trial of ``spec`` holds the claim to probe it)."""
        earlier, claimed = None, False
        for other in trials:
            record = TrialRecord.of(other)
            if other.number == trial.number or record.config != spec:
                continue
            if earlier is None and (
                other.state == TrialState.COMPLETE
                or (
                    other.state == TrialState.FAIL
                    and record.fail_reason is not None
                    and not record.interrupted
                )
            ):
                earlier = other
            claimed = claimed or (other.state == TrialState.RUNNING and record.probing is True)
        return earlier, claimed

    def _reuse(self, trial: Trial, earlier: FrozenTrial) -> list[float]:
        write(trial.set_user_attr, duplicate_of=earlier.number)
        record = TrialRecord.of(earlier)
        if earlier.state == TrialState.FAIL:
            self._fail(trial, record.fail_reason)
        return self._record(trial, record.probe, 0.0)

    @staticmethod
    def _fail(trial: Trial, reason: str) -> NoReturn:
        write(trial.set_user_attr, fail_reason=reason)
        raise CandidateFailed(reason)


# ------------------------------------------------------------------------------------------------------
# Preparing a study


def study_attrs(space: SearchSpace) -> dict[str, Any]:
    """What a study stores about its space as user attrs (:class:`~normsearch.records.StudyRecord`), so later
    commands work without the YAML file. The space file's text is stored once per version, as a system attr
    (:func:`store_space_text`), to keep the user attrs (one row of ``optuna studies``) short."""
    return StudyRecord(
        normsearch=__version__,
        space={"name": space.name, "path": space.path, "sha256": space.sha256},
        constraints=list(CONSTRAINTS),
        probe=dataclasses.asdict(space.probe),
        confirm=dataclasses.asdict(space.confirm),
        weights=dataclasses.asdict(space.weights),
        search=dataclasses.asdict(space.search),
        objectives=list(OBJECTIVES),
        objectives_version=OBJECTIVES_VERSION,
        probe_matches_confirm=not space.probe_differences(),
        probe_differs=space.probe_differences(),
        schema_version=SCHEMA_VERSION,
    ).attrs()


def check_comparable(study: optuna.Study) -> None:
    """Raise :class:`IncompatibleStudy` unless this normsearch reads the study's records
    (:func:`~normsearch.records.check_schema`) and it was scored with this version's objectives."""
    check_schema(study)
    version = study.user_attrs.get("objectives_version", 1)
    if version != OBJECTIVES_VERSION:
        stored = ", ".join(study.user_attrs.get("objectives") or [])
        raise IncompatibleStudy(
            f"study {study.study_name!r} was scored with older objectives (version {version}"
            f"{': ' + stored if stored else ''}); this "
            f"normsearch scores version {OBJECTIVES_VERSION} ({', '.join(OBJECTIVES)}, with filters): the results "
            "would not compare; use another --study name"
        )


def store_space_text(study: optuna.Study, space: SearchSpace) -> None:
    """Keep the space file's text in the study, once per version (system attr ``SPACE_TEXT + sha256``)."""
    storage, study_id = study._storage, study._study_id  # Optuna has no public study system attrs
    key = SPACE_TEXT + space.sha256
    if key not in storage.get_study_system_attrs(study_id):
        storage.set_study_system_attr(study_id, key, space.text)


def space_text(study: optuna.Study) -> str | None:
    """The text of the space file the study was last prepared with, or None if it is not stored."""
    sha = (study.user_attrs.get("space") or {}).get("sha256")
    return study._storage.get_study_system_attrs(study._study_id).get(SPACE_TEXT + str(sha))


def _check_compatible(study: optuna.Study, space: SearchSpace) -> None:
    stored = study.user_attrs.get("probe")
    if stored is None:
        raise IncompatibleStudy(
            f"study {study.study_name!r} was not made by normsearch run (no probe settings)"
        )
    check_comparable(study)
    current = dataclasses.asdict(space.probe)
    changed = [f"probe.{k}: {stored.get(k)!r} → {v!r}" for k, v in current.items() if stored.get(k) != v]
    if changed:
        raise IncompatibleStudy(
            f"study {study.study_name!r} was probed with other settings ({'; '.join(changed)}): its scores "
            "would not compare; use another study name (--study NAME; in Python, normsearch.run(study=NAME)) "
            "or restore them"
        )


def _existing(location: StudyLocation) -> optuna.Study | None:
    """The study at ``location`` if it exists (loading it writes nothing), else None."""
    if not is_url(location.storage) and not Path(location.storage).exists():
        return None
    try:
        return optuna.load_study(study_name=location.name, storage=location.open())
    except KeyError:
        return None


@dataclass(frozen=True)
class Prepared:
    """A study ready to run: whether it was new, what stale trials were failed, what was enqueued."""

    study: optuna.Study
    created: bool
    stale: list[int]
    enqueued: list[str]
    space_changed: bool


def enqueue_baselines(study: optuna.Study, space: SearchSpace, lost_only: bool = False) -> list[str]:
    """Enqueue each :data:`BASELINES` layer inside the space that has no trial yet; returns their names.
    A known layer is enqueued with the network's default options where the ``network:`` section allows them
    (:meth:`~normsearch.space.SearchSpace.params_for`).

    Trials that were interrupted do not count, so a baseline lost to a killed run is enqueued again.
    ``lost_only``: only those (a resumed study whose space did not change: its creator enqueued the rest).
    """
    baselines = [t for t in study.get_trials(deepcopy=False) if TrialRecord.of(t).baseline]
    tried = {TrialRecord.of(t).config for t in baselines}
    have = {
        TrialRecord.of(t).config
        for t in baselines
        if t.state in (TrialState.WAITING, TrialState.RUNNING) or counts_toward_budget(t)
    }
    enqueued = []
    for name, spec in BASELINES.items():
        params = space.params_for(parse_spec(spec))
        if not params:
            continue
        config = space.candidate(space.sample(FixedTrial(params))).spec()
        if config in have or (lost_only and config not in tried):
            continue
        have.add(config)
        study.enqueue_trial(params, user_attrs=trial_attrs(baseline=True, baseline_name=name, config=config))
        enqueued.append(name)
    return enqueued


def check_network(space: SearchSpace) -> None:
    """Raise :class:`~normsearch.settings.SettingsError` (``probe.model``) when the probe network cannot be
    built even with BatchNorm, which fits any channel count: a builder that returns no ``nn.Module``, a model
    without a norm slot. Every candidate would fail on it, so it is said once, before the first trial (a
    space file is checked so at load; a ``--model`` or ``model=`` given later is checked here)."""
    try:
        probe_channels(space.probe)
    except ValueError as err:
        raise SettingsError(
            "probe.model", f"{err}; every candidate would fail on it, so none was probed"
        ) from None


def prepare(space: SearchSpace, location: StudyLocation) -> Prepared:
    """Create or resume the study: check its probe network (:func:`check_network`) and probe settings, store
    the space, fail stale trials, enqueue baselines. Raises :class:`IncompatibleStudy` for a study probed with
    other settings, :class:`~normsearch.settings.SettingsError` for a network no candidate can be probed on;
    nothing is written before these checks."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are recorded, not logged
    check_network(space)
    existing = _existing(location)
    if existing is not None and _foreign(existing):  # refused before anything is written to it
        raise IncompatibleStudy(
            f"study {location.name!r} ({masked(location.storage)}) was not made by normsearch run (its objectives: "
            f"{', '.join(d.name.lower() for d in existing.directions)}), left as it is; use another --study name"
        )
    if existing is not None and _wait_for_creator(existing):  # checked before anything is written
        _check_compatible(existing, space)
    study, created = create_or_load(location, DIRECTIONS)
    fresh = created or not _wait_for_creator(study)
    changed = False
    if not fresh:
        _check_compatible(study, space)
        changed = study.user_attrs.get("space", {}).get("sha256") != space.sha256
    stale = fail_stale_trials(study)
    enqueued = (
        enqueue_baselines(study, space, lost_only=not (fresh or changed)) if space.search.baselines else []
    )
    store_space_text(study, space)
    with warnings.catch_warnings():  # metric names are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if study.metric_names != METRIC_NAMES:
            study.set_metric_names(METRIC_NAMES)
    for key, value in study_attrs(space).items():  # last, and PREPARED_KEY last of them: it marks the study
        if fresh or study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    return Prepared(study, created, stale, enqueued, changed)


def _foreign(study: optuna.Study) -> bool:
    """Whether another program made the study: none of a normsearch study's settings, and other objectives
    (a study whose normsearch creator has not stored its settings yet has this version's objectives)."""
    other = [d.name for d in study.directions] != [d.upper() for d in DIRECTIONS]
    return other and not STUDY_FIELDS & set(study.user_attrs)


def _wait_for_creator(study: optuna.Study, seconds: float = PREPARE_WAIT_S) -> bool:
    """Whether the study is prepared (its settings stored), waiting up to ``seconds`` for the process that
    created it a moment ago; False: its creator died before, and this process prepares it."""
    deadline = time.monotonic() + seconds
    while PREPARED_KEY not in study.user_attrs:  # read from the storage each time
        if time.monotonic() > deadline:
            return False
        time.sleep(CLAIM_POLL_S)
    return True


# ------------------------------------------------------------------------------------------------------
# Running


class StopRequest:
    """Signal handler: the first signal asks to stop after the running trial; the second interrupts it."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def install(self, *signals: int) -> None:
        for sig in signals:
            signal.signal(sig, self)


@dataclass(frozen=True)
class WorkerTask:
    """What one worker process needs (picklable): the space, where the study is, the budget and limits.

    ``threads``: torch threads while probing. One: the probe networks are too small to gain from intra-op
    threads, and on a busy machine two threads per process ran 3.5× slower at the median (0.50 s vs 0.14 s
    per config, groups.yaml probe settings, 2 cores); parallelism comes from ``--workers`` instead.
    """

    space: SearchSpace
    location: StudyLocation
    budget: int
    timeout: float | None
    seed: int
    threads: int = 1


def optimize(
    task: WorkerTask, stop: StopRequest, on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None
) -> optuna.Study:
    """Run trials in this process until the study holds ``task.budget`` (counting other processes' trials),
    the timeout, the sampler's end, or a stop request."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are recorded, not logged
    study = optuna.load_study(
        study_name=task.location.name,
        storage=task.location.open(),
        sampler=make_sampler(task.space.search, task.seed),
    )

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        if on_trial is not None:
            on_trial(study, trial)
        if stop.requested or budget_used(study) >= task.budget:
            study.stop()

    if budget_used(study) < task.budget and not stop.requested:
        threads = torch.get_num_threads()
        torch.set_num_threads(task.threads)
        try:
            study.optimize(
                Objective(task.space, budget=task.budget),
                timeout=task.timeout,
                catch=(CandidateFailed,),
                callbacks=[after_trial],
            )
        finally:
            torch.set_num_threads(threads)
    return study


def wait_for_running(study: optuna.Study, stop: StopRequest, poll: Callable[[], None] | None = None) -> None:
    """Return once no trial of the study is RUNNING in another process (here or elsewhere) or a stop is
    requested: what follows the search (confirmation) then reads the finished study, not one that depends on
    which process finished first. A dead process's trial is failed meanwhile (:func:`fail_stale_trials`, and
    the heartbeat on RDB storages), so this never waits on it for ever."""

    def elsewhere() -> bool:  # this process's own search is over: a RUNNING trial of its own was cut short
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return any(TrialRecord.of(t).worker != worker_id() for t in running)

    while not stop.requested and elsewhere():
        if poll is not None:
            poll()
        time.sleep(CLAIM_POLL_S)
        fail_stale_trials(study)
        fail_silent_trials(study)


def _stop_when_parent_dies() -> None:
    """SIGTERM this worker (a graceful stop: the running trial finishes) when its parent process dies, even by
    SIGKILL: a thread waits on the parent's sentinel, a pipe that closes when the parent exits."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _worker_main(task: WorkerTask) -> None:
    """Entry point of a spawned worker: graceful stop on SIGTERM (also sent when the parent dies); SIGINT is the
    parent's to forward. The allocator keeps freed memory (:mod:`normsearch.allocator`)."""
    keep_freed_memory()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = StopRequest()
    stop.install(signal.SIGTERM)
    _stop_when_parent_dies()
    try:
        optimize(task, stop)
    except KeyboardInterrupt:  # a second SIGTERM: the trial is recorded as interrupted
        raise SystemExit(130) from None
    except Exception as err:  # a full disk, a read-only journal...: one line, not a traceback
        message = describe_failure(err)
        if message is None:
            raise
        print(f"error: worker {worker_id()}: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def run_workers(
    tasks: list[WorkerTask], stop: StopRequest, poll: Callable[[], None], interval: float = 0.5
) -> list[int]:
    """Spawn one process per task, call ``poll`` while they run, forward stop requests as SIGTERM.

    Returns the exit codes.
    """
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_main, args=(task,), daemon=False) for task in tasks]
    for process in processes:
        process.start()
    forwarded = False
    try:
        while any(p.is_alive() for p in processes):
            if stop.requested and not forwarded:  # the first Ctrl-C: finish the running trials, then stop
                _terminate(processes)
                forwarded = True
            poll()
            time.sleep(interval)
    except KeyboardInterrupt:  # a second Ctrl-C: interrupt the workers' trials too (their second SIGTERM)
        if not forwarded:
            _terminate(processes)
        _terminate(processes)
        for process in processes:
            process.join()
        raise
    poll()
    return [p.exitcode for p in processes]


def _terminate(processes: list[Any]) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)


__all__ = [
    "BASELINES",
    "CONSTRAINTS",
    "DIRECTIONS",
    "MAX_STEP_LOSS_RATIO",
    "METRIC_NAMES",
    "OBJECTIVES",
    "OBJECTIVES_VERSION",
    "CandidateFailed",
    "IncompatibleStudy",
    "Objective",
    "Prepared",
    "StopRequest",
    "TrialSeeded",
    "WorkerTask",
    "budget_used",
    "check_comparable",
    "check_network",
    "compact",
    "counts_toward_budget",
    "enqueue_baselines",
    "make_sampler",
    "named_constraints",
    "objective_values",
    "optimize",
    "prepare",
    "rejection",
    "run_workers",
    "set_constraints",
    "space_text",
    "store_space_text",
    "study_attrs",
    "trial_score",
    "trial_seed",
    "wait_for_running",
]
