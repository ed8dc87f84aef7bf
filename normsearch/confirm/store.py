"""Where confirmation results live, and reading them back (:func:`load_confirmation`).

- The work units (one training run each) are trials of the companion study ``<study>.confirm`` on the
  same storage (:mod:`.units`). Its user attrs ``settings`` (the :class:`ConfirmSettings` of the latest
  confirmation), ``training`` (their training digest: which units are current), ``images_per_run``
  (training images of one run at the final budget) and ``val_images`` (the validation set's size, which
  sets the sampling noise of an accuracy) say how to read them.
- Studies confirmed by normsearch before the work units kept one record per candidate in study user attrs
  ``confirm:<trial>`` (Optuna cannot update finished trials; a discarded record is null). They stay
  readable (as one budget, one learning rate; ``legacy`` = true) until a new confirmation of the study
  stores units, which then take their place; they are never reused for training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import optuna

from .results import candidate_records, legacy_record
from .settings import ConfirmSettings
from .units import companion, unit_trials

LEGACY_PREFIX = "confirm:"


@dataclass(frozen=True)
class Confirmation:
    """A study's confirmation: trial number → candidate record (:mod:`.results`), the settings of the latest
    confirmation (None for legacy records), training images spent on current units, images of one run at
    the final budget (None for legacy records), validation images (None when not stored)."""

    records: dict[int, dict[str, Any]]
    settings: ConfirmSettings | None
    spent_images: int
    images_per_run: int | None
    val_images: int | None = None


def legacy_results(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """Candidate records converted from ``confirm:<trial>`` study attrs (see the module docstring)."""
    return {
        int(key.removeprefix(LEGACY_PREFIX)): legacy_record(value, int(key.removeprefix(LEGACY_PREFIX)))
        for key, value in study.user_attrs.items()
        if key.startswith(LEGACY_PREFIX)
        and key.removeprefix(LEGACY_PREFIX).isdigit()
        and isinstance(value, dict)
    }


def save_current(
    study: optuna.Study, settings: ConfirmSettings, training: str, images_per_run: int, val_images: int
) -> None:
    """Mark ``settings`` as the study's current confirmation (on its companion study)."""
    queue = companion(study)
    for key, value in (
        ("settings", dataclasses.asdict(settings)),
        ("training", training),
        ("images_per_run", images_per_run),
        ("val_images", val_images),
    ):
        if queue.user_attrs.get(key) != value:
            queue.set_user_attr(key, value)


def load_confirmation(study: optuna.Study) -> Confirmation:
    """The study's current confirmation (one read of its companion study), else its legacy records."""
    queue = companion(study, create=False)
    attrs = queue.user_attrs if queue is not None else {}
    if "training" not in attrs:
        return Confirmation(legacy_results(study), None, 0, None)
    trials = unit_trials(queue, attrs["training"])
    known = {f.name for f in dataclasses.fields(ConfirmSettings)}
    settings = ConfirmSettings(**{k: v for k, v in attrs["settings"].items() if k in known})
    spent = sum(t.user_attrs["run"]["steps"] * t.user_attrs["run"]["batch_size"] for t in trials)
    return Confirmation(
        candidate_records(trials), settings, spent, attrs["images_per_run"], attrs.get("val_images")
    )


def training_cost(confirmation: Confirmation, configs: int) -> dict[str, int] | None:
    """{"spent_images", "exhaustive_images"}: images trained so far on current units, and what training all
    ``configs`` configs at every learning rate and seed for the final budget costs (``confirm --all``; an
    upper bound: diverged runs stop early). None without current units."""
    settings = confirmation.settings
    if settings is None or confirmation.images_per_run is None:
        return None
    runs = configs * len(settings.learning_rates()) * settings.seeds
    return {
        "spent_images": confirmation.spent_images,
        "exhaustive_images": runs * confirmation.images_per_run,
    }


__all__ = ["Confirmation", "legacy_results", "load_confirmation", "save_current", "training_cost"]
