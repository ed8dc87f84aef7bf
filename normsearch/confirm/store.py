"""Where confirmation results live: study user attributes (Optuna cannot update a finished trial).

- ``confirm:<trial number>`` → the candidate's record (see :func:`normsearch.confirm.runs.candidate_record`):
  ``accuracy``, ``final_accuracy``, ``diverged``, ``seconds``, ``images_per_s``, ``config``, ``training``
  (the settings it was trained with), ``seeds`` (per-seed records) and, when enabled, ``small_batch``.
- ``calibration`` → {quantity: {"spearman", "kendall", "n"}} (see :mod:`normsearch.confirm.calibration`).

A record is written as soon as its candidate is trained, so an interrupted confirmation keeps its work.
A discarded record is stored as null (Optuna cannot delete a user attribute); readers skip non-dicts.
"""

from __future__ import annotations

from typing import Any

import optuna

PREFIX = "confirm:"
CALIBRATION = "calibration"


def results(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """Trial number → confirmation record, for every confirmed trial of ``study``."""
    return {
        int(key.removeprefix(PREFIX)): value
        for key, value in study.user_attrs.items()
        if key.startswith(PREFIX) and key.removeprefix(PREFIX).isdigit() and isinstance(value, dict)
    }


def save_result(study: optuna.Study, trial: int, record: dict[str, Any]) -> None:
    """Store (or replace) the record of trial number ``trial``."""
    study.set_user_attr(f"{PREFIX}{trial}", record)


def discard_result(study: optuna.Study, trial: int) -> None:
    """Remove trial ``trial``'s record (Optuna keeps every user attr key: the value becomes null)."""
    study.set_user_attr(f"{PREFIX}{trial}", None)


def calibration(study: optuna.Study) -> dict[str, Any] | None:
    """The stored calibration, or None before any confirmation."""
    return study.user_attrs.get(CALIBRATION)


def save_calibration(study: optuna.Study, value: dict[str, Any]) -> None:
    study.set_user_attr(CALIBRATION, value)
