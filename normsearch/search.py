"""The search: an Optuna study whose trials draw a config from the space and score it with the probes.

Every trial is probed (:class:`~normsearch.probes.ProbeResult`: ``activation_growth`` a, ``similarity`` s,
``grad_ratio`` g, ``step_loss_ratio`` r on B block outputs), then

- **filtered** (:func:`rejection`): a config that cannot train is *rejected*, with the reason as user attr
  ``rejected`` (None when it passes) and the Optuna constraint ``rejected`` = 1, so ``best_trials`` and
  the constrained samplers treat it as infeasible. Rejected: NaN/inf or a collapse in any probe pass; the
  activation variance changing by more than ×B (or ÷B) across the B block outputs, i.e. faster than the
  linear growth of a normalized ResNet, |(B − 1)·a| > ln B; one SGD step that raises the loss by more than
  :data:`MAX_STEP_LOSS_RATIO`; an early-layer gradient more than 2^(B−1) times (or below 1/2^(B−1) of) the
  last one, |ln g| > (B − 1)·ln 2 (a catastrophe filter only: the gradient ratio predicted accuracy
  backwards, and InstanceNorm, the most learning-rate tolerant layer measured, has the largest one);
- **ranked**: the study minimises :data:`OBJECTIVES` (s and r, :func:`objective_values`), the two probes that
  predicted trained accuracy; the scalar ``score`` (:meth:`~normsearch.space.ScoreWeights.score`, lower is
  better) orders the survivors. Why these, with the measurements: docs/confirm.md, "Evidence for the score".

Studies made with other objectives (:data:`OBJECTIVES_VERSION`) do not compare and are refused on resume.

One trial (:class:`Objective`):

1. draw options from the space; a contradictory combination fails the trial (``fail_reason``);
2. canonical config string → user attr ``config``; a config already scored in this study reuses that
   trial's result (``duplicate_of``), so repeated samples cost nothing;
3. probe it with the process's one :class:`~normsearch.probes.ProbeRunner` (inputs cached across trials);
   a config that does not fit the network (ValueError) or any exception fails the trial with its reason;
4. store ``probe`` (scores, stds, reason, rounded curves), ``seconds``, ``score``, ``rejected``; an unstable
   pass (NaN/inf) completes with its capped worst scores and the constraints ``unstable`` = ``rejected`` = 1
   (infeasible, :func:`set_constraints`), so Optuna's ``best_trials`` and constrained samplers skip it, and
   optuna-dashboard shows it infeasible, while the leaderboard still shows it.

Budget: ``n_trials`` counts every finished trial of the study except interrupted ones (left RUNNING by a
killed process, or stopped by a second Ctrl-C), so rerunning the same command resumes and completes it. With
``--workers N`` the parent splits what is left into N shares, one per spawned process on the same storage.

Stopping: the first Ctrl-C (SIGINT; SIGTERM in workers) lets the running trial finish, then stops; a second
one interrupts the trial, which is recorded FAIL with ``interrupted`` = true.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import optuna
import torch
from optuna.samplers import BaseSampler, BruteForceSampler, NSGAIISampler, RandomSampler, TPESampler
from optuna.study._constrained_optimization import _CONSTRAINTS_KEY
from optuna.trial import FrozenTrial, Trial, TrialState

from . import __version__
from .failures import describe_failure
from .norm import parse_spec
from .probes import SCORES, ProbeResult, ProbeRunner
from .space import ScoreWeights, SearchSettings, SearchSpace, format_options
from .storage import StudyLocation, create_or_load, fail_stale_trials, is_url, worker_id

OBJECTIVES = ("similarity", "step_loss_ratio")
"""The probe scores the study minimises, in order (see :func:`objective_values`)."""
OBJECTIVES_VERSION = 2
"""Stored with each study; version 1 minimised |activation_growth|, similarity, max(g, 1/g) with no filters."""
METRIC_NAMES = list(OBJECTIVES)
"""The study's metric names (``study.set_metric_names``): what each objective value is, for Optuna's
dataframes and plots and optuna-dashboard."""
CONSTRAINTS = ("unstable", "rejected")
"""The trial constraints (feasible when ≤ 0), in the order of the list stored by :func:`set_constraints`."""
SPACE_TEXT = "normsearch:space:"
"""Study system attr prefix: ``normsearch:space:<sha256>`` holds the text of that space file, once."""
DIRECTIONS = ["minimize"] * len(OBJECTIVES)
MAX_STEP_LOSS_RATIO = 1.05
"""Rejection limit of the one-step loss ratio (see docs/confirm.md, "Evidence for the score")."""
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


class IncompatibleStudy(ValueError):
    """The study exists with settings whose scores would not compare with this space's."""


