"""The leaderboard of a study: one row per distinct config (the rows and the JSON document;
:mod:`normsearch.cli.tables` draws them); rank 1 is the winner.

Rows: the probe rows of the study (:func:`normsearch.records.probe_rows`: the standing trial of each config,
its probe scores, ``objectives``, ``pareto`` and ``rejected``) as mappings (:meth:`~normsearch.records.Row.as_dict`),
with what the confirmation concluded about them.

Confirmation (:func:`normsearch.confirm.load_confirmation`) adds to each trained row its task's metric
(``metric``: ``accuracy``, the best validation accuracy, for a classifier; ``val_loss``, the best validation
bits per byte, lower is better, for a language model), mean over seeds at its best learning rate ``lr``, with
its spread over seeds (``accuracy_std`` / ``val_loss_std``),
``budget`` (the epochs that accuracy comes from: the highest rung it reached), ``diverged``, ``collapsed``
and the whole record as ``confirm``.

Order (:func:`sort_rows`, default ``trained``): trained rows first, by budget (highest first), then
accuracy (diverged last); then the others by state (complete, unstable, failed with ``include_failed``),
rejected after the rest, then score (lower is better). Rank 1 is so the **winner**
(:func:`winner`): the best trained candidate at the highest budget reached. Other sort fields order all
rows within state groups by that field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna

from .confirm import Confirmation, load_confirmation, training_cost
from .confirm.calibration import calibrate, lower_is_better
from .confirm.results import metric_keys, metric_of, ranking_key, row_records
from .records import ROW_KEYS, pareto_mask, probe_rows
from .score import OBJECTIVES

SORT_FIELDS = {
    "trained": 0,
    "score": 1,
    "activation_growth": 1,
    "similarity": 1,
    "grad_ratio": 1,
    "step_loss_ratio": 1,
    "accuracy": -1,
    "val_loss": 1,
    "trial": 1,
}
"""Sortable fields and their direction (1: ascending is better, -1: descending; ``trained``: see the module
docstring)."""
CONFIRMED_KEYS = ("metric", "budget", "lr", "diverged", "collapsed")
"""Keys a trained row gains from its confirmation record, beside its metric and the metric's ``_std``."""
STATE_ORDER = {"COMPLETE": 0, "UNSTABLE": 1, "FAIL": 2}


def _merge_confirmation(confirmation: Confirmation, rows: list[dict[str, Any]]) -> None:
    by_trial = {row["trial"]: row for row in rows}
    for trial, confirmed in row_records(confirmation.records, rows).items():
        metric, _ = metric_of(confirmed)
        keys = (*CONFIRMED_KEYS[1:], *metric_keys(metric)[:2])
        by_trial[trial].update({key: confirmed[key] for key in keys}, metric=metric, confirm=confirmed)


def _trained_key(row: dict[str, Any]) -> tuple:
    if "budget" in row:
        budget, accuracy = ranking_key(row)
        return 0, -budget, -accuracy, row["trial"]
    return 1, STATE_ORDER[row["state"]], bool(row.get("rejected")), row["score"] or 0, row["trial"]


def _sort_key(field: str):
    direction = SORT_FIELDS[field]
    if field == "trained":
        return _trained_key

    def key(row: dict[str, Any]) -> tuple:
        value = lower_is_better(row, field)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return (
            STATE_ORDER[row["state"]],
            row["rejected"] is not None,
            missing,
            0 if missing else direction * value,
            row["score"] or 0,
            row["trial"],
        )

    return key


def sort_rows(rows: list[dict[str, Any]], field: str = "trained") -> list[dict[str, Any]]:
    """Rows ordered by ``field`` (see the module docstring), ranks renumbered 1…n."""
    if field not in SORT_FIELDS:
        raise ValueError(f"cannot sort by {field!r}; allowed: {', '.join(SORT_FIELDS)}")
    ordered = sorted(rows, key=_sort_key(field))
    for rank, row in enumerate(ordered, 1):
        row["rank"] = rank
    return ordered


def build_rows(
    study: optuna.Study, *, include_failed: bool = False, confirmation: Confirmation | None = None
) -> list[dict[str, Any]]:
    """The leaderboard rows of a study, sorted by rank (``trained``); see the module docstring.

    ``confirmation``: the study's, when the caller has read it already (default: read here)."""
    rows = [row.as_dict() for row in probe_rows(study, include_failed=include_failed)]
    _merge_confirmation(confirmation or load_confirmation(study), rows)
    return sort_rows(rows)


def winner(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The best trained candidate at the highest budget reached: {trial, config, network (its network
    options), metric, its value and ``_std`` (accuracy or val_loss), budget, lr, seeds}, or None when nothing
    is trained."""
    trained = [row for row in rows if "budget" in row]
    if not trained:
        return None
    best = max(trained, key=lambda r: (*ranking_key(r), -r["trial"]))
    metric, _ = metric_of(best)
    value, std, _final = metric_keys(metric)
    return {
        "trial": best["trial"],
        "config": best["config"],
        "network": best["network"],
        "metric": metric,
        value: best[value],
        std: best[std],
        "budget": best["budget"],
        "lr": best["lr"],
        "seeds": len(best["confirm"]["seeds"]),
    }


def outcome(study: optuna.Study, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What the confirmation concluded, from all the study's rows: ``winner`` (:func:`winner`),
    ``calibration`` (the score's {spearman, kendall, n} at its ``budget``, with ``seeds``: the seed-to-seed
    ceiling; :func:`~normsearch.confirm.calibration.calibrate`) and ``training_cost`` ({spent_images,
    exhaustive_images}); each None before any confirmation."""
    confirmation = load_confirmation(study)
    rows = rows if rows is not None else build_rows(study, confirmation=confirmation)
    complete = [row for row in rows if row["state"] != "FAIL"]
    cal = calibrate(complete, {row["trial"]: row["confirm"] for row in complete if "confirm" in row})
    score = (
        {**cal["score"], "budget": cal["budget"], "seeds": cal["seeds"]}
        if cal["budget"] is not None
        else None
    )
    return {
        "winner": winner(rows),
        "calibration": score,
        "training_cost": training_cost(confirmation, len(complete)),
    }


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """Trials of the study by state (lower-case state names, plus ``total``)."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    counts["total"] = sum(counts.values())
    return counts


def document(study: optuna.Study, rows: list[dict[str, Any]], *, top: int | None = None) -> dict[str, Any]:
    """The ``--json`` document: study, space, weights, trial counts, the first ``top`` rows (default all), and
    :func:`outcome` (winner, calibration, training_cost; from all ``rows``) when the study is confirmed."""
    doc: dict[str, Any] = {
        "study": study.study_name,
        "space": study.user_attrs.get("space", {}).get("name"),
        "objectives": list(OBJECTIVES),
        "weights": study.user_attrs.get("weights"),
        "probe_matches_confirm": study.user_attrs.get("probe_matches_confirm"),
        "probe_differs": study.user_attrs.get("probe_differs"),
        "trials": trial_counts(study),
        "rows": rows[:top],
    }
    doc.update({key: value for key, value in outcome(study, rows).items() if value is not None})
    return doc


__all__ = [
    "ROW_KEYS",
    "SORT_FIELDS",
    "build_rows",
    "document",
    "outcome",
    "pareto_mask",
    "sort_rows",
    "trial_counts",
    "winner",
]
