"""The leaderboard of a study: one row per distinct config (the rows and the JSON document;
:mod:`normsearch.cli.tables` draws them); rank 1 is the winner.

Rows (:func:`build_rows`): the first COMPLETE trial of each config stands for it (later samples of the same
config reuse its result and are counted in ``samples``). The four probe-score columns are the probes' own
values; ``objectives`` holds what the study minimises (:func:`~normsearch.search.objective_values`:
similarity, step loss ratio), and sorting by a probe score sorts by its objective. ``pareto`` marks the
stable, not rejected rows no other such row beats on all objectives (≤ on each, < on one); ``rejected`` is
the search filters' reason why a trial cannot train and stays out of confirmation (None: it passes).

Confirmation (:func:`normsearch.confirm.load_confirmation`) adds to each trained row ``accuracy`` (best
validation accuracy, mean over seeds, at its best learning rate ``lr``), ``accuracy_std`` (over seeds),
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
from optuna.trial import FrozenTrial, TrialState

from .confirm import Confirmation, load_confirmation, training_cost
from .confirm.calibration import calibrate, lower_is_better
from .confirm.results import ranking_key
from .probes import SCORES
from .search import OBJECTIVES, trial_score
from .space import ScoreWeights

ROW_KEYS = (
    "rank", "trial", "config", "baseline", "pareto", "state", *SCORES, "score", "rejected",
)
"""Keys every row has (the ``--json`` contract); more follow them."""
SORT_FIELDS = {"trained": 0, "score": 1, "activation_growth": 1, "similarity": 1, "grad_ratio": 1,
               "step_loss_ratio": 1, "accuracy": -1, "trial": 1}
"""Sortable fields and their direction (1: ascending is better, -1: descending; ``trained``: see the module
docstring)."""
CONFIRMED_KEYS = ("accuracy", "accuracy_std", "budget", "lr", "diverged", "collapsed")
"""Keys a trained row gains from its confirmation record."""
STATE_ORDER = {"COMPLETE": 0, "UNSTABLE": 1, "FAIL": 2}


def _weights(study: optuna.Study) -> ScoreWeights:
    stored = study.user_attrs.get("weights")
    return ScoreWeights(**stored) if isinstance(stored, dict) else ScoreWeights()


def pareto_mask(points: Sequence[Sequence[float]]) -> list[bool]:
    """For points to minimise, whether each is non-dominated (no other ≤ on all and < on one)."""

    def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))

    return [not any(dominates(q, p) for q in points if q is not p) for p in points]


def _complete_row(trial: FrozenTrial, samples: list[FrozenTrial], weights: ScoreWeights) -> dict[str, Any]:
    probe = trial.user_attrs.get("probe", {})
    unstable = bool(probe.get("unstable", False))
    baseline = next((t.user_attrs.get("baseline_name") for t in samples if t.user_attrs.get("baseline")), None)
    row: dict[str, Any] = {
        "rank": 0,
        "trial": trial.number,
        "config": trial.user_attrs.get("config", ""),
        "baseline": baseline is not None,
        "pareto": False,
        "state": "UNSTABLE" if unstable else "COMPLETE",
        **{name: probe.get(name) for name in SCORES},
        "score": trial_score(trial, weights),
        "rejected": trial.user_attrs.get("rejected"),
        "objectives": dict(zip(OBJECTIVES, trial.values, strict=True)),
        "baseline_name": baseline,
        "unstable": unstable,
        "reason": probe.get("reason"),
        "samples": len(samples),
        "seconds": trial.user_attrs.get("seconds"),
        "params": trial.params,
    }
    row.update({f"{name}_std": probe.get(f"{name}_std") for name in SCORES})
    return row


def _failed_row(trial: FrozenTrial) -> dict[str, Any]:
    return {
        "rank": 0,
        "trial": trial.number,
        "config": trial.user_attrs.get("config", ""),
        "baseline": bool(trial.user_attrs.get("baseline", False)),
        "pareto": False,
        "state": "FAIL",
        **dict.fromkeys(SCORES),
        "score": None,
        "rejected": None,
        "baseline_name": trial.user_attrs.get("baseline_name"),
        "unstable": False,
        "reason": trial.user_attrs.get("fail_reason", "failed (no reason recorded)"),
        "samples": 1,
        "seconds": trial.user_attrs.get("seconds"),
        "params": trial.params,
    }


def _merge_confirmation(confirmation: Confirmation, rows: list[dict[str, Any]]) -> None:
    by_config = {record["config"]: record for record in confirmation.records.values()}
    for row in rows:
        confirmed = None
        if row["state"] != "FAIL":
            confirmed = by_config.get(row["config"]) or confirmation.records.get(row["trial"])
        if confirmed is not None:
            row.update({key: confirmed[key] for key in CONFIRMED_KEYS}, confirm=confirmed)


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
        return (STATE_ORDER[row["state"]], row["rejected"] is not None, missing, 0 if missing else direction * value,
                row["score"] or 0, row["trial"])

    return key


def sort_rows(rows: list[dict[str, Any]], field: str = "trained") -> list[dict[str, Any]]:
    """Rows ordered by ``field`` (see the module docstring), ranks renumbered 1…n."""
    if field not in SORT_FIELDS:
        raise ValueError(f"cannot sort by {field!r}; allowed: {', '.join(SORT_FIELDS)}")
    ordered = sorted(rows, key=_sort_key(field))
    for rank, row in enumerate(ordered, 1):
        row["rank"] = rank
    return ordered


def build_rows(study: optuna.Study, *, include_failed: bool = False,
               confirmation: Confirmation | None = None) -> list[dict[str, Any]]:
    """The leaderboard rows of a study, sorted by rank (``trained``); see the module docstring.

    ``confirmation``: the study's, when the caller has read it already (default: read here)."""
    weights = _weights(study)
    trials = study.get_trials(deepcopy=False)
    by_config: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            by_config.setdefault(trial.user_attrs.get("config", f"#{trial.number}"), []).append(trial)
    rows = [_complete_row(samples[0], samples, weights) for samples in by_config.values()]
    stable = [row for row in rows if not row["unstable"] and row["rejected"] is None]
    front = pareto_mask([list(row["objectives"].values()) for row in stable])
    for row, on_front in zip(stable, front, strict=True):
        row["pareto"] = on_front
    if include_failed:
        rows += [_failed_row(t) for t in trials if t.state == TrialState.FAIL]
    _merge_confirmation(confirmation or load_confirmation(study), rows)
    return sort_rows(rows)


