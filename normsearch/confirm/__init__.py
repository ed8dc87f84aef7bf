"""Confirmation: short training runs of a study's best candidates, and calibration of the probes against them.

    confirm_study(study, ConfirmSettings(top_k=3))   # trains, stores, calibrates; skips what is done

Modules: :mod:`.settings` (what to train and how), :mod:`.select` (which candidates), :mod:`.runs` (seeds,
small batch, reuse of stored records), :mod:`.store` (study user attributes), :mod:`.calibration`
(Spearman / Kendall of probe scores against accuracy), :mod:`.display` (progress on stderr).
"""

from __future__ import annotations

from typing import Any

import optuna
from rich.console import Console

from ..data import load_data
from . import store
from .calibration import calibrate, describe
from .display import TrainingDisplay
from .runs import confirm_candidate, training_settings
from .select import Candidate, select_candidates
from .settings import ConfirmSettings


def current_results(study: optuna.Study, settings: ConfirmSettings) -> dict[int, dict[str, Any]]:
    """The stored records trained with the training settings of ``settings`` (others are not comparable)."""
    training = training_settings(settings)
    return {n: r for n, r in store.results(study).items() if r.get("training") == training}


def confirm_study(
    study: optuna.Study, settings: ConfirmSettings, *, space: Any = None, console: Console | None = None
) -> None:
    """Train the selected candidates of ``study`` (:mod:`.select`), store each record, then the calibration.

    Records already stored for the same training settings are reused; only missing seeds (and small-batch
    runs) are trained. A study holds the confirmation of one training setup: records made with other
    training settings are discarded (their accuracies would not compare). The calibration covers every
    candidate confirmed with these training settings.
    ``space`` (the :class:`~normsearch.space.SearchSpace`) only names the study in the progress output.
    A candidate whose config does not fit the network is reported and skipped. Raises
    :class:`~normsearch.data.DatasetUnavailable` when the dataset is missing.
    """
    from ..leaderboard import build_rows  # here: the leaderboard reads this package's records

    load_data(settings.dataset, resolution=settings.resolution, data_dir=settings.data_dir,
              download=settings.download)  # a missing dataset stops here, before any output
    console = console or Console(stderr=True)
    rows = build_rows(study)
    candidates = select_candidates(rows, settings)
    stored = current_results(study, settings)
    for trial in set(store.results(study)) - set(stored):
        store.discard_result(study, trial)
    name = getattr(space, "name", None) or study.study_name
    console.print(f"confirm {name}: training {len(candidates)} candidate(s) on {settings.dataset} "
                  f"({settings.model}-{settings.depth}, {settings.epochs} epochs, {settings.seeds} seed(s))",
                  highlight=False, soft_wrap=True)
    with TrainingDisplay(console, len(candidates)) as display:
        for index, candidate in enumerate(candidates, 1):
            _confirm_one(study, settings, display, index, candidate, stored.get(candidate.trial))
    calibration = calibrate(rows, current_results(study, settings))
    store.save_calibration(study, calibration)
    console.print(describe(calibration), highlight=False, soft_wrap=True)


def _confirm_one(study: optuna.Study, settings: ConfirmSettings, display: TrainingDisplay, index: int,
                 candidate: Candidate, stored: dict[str, Any] | None) -> None:
    try:
        record = confirm_candidate(
            candidate.config, settings, stored, lambda seed, batch: display.callback(index, candidate, seed, batch)
        )
    except ValueError as err:
        display.report(index, candidate, None, f"skipped: {err}")
        return
    if record is None:
        display.report(index, candidate, stored, " (stored)")
        return
    store.save_result(study, candidate.trial, record)
    display.report(index, candidate, record)


__all__ = ["Candidate", "ConfirmSettings", "confirm_study", "current_results", "select_candidates"]
