"""Confirmation: multi-fidelity training of a study's candidates, and calibration of the probes against it.

    confirm_study(study, ConfirmSettings(top_k=3))   # trains, stores as it goes; skips what is done
    confirm_study(study, settings, exhaustive=True)  # every config at the final budget (confirm --all)
    load_confirmation(study).records                 # trial → candidate record (best lr, highest budget)

Modules: :mod:`.settings` (what to train and how; rungs), :mod:`.select` (admission to the first rung),
:mod:`.schedule` (successive halving over candidate × learning-rate arms), :mod:`.units` (training runs
as trials of a companion Optuna study: queue, claim, run), :mod:`.results` (units → candidate records),
:mod:`.store` (reading them back), :mod:`.calibration` (Spearman / Kendall of probe scores against
accuracy, seed noise), :mod:`.display` (progress on stderr).
"""

from __future__ import annotations

import dataclasses

import optuna
from rich.console import Console

from ..data import load_data
from ..records import probe_rows
from ..sources import network_label, resolve_model
from ..train import Plan
from .calibration import calibrate, describe
from .display import TrainingDisplay, say
from .results import row_records
from .schedule import run_rungs
from .select import Candidate, all_candidates, select_candidates
from .settings import ConfirmSettings
from .store import Confirmation, legacy_results, load_confirmation, save_current, training_cost
from .units import UnitQueue


def confirm_study(
    study: optuna.Study,
    settings: ConfirmSettings,
    *,
    console: Console | None = None,
    exhaustive: bool = False,
) -> Confirmation:
    """Admit candidates of ``study`` (:mod:`.select`), train them rung by rung (:mod:`.schedule`), print the
    calibration and the training cost; returns the study's confirmation.

    ``exhaustive``: every config of a COMPLETE trial and the default layer, at every learning rate, for the
    final budget only (``confirm --all``). Units already trained with the same training settings are reused, by this process or
    any other: only missing ones are trained, so a killed confirmation resumes where it stopped. The
    calibration covers the candidates of the current training settings. The progress output (on ``console``)
    names the study. Raises :class:`~normsearch.data.DatasetUnavailable` when the dataset is missing,
    :class:`~normsearch.sources.ModelUnavailable` for a ``python:`` model that another process registered.
    """
    data = load_data(
        settings.dataset,
        resolution=settings.resolution,
        data_dir=settings.data_dir,
        download=settings.download,
    )  # a missing dataset stops here, before any output
    resolve_model(settings.model)  # so does a python: model of another process (ModelUnavailable)
    console = console or Console(stderr=True)
    rows = [row.as_dict() for row in probe_rows(study)]
    candidates = all_candidates(rows, settings.default) if exhaustive else select_candidates(rows, settings)
    queue = UnitQueue(study, settings)
    plan = Plan.of(settings, len(data.train), None)
    if legacy_results(study) and "training" not in queue.study.user_attrs:
        console.print(
            "note: this study's earlier confirmation records (study attrs confirm:<trial>) are not "
            "reused; they stay readable until this confirmation replaces them",
            highlight=False,
        )
    save_current(study, settings, queue.training, plan.total * plan.batch_size, len(data.val))
    schedule = dataclasses.replace(settings, min_epochs=settings.epochs) if exhaustive else settings
    say(
        console,
        f"confirm {study.study_name}: {len(candidates)} candidate(s) on {settings.dataset} ("
        f"{network_label(settings.model, settings.depth)}, lr {', '.join(f'{lr:g}' for lr in settings.learning_rates())}, "
        f"{settings.seeds} seed(s){', every config' if exhaustive else ''})",
    )
    with TrainingDisplay(console, study.study_name) as display:
        run_rungs(
            candidates,
            schedule,
            queue,
            started=display.started,
            finished=display.finished,
            rung_started=display.rung_started,
        )
    confirmation = load_confirmation(study)
    calibration = calibrate(rows, row_records(confirmation.records, rows))
    if calibration["budget"] is not None:
        say(console, describe(calibration))
    say(console, cost_line(training_cost(confirmation, len(all_candidates(rows, settings.default)))))
    return confirmation


def cost_line(cost: dict[str, int] | None) -> str:
    """``training: 1.2M images, 23% of the 5.1M that training every config (confirm --all) takes``."""
    if cost is None:
        return "training cost: unknown (records from an earlier normsearch)"
    spent, full = cost["spent_images"], cost["exhaustive_images"]
    share = f"{100 * spent / full:.0f}%" if full else "-"
    return (
        f"training: {spent / 1e6:.2f}M images, {share} of the {full / 1e6:.2f}M that training every config at "
        "every learning rate for the final budget (confirm --all) takes"
    )


__all__ = [
    "Candidate",
    "ConfirmSettings",
    "Confirmation",
    "all_candidates",
    "confirm_study",
    "cost_line",
    "load_confirmation",
    "select_candidates",
    "training_cost",
]