def winner(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The best trained candidate at the highest budget reached: {trial, config, accuracy, accuracy_std,
    budget, lr, seeds}, or None when nothing is trained."""
    trained = [row for row in rows if "budget" in row]
    if not trained:
        return None
    best = max(trained, key=lambda r: (*ranking_key(r), -r["trial"]))
    return {"trial": best["trial"], "config": best["config"], "accuracy": best["accuracy"],
            "accuracy_std": best["accuracy_std"], "budget": best["budget"], "lr": best["lr"],
            "seeds": len(best["confirm"]["seeds"])}


def outcome(study: optuna.Study, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What the confirmation concluded, from all the study's rows: ``winner`` (:func:`winner`),
    ``calibration`` (the score's {spearman, kendall, n} at its ``budget``, with ``seeds``: the seed-to-seed
    ceiling; :func:`~normsearch.confirm.calibration.calibrate`) and ``training_cost`` ({spent_images,
    exhaustive_images}); each None before any confirmation."""
    confirmation = load_confirmation(study)
    rows = rows if rows is not None else build_rows(study, confirmation=confirmation)
    complete = [row for row in rows if row["state"] != "FAIL"]
    cal = calibrate(complete, {row["trial"]: row["confirm"] for row in complete if "confirm" in row})
    score = {**cal["score"], "budget": cal["budget"], "seeds": cal["seeds"]} if cal["budget"] is not None else None
    return {"winner": winner(rows), "calibration": score,
            "training_cost": training_cost(confirmation, len(complete))}


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