# ------------------------------------------------------------------------------------------------------
# Samplers


def _tpe(settings: SearchSettings, seed: int) -> BaseSampler:
    with warnings.catch_warnings():  # `group` is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return TPESampler(
            seed=seed, n_startup_trials=settings.startup_trials, multivariate=True, group=True, constant_liar=True
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


def make_sampler(settings: SearchSettings, seed: int) -> BaseSampler:
    """The sampler named by ``settings.sampler``, seeded with ``seed``."""
    return SAMPLER_FACTORIES[settings.sampler](settings, seed)


# ------------------------------------------------------------------------------------------------------
# Trial records


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def compact(result: ProbeResult) -> dict[str, Any]:
    """The ``probe`` user attr: scores and stds, instability, seeds, blocks, curves at 4 significant digits."""
    record = {name: getattr(result, name) for name in SCORES}
    record.update({f"{name}_std": _round(getattr(result, f"{name}_std")) for name in SCORES})
    record.update(
        unstable=result.unstable,
        reason=result.reason,
        seeds=result.seeds,
        blocks=len(result.curves.get("variance", [])),
        curves={key: [_round(v) for v in values] for key, values in result.curves.items()},
    )
    return record


def objective_values(scores: Mapping[str, float]) -> list[float]:
    """What the study minimises, from probe scores: [similarity, step_loss_ratio] (both already finite
    and capped by the probes)."""
    return [float(scores[name]) for name in OBJECTIVES]


