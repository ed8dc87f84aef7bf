"""Confirmation work units, queued and claimed through a companion Optuna study on the search's storage.

A unit is one training run: candidate ``config`` (its string: the layer spec and the network options the
network is trained with, :class:`~normsearch.models.CandidateConfig`, so they are part of the unit's key) ×
``epochs`` (its rung's budget) × learning rate ``lr`` ×
``seed`` × ``batch_size`` (None: the settings' batch), under the study's other training settings
(:func:`training_settings`). The companion study ``<study>.confirm`` (same storage, one objective,
maximised) holds one trial per unit:

- **queued**: :meth:`UnitQueue.complete` enqueues each missing unit as a WAITING trial whose user attrs are
  the unit's fields, ``training`` (the digest of the training settings) and ``key`` (all of them);
- **claimed**: a process takes a WAITING trial by setting it RUNNING with the storage call that
  ``Study.ask()`` uses to pop a waiting trial (atomic in journal and RDB storages: one process wins, the
  others move on), and records ``worker`` = ``host:pid``. It claims only units it asked for (``ask()``
  would pop any waiting trial, or create a new one when none is left). A unit queued twice (two processes
  that found it missing at once) is trained once: the extra WAITING trial is claimed and recorded PRUNED
  with ``surplus`` = true;
- **run**: each epoch's validation metric is reported as an intermediate value (``trial.report``: the
  training curve); the trial then completes with value = its best over epochs and user attr ``run``. The
  study maximises, so the values are the task's metric signed so that higher is better: accuracy, or
  −val_loss (bits per byte) for a language model (:func:`~normsearch.confirm.results.ranking_value`'s sign).
  A rung of E epochs trains at most :func:`~normsearch.confirm.settings.rung_steps` steps when ``steps`` is
  set (a text epoch is thousands of steps: ``steps`` caps the last rung, earlier ones a share of it).
  ``run`` is the :class:`~normsearch.train.TrainResult` record: ``train_loss``, ``val_accuracy``, ``diverged``,
  ``collapsed``, ``steps``, ``batch_size``, ``device`` (``cuda:N`` with its index), ``seconds``,
  ``images_per_s``), or fails with ``fail_reason``: a config that does not fit the network is not retried; a
  run stopped by Ctrl-C or a kill (``interrupted``) is queued again on the next call.

A completed unit is never retrained: every later call, in any process, reuses it by its key. Units whose
worker is gone are taken over: a RUNNING unit of a dead process on this host is failed as interrupted
(:func:`normsearch.storage.fail_stale_trials`); on RDB storages a unit beats while it trains (Optuna's
heartbeat thread, every ``--heartbeat`` S seconds), and one silent for 2 × S (a machine that died or hangs) is
failed with ``fail_reason`` "interrupted: worker host:pid stopped sending heartbeats …" and retried
(:func:`normsearch.storage.fail_silent_trials`). Either way it is queued again and claimed by a live process;
a suspended worker that wakes up finds its unit failed and leaves it. Units running in live processes are
waited for, so several processes can share one rung.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from ..data import load_data
from ..storage import COMPANION_SUFFIX, fail_silent_trials, fail_stale_trials, heartbeat_thread, worker_id
from ..task import task_of
from ..train import Progress, train
from .settings import ConfirmSettings, rung_steps

SUFFIX = COMPANION_SUFFIX
"""The companion study of search study S is named S + SUFFIX."""
PER_UNIT = ("epochs", "min_epochs", "lr", "lr_factors", "seed")
"""ConfirmSettings fields that a unit fixes itself (its rung's epochs, its learning rate and seed)."""
NOT_TRAINING = (
    "top_k",
    "explore",
    "eta",
    "baselines",
    "default",
    "max_cost",
    "random",
    "seeds",
    "data_dir",
    "download",
    "device",
    "threads",
    "channels_last",
    "compile",
    "small_batch",
    *PER_UNIT,
)
"""ConfirmSettings fields that choose candidates, rungs, seeds or hardware, not how a unit is trained."""
POLL_S = 1.0


def training_settings(settings: ConfirmSettings) -> dict[str, Any]:
    """The fields that, with a unit's own fields, define its numbers (units are reused only if they match)."""
    return {k: v for k, v in dataclasses.asdict(settings).items() if k not in NOT_TRAINING}


def training_digest(settings: ConfirmSettings) -> str:
    """A short, stable digest of :func:`training_settings`."""
    text = json.dumps(training_settings(settings), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Unit:
    """One training run of a candidate (see the module docstring); ``trial``: the search trial it stands for."""

    trial: int
    config: str
    epochs: int
    lr: float
    seed: int
    batch_size: int | None = None

    def key(self, training: str) -> str:
        """The unit's identity under training-settings digest ``training`` (the search trial is not part of it)."""
        return f"{training}|{self.config}|e{self.epochs}|lr{self.lr!r}|s{self.seed}|b{self.batch_size}"


def metric_sign(settings: ConfirmSettings) -> float:
    """+1 when the task of ``settings.dataset`` is judged by a higher-is-better metric (accuracy), −1 for a
    loss (val_loss): the factor that makes a unit's values higher-is-better for the maximising study."""
    data = load_data(
        settings.dataset,
        resolution=settings.resolution,
        data_dir=settings.data_dir,
        download=settings.download,
    )
    return 1.0 if task_of(data).higher_is_better else -1.0


def companion_name(study_name: str) -> str:
    return study_name + SUFFIX


def companion(study: optuna.Study, *, create: bool = True) -> optuna.Study | None:
    """The companion study of ``study`` on the same storage (created if missing, unless ``create`` is off)."""
    name = companion_name(study.study_name)
    if create:
        return optuna.create_study(
            study_name=name, storage=study._storage, direction="maximize", load_if_exists=True
        )
    try:
        return optuna.load_study(study_name=name, storage=study._storage)
    except KeyError:
        return None


def unit_trials(queue_study: optuna.Study, training: str) -> list[FrozenTrial]:
    """The COMPLETE unit trials of training digest ``training``, first per key."""
    seen: dict[str, FrozenTrial] = {}
    for trial in queue_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.user_attrs.get("training") == training:
            seen.setdefault(trial.user_attrs["key"], trial)
    return list(seen.values())


Started = Callable[[Unit], Progress | None]
"""Called when this process starts a unit; returns its progress callback (or None)."""
Finished = Callable[[Unit, FrozenTrial], None]
"""Called when this process finishes a unit (COMPLETE or FAIL)."""


class UnitQueue:
    """The units of one training setup in the companion study of a search study."""

    def __init__(self, study: optuna.Study, settings: ConfirmSettings) -> None:
        self.study = companion(study)
        self.settings = settings
        self.training = training_digest(settings)

    def _attrs(self, unit: Unit) -> dict[str, Any]:
        return {**dataclasses.asdict(unit), "training": self.training, "key": unit.key(self.training)}

    def complete(
        self,
        units: Sequence[Unit],
        *,
        started: Started = lambda unit: None,
        finished: Finished = lambda unit, trial: None,
    ) -> dict[str, FrozenTrial]:
        """Run every unit of ``units`` that has no result yet (here or in another process) and wait for all.

        Returns key → finished trial (COMPLETE, or FAIL with a reason of the config's own) for each unit.
        """
        wanted = {unit.key(self.training): unit for unit in units}
        while True:
            fail_stale_trials(self.study)  # units of dead processes on this host
            fail_silent_trials(
                self.study
            )  # units of workers that stopped beating, on any host (RDB storages)
            by_state, surplus = self._by_state(wanted)
            self._close(surplus)
            done = by_state[TrialState.COMPLETE] | by_state[TrialState.FAIL]
            running = by_state[TrialState.RUNNING]
            waiting = [
                t for key, t in by_state[TrialState.WAITING].items() if key not in done and key not in running
            ]
            if waiting:
                self._claim_and_run(waiting, wanted, started, finished)
                continue
            missing = [
                key
                for key in wanted
                if key not in done and key not in running and key not in by_state[TrialState.WAITING]
            ]
            if missing:
                for key in missing:
                    self.study.enqueue_trial({}, user_attrs=self._attrs(wanted[key]), skip_if_exists=False)
                continue
            if not running:
                return done
            time.sleep(POLL_S)  # units another live process is training

    def _by_state(
        self, wanted: dict[str, Unit]
    ) -> tuple[dict[TrialState, dict[str, FrozenTrial]], list[FrozenTrial]]:
        """For each state, key → first trial of the wanted keys (FAIL: only failures that are not retried); and
        the surplus WAITING trials: those of a key that another trial holds (done, running, or waiting first)."""
        out: dict[TrialState, dict[str, FrozenTrial]] = {s: {} for s in TrialState}
        waiting: list[FrozenTrial] = []
        for trial in self.study.get_trials(deepcopy=False):
            key = trial.user_attrs.get("key")
            if key not in wanted or (
                trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted", True)
            ):
                continue
            if trial.state == TrialState.WAITING:
                waiting.append(trial)
            out[trial.state].setdefault(key, trial)
        held = out[TrialState.COMPLETE] | out[TrialState.FAIL] | out[TrialState.RUNNING]
        surplus = [
            t
            for t in waiting
            if t.user_attrs["key"] in held or out[TrialState.WAITING][t.user_attrs["key"]] is not t
        ]
        return out, surplus

    def _claim(self, trial: FrozenTrial) -> bool:
        """Take a WAITING trial for this process: False when another process took it first."""
        try:
            return self.study._storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING)
        except UpdateFinishedTrialError:
            return False

    def _close(self, surplus: Iterable[FrozenTrial]) -> None:
        """Claim each surplus waiting unit (two processes that queued one unit at once, or a retry of a unit that
        was queued again meanwhile) and record it PRUNED with ``surplus`` = true: it never trains."""
        for trial in surplus:
            if self._claim(trial):
                self.study._storage.set_trial_user_attr(trial._trial_id, "surplus", True)
                self.study._storage.set_trial_state_values(trial._trial_id, TrialState.PRUNED)

    def _claim_and_run(
        self, waiting: Iterable[FrozenTrial], wanted: dict[str, Unit], started: Started, finished: Finished
    ) -> None:
        for trial in waiting:
            if self._claim(trial):
                self._run(trial._trial_id, wanted[trial.user_attrs["key"]], started, finished)
                return

    def _run(self, trial_id: int, unit: Unit, started: Started, finished: Finished) -> None:
        """Train a claimed unit while beating (:func:`~normsearch.storage.heartbeat_thread`). A unit that another
        process failed meanwhile (this one stopped beating, e.g. suspended) is left to the retry."""
        trial = optuna.Trial(self.study, trial_id)
        with heartbeat_thread(self.study, trial_id):
            try:
                trial.set_user_attr("worker", worker_id())
            except (
                UpdateFinishedTrialError
            ):  # failed as stale by another process in the instant after the claim
                return
            try:
                frozen = self._train(trial, unit, started)
            except UpdateFinishedTrialError:
                frozen = self.study._storage.get_trial(trial_id)
        finished(unit, frozen)

    def _train(self, trial: optuna.Trial, unit: Unit, started: Started) -> FrozenTrial:
        settings = dataclasses.replace(
            self.settings,
            epochs=unit.epochs,
            min_epochs=min(self.settings.min_epochs, unit.epochs),
            lr=unit.lr,
            steps=rung_steps(self.settings, unit.epochs),
        )
        try:
            sign = metric_sign(settings)
            result = train(
                unit.config,
                settings,
                seed=unit.seed,
                batch_size=unit.batch_size,
                progress=started(unit),
                on_epoch=lambda epoch, value: trial.report(sign * value, epoch),
            )
        except ValueError as err:
            trial.set_user_attr("fail_reason", f"does not fit the network: {err}")
            trial.set_user_attr("interrupted", False)
            return self._tell(trial, state=TrialState.FAIL)
        except BaseException:
            with contextlib.suppress(UpdateFinishedTrialError):
                trial.set_user_attr("fail_reason", "interrupted")
                trial.set_user_attr("interrupted", True)
                self._tell(trial, state=TrialState.FAIL)
            raise
        record = result.to_dict()
        record.pop("spec")
        if record["device"] == "cuda":  # the current device (a --devices worker sets it)
            record["device"] = f"cuda:{torch.cuda.current_device()}"
        trial.set_user_attr("run", record)
        return self._tell(trial, sign * result.value)

    def _tell(
        self, trial: optuna.Trial, value: float | None = None, state: TrialState = TrialState.COMPLETE
    ) -> FrozenTrial:
        """Finish ``trial``; UpdateFinishedTrialError when another process failed it first."""
        frozen = self.study.tell(trial, value, state=state, skip_if_finished=True)
        if frozen.state != state:
            raise UpdateFinishedTrialError(f"unit trial {trial.number} was failed by another process")
        return frozen


__all__ = [
    "SUFFIX",
    "Unit",
    "UnitQueue",
    "companion",
    "companion_name",
    "metric_sign",
    "training_digest",
    "training_settings",
    "unit_trials",
]
