"""Confirmation work units, queued and claimed through a companion Optuna study on the search's storage.

A unit is one training run: candidate ``config`` × ``epochs`` (its rung's budget) × learning rate ``lr`` ×
``seed`` × ``batch_size`` (None: the settings' batch), under the study's other training settings
(:func:`training_settings`). The companion study ``<study>.confirm`` (same storage, one objective,
maximised) holds one trial per unit:

- **queued**: :meth:`UnitQueue.complete` enqueues each missing unit as a WAITING trial whose user attrs are
  the unit's fields, ``training`` (the digest of the training settings) and ``key`` (all of them);
- **claimed**: a process takes a WAITING trial by setting it RUNNING with the storage call that
  ``Study.ask()`` uses to pop a waiting trial (atomic in journal and RDB storages: one process wins, the
  others move on), and records ``worker`` = ``host:pid``. It claims only units it asked for (``ask()``
  would pop any waiting trial, or create a new one when none is left);
- **run**: each epoch's validation accuracy is reported as an intermediate value (``trial.report``: the
  training curve); the trial then completes with value = best validation accuracy and user attr ``run``
  (the :class:`~normsearch.train.TrainResult` record: ``train_loss``, ``val_accuracy``, ``diverged``,
  ``collapsed``, ``steps``, ``batch_size``, ``seconds``, ``images_per_s``), or fails with ``fail_reason``:
  a config that does not fit the network is not retried; a run stopped by Ctrl-C or a kill (``interrupted``)
  is queued again on the next call.

A completed unit is never retrained: every later call, in any process, reuses it by its key. A RUNNING
unit of a dead local process is failed as interrupted (:func:`normsearch.storage.fail_stale_trials`) and
queued again; units running in live processes are waited for, so several processes can share one rung.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from ..storage import COMPANION_SUFFIX, fail_stale_trials, worker_id
from ..train import Progress, train
from .settings import ConfirmSettings

SUFFIX = COMPANION_SUFFIX
"""The companion study of search study S is named S + SUFFIX."""
PER_UNIT = ("epochs", "min_epochs", "lr", "lr_factors", "seed")
"""ConfirmSettings fields that a unit fixes itself (its rung's epochs, its learning rate and seed)."""
NOT_TRAINING = ("top_k", "explore", "eta", "baselines", "random", "seeds", "data_dir", "download", "device",
                "threads", "channels_last", "compile", "small_batch", *PER_UNIT)
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


def companion_name(study_name: str) -> str:
    return study_name + SUFFIX


def companion(study: optuna.Study, *, create: bool = True) -> optuna.Study | None:
    """The companion study of ``study`` on the same storage (created if missing, unless ``create`` is off)."""
    name = companion_name(study.study_name)
    if create:
        return optuna.create_study(study_name=name, storage=study._storage, direction="maximize", load_if_exists=True)
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

    def complete(self, units: Sequence[Unit], *, started: Started = lambda unit: None,
                 finished: Finished = lambda unit, trial: None) -> dict[str, FrozenTrial]:
        """Run every unit of ``units`` that has no result yet (here or in another process) and wait for all.

        Returns key → finished trial (COMPLETE, or FAIL with a reason of the config's own) for each unit.
        """
        wanted = {unit.key(self.training): unit for unit in units}
        while True:
            fail_stale_trials(self.study)
            by_state = self._by_state(wanted)
            done = by_state[TrialState.COMPLETE] | by_state[TrialState.FAIL]
            running = by_state[TrialState.RUNNING]
            waiting = [t for key, t in by_state[TrialState.WAITING].items() if key not in done and key not in running]
            if waiting:
                self._claim_and_run(waiting, wanted, started, finished)
                continue
            missing = [key for key in wanted if key not in done and key not in running
                       and key not in by_state[TrialState.WAITING]]
            if missing:
                for key in missing:
                    self.study.enqueue_trial({}, user_attrs=self._attrs(wanted[key]), skip_if_exists=False)
                continue
            if not running:
                return done
            time.sleep(POLL_S)  # units another live process is training

    def _by_state(self, wanted: dict[str, Unit]) -> dict[TrialState, dict[str, FrozenTrial]]:
        """For each state, key → first trial of the wanted keys (FAIL: only failures that are not retried)."""
        out: dict[TrialState, dict[str, FrozenTrial]] = {s: {} for s in TrialState}
        for trial in self.study.get_trials(deepcopy=False):
            key = trial.user_attrs.get("key")
            if key not in wanted or (trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted", True)):
                continue
            out[trial.state].setdefault(key, trial)
        return out

    def _claim_and_run(self, waiting: Iterable[FrozenTrial], wanted: dict[str, Unit], started: Started,
                       finished: Finished) -> None:
        for trial in waiting:
            try:
                if not self.study._storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                    continue
            except UpdateFinishedTrialError:
                continue
            self._run(optuna.Trial(self.study, trial._trial_id), wanted[trial.user_attrs["key"]], started, finished)
            return

    def _run(self, trial: optuna.Trial, unit: Unit, started: Started, finished: Finished) -> None:
        try:
            trial.set_user_attr("worker", worker_id())
        except UpdateFinishedTrialError:  # failed as stale by another process in the instant after the claim
            return
        settings = dataclasses.replace(self.settings, epochs=unit.epochs, min_epochs=min(self.settings.min_epochs,
                                       unit.epochs), lr=unit.lr)
        try:
            result = train(unit.config, settings, seed=unit.seed, batch_size=unit.batch_size,
                           progress=started(unit), on_epoch=lambda epoch, accuracy: trial.report(accuracy, epoch))
        except ValueError as err:
            trial.set_user_attr("fail_reason", f"does not fit the network: {err}")
            trial.set_user_attr("interrupted", False)
            finished(unit, self.study.tell(trial, state=TrialState.FAIL))
            return
        except BaseException:
            trial.set_user_attr("fail_reason", "interrupted")
            trial.set_user_attr("interrupted", True)
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        record = result.to_dict()
        record.pop("spec")
        trial.set_user_attr("run", record)
        finished(unit, self.study.tell(trial, result.accuracy))


__all__ = ["SUFFIX", "Unit", "UnitQueue", "companion", "companion_name", "training_digest", "training_settings",
           "unit_trials"]