def rejection(record: Mapping[str, Any], *, lr: float) -> str | None:
    """Why a probed config cannot train (the module docstring's filters, first that applies), or None.

    ``record``: the ``probe`` user attr (:func:`compact`); ``lr``: the learning rate of the step probe."""
    if record["unstable"]:
        return f"unstable at init: {record['reason']}"
    blocks = record["blocks"]
    total = (blocks - 1) * record["activation_growth"]
    if abs(total) > math.log(blocks):
        change = "explode" if total > 0 else "collapse"
        return (f"activations {change}: variance ×{math.exp(total):.3g} over {blocks} block outputs "
                f"(limit ×{blocks} either way: linear growth)")
    step = record["step_loss_ratio"]
    if step > MAX_STEP_LOSS_RATIO:
        return (f"one SGD step at lr {lr:g} multiplies the loss by {step:.3g} (limit {MAX_STEP_LOSS_RATIO:g}): "
                "does not train at this learning rate")
    ratio = record["grad_ratio"]
    if abs(math.log(max(ratio, 1e-300))) > (blocks - 1) * math.log(2):
        return (f"early-layer gradient ×{ratio:.3g} of the last conv's (limit 2^{blocks - 1} either way: "
                "doubling per block)")
    return None


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Finished trials count, except those interrupted by a killed process or a forced stop."""
    return trial.state in FINISHED and not trial.user_attrs.get("interrupted", False)


def budget_used(study: optuna.Study, include_running: bool = True) -> int:
    """Trials that count toward ``n_trials`` (plus, by default, those running now)."""
    trials = study.get_trials(deepcopy=False)
    used = sum(counts_toward_budget(t) for t in trials)
    return used + (sum(t.state == TrialState.RUNNING for t in trials) if include_running else 0)


def trial_score(trial: FrozenTrial, weights: ScoreWeights) -> float:
    """The scalar score of a COMPLETE trial: :meth:`ScoreWeights.score` of its probe record."""
    probe = trial.user_attrs["probe"]
    return weights.score(probe, blocks=probe["blocks"])


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
    return {name: trial.constraints[str(i)] for i, name in enumerate(CONSTRAINTS) if str(i) in trial.constraints}


class Objective:
    """The function a study optimizes: draw, dedupe, probe, record (see the module docstring)."""

    def __init__(self, space: SearchSpace, runner: ProbeRunner | None = None) -> None:
        self.space = space
        self.runner = runner or ProbeRunner(space.probe)

    def __call__(self, trial: Trial) -> list[float]:
        trial.set_user_attr("worker", worker_id())
        if "baseline" not in trial.user_attrs:
            trial.set_user_attr("baseline", False)
        try:
            return self._evaluate(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
            trial.set_user_attr("interrupted", True)
            raise
        except OSError as err:  # the storage could not be written (a full disk): not the candidate's fault
            with contextlib.suppress(OSError):  # recorded if there is room (the short record first)
                trial.set_user_attr("interrupted", True)
                trial.set_user_attr("fail_reason", f"interrupted: {err}")
            raise

    def _evaluate(self, trial: Trial) -> list[float]:
        options = self.space.sample(trial)
        try:
            cfg = self.space.config(options)
        except ValueError as err:
            trial.set_user_attr("config", format_options(options))
            self._fail(trial, f"invalid config: {err}")
        spec = cfg.spec()
        trial.set_user_attr("config", spec)
        earlier = self._earlier(trial, spec)
        if earlier is not None:
            return self._reuse(trial, earlier)
        start = time.perf_counter()
        try:
            result = self.runner.run(cfg)
        except ValueError as err:
            self._fail(trial, f"does not fit the probe network: {err}")
        except Exception as err:  # noqa: BLE001 - one candidate's crash must not stop the search
            self._fail(trial, f"{type(err).__name__}: {err}")
        record = compact(result)
        return self._record(trial, record, time.perf_counter() - start)

    def _record(self, trial: Trial, record: dict[str, Any], seconds: float) -> list[float]:
        rejected = rejection(record, lr=self.space.probe.lr)
        trial.set_user_attr("probe", record)
        trial.set_user_attr("seconds", round(seconds, 4))
        trial.set_user_attr("score", self.space.weights.score(record, blocks=record["blocks"]))
        trial.set_user_attr("rejected", rejected)
        set_constraints(trial, unstable=1.0 if record["unstable"] else 0.0, rejected=0.0 if rejected is None else 1.0)
        return objective_values(record)

    def _earlier(self, trial: Trial, spec: str) -> FrozenTrial | None:
        """The first earlier trial of this config that completed, or failed for a reason of its own."""
        for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
            if other.number == trial.number or other.user_attrs.get("config") != spec:
                continue
            if other.state == TrialState.COMPLETE or (
                "fail_reason" in other.user_attrs and not other.user_attrs.get("interrupted")
            ):
                return other
        return None

    def _reuse(self, trial: Trial, earlier: FrozenTrial) -> list[float]:
        trial.set_user_attr("duplicate_of", earlier.number)
        if earlier.state == TrialState.FAIL:
            self._fail(trial, earlier.user_attrs["fail_reason"])
        return self._record(trial, earlier.user_attrs["probe"], 0.0)

    @staticmethod
    def _fail(trial: Trial, reason: str) -> NoReturn:
        trial.set_user_attr("fail_reason", reason)
        raise CandidateFailed(reason)


# ------------------------------------------------------------------------------------------------------
# Preparing a study


def study_attrs(space: SearchSpace) -> dict[str, Any]:
    """What a study stores about its space as user attrs, so later commands work without the YAML file. The
    space file's text is stored once per version, as a system attr (:func:`store_space_text`), to keep the
    user attrs (one row of ``optuna studies``) short."""
    return {
        "normsearch": __version__,
        "space": {"name": space.name, "path": space.path, "sha256": space.sha256},
        "constraints": list(CONSTRAINTS),
        "probe": dataclasses.asdict(space.probe),
        "confirm": dataclasses.asdict(space.confirm),
        "weights": dataclasses.asdict(space.weights),
        "search": dataclasses.asdict(space.search),
        "objectives": list(OBJECTIVES),
        "objectives_version": OBJECTIVES_VERSION,
        "probe_matches_confirm": not space.probe_differences(),
        "probe_differs": space.probe_differences(),
    }


def check_comparable(study: optuna.Study) -> None:
    """Raise :class:`IncompatibleStudy` unless the study was scored with this version's objectives."""
    version = study.user_attrs.get("objectives_version", 1)
    if version != OBJECTIVES_VERSION:
        stored = ", ".join(study.user_attrs.get("objectives") or ["?"])
        raise IncompatibleStudy(
            f"study {study.study_name!r} was scored with older objectives (version {version}: {stored}); this "
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
        raise IncompatibleStudy(f"study {study.study_name!r} was not made by normsearch run (no probe settings)")
    check_comparable(study)
    current = dataclasses.asdict(space.probe)
    changed = [f"probe.{k}: {stored.get(k)!r} → {v!r}" for k, v in current.items() if stored.get(k) != v]
    if changed:
        raise IncompatibleStudy(
            f"study {study.study_name!r} was probed with other settings ({'; '.join(changed)}): its scores "
            "would not compare; use another --study name or restore them"
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


def enqueue_baselines(study: optuna.Study, space: SearchSpace) -> list[str]:
    """Enqueue each :data:`BASELINES` layer inside the space that has no trial yet; returns their names.

    Trials that were interrupted do not count, so a baseline lost to a killed run is enqueued again.
    """
    have = {
        t.user_attrs.get("config")
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("baseline")
        and (t.state in (TrialState.WAITING, TrialState.RUNNING) or counts_toward_budget(t))
    }
    enqueued = []
    for name, spec in BASELINES.items():
        cfg = parse_spec(spec)
        params = space.params_for(cfg)
        if not params or cfg.spec() in have:
            continue
        have.add(cfg.spec())
        study.enqueue_trial(params, user_attrs={"baseline": True, "baseline_name": name, "config": cfg.spec()})
        enqueued.append(name)
    return enqueued


def prepare(space: SearchSpace, location: StudyLocation) -> Prepared:
    """Create or resume the study: check its probe settings, store the space, fail stale trials, enqueue
    baselines. Raises :class:`IncompatibleStudy` for a study probed with other settings."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are recorded, not logged
    existing = _existing(location)
    if existing is not None:  # checked before anything is written
        _check_compatible(existing, space)
    study, created = create_or_load(location, DIRECTIONS)
    changed = False
    if not created:
        changed = study.user_attrs.get("space", {}).get("sha256") != space.sha256
    for key, value in study_attrs(space).items():
        if created or study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    store_space_text(study, space)
    with warnings.catch_warnings():  # metric names are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if study.metric_names != METRIC_NAMES:
            study.set_metric_names(METRIC_NAMES)
    stale = fail_stale_trials(study)
    enqueued = enqueue_baselines(study, space) if space.search.baselines else []
    return Prepared(study, created, stale, enqueued, changed)


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
    """What one worker process needs (picklable): the space, where the study is, its share and limits.

    ``threads``: torch threads while probing. One: the probe networks are too small to gain from intra-op
    threads, and on a busy machine two threads per process ran 3.5× slower at the median (0.50 s vs 0.14 s
    per config, groups.yaml probe settings, 2 cores); parallelism comes from ``--workers`` instead.
    """

    space: SearchSpace
    location: StudyLocation
    budget: int
    share: int
    timeout: float | None
    seed: int
    threads: int = 1


def optimize(
    task: WorkerTask, stop: StopRequest, on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None
) -> optuna.Study:
    """Run up to ``task.share`` trials in this process, stopping early at the study budget or on request."""
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

    if task.share > 0 and not stop.requested:
        threads = torch.get_num_threads()
        torch.set_num_threads(task.threads)
        try:
            study.optimize(
                Objective(task.space),
                n_trials=task.share,
                timeout=task.timeout,
                catch=(CandidateFailed,),
                callbacks=[after_trial],
            )
        finally:
            torch.set_num_threads(threads)
    return study


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
    parent's to forward."""
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


def shares(remaining: int, workers: int) -> list[int]:
    """Split ``remaining`` trials into ``workers`` shares that differ by at most one."""
    return [remaining // workers + (i < remaining % workers) for i in range(workers)]


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
    "WorkerTask",
    "budget_used",
    "check_comparable",
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
    "shares",
    "space_text",
    "store_space_text",
    "study_attrs",
    "trial_score",
]
