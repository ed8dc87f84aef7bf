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
from collections.abc import Mapping, Sequence
from statistics import fmean, stdev
from typing import Any

import optuna

from .confirm import Confirmation, all_candidates, load_confirmation, training_cost
from .confirm.calibration import calibrate, lower_is_better
from .confirm.results import arm_at, metric_keys, metric_of, ranking_key, row_records
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


NOISE_MULTIPLE = 2.0
"""The winner beats the default when its mean paired difference exceeds this many standard errors."""


def _seed_accuracies(record: Mapping[str, Any], budget: int) -> tuple[dict[str, float], bool, Any] | None:
    """(seed → accuracy, diverged, lr) of a candidate's best arm at ``budget``, or None if not trained there."""
    arm = arm_at(record, budget)
    return None if arm is None else (arm["per_seed"], arm["diverged"], arm["lr"])


def versus_default(
    winner_record: Mapping[str, Any],
    default_record: Mapping[str, Any] | None,
    config: str,
    val_images: int | None,
) -> dict[str, Any]:
    """Does the winner beat the default layer ``config`` by more than the noise? Paired by training seed at
    the winner's budget (the final one), each at its best learning rate there:

        d_s = a_winner(s) − a_default(s)  over the n seeds both have,   d̄ = mean(d_s),
        (for a lower-is-better metric, val_loss: d_s = a_default(s) − a_winner(s), and no binomial b)
        SE = max(sd(d_s), b) / √n,   b = √((p_w(1 − p_w) + p_d(1 − p_d)) / m),
        beaten  ⇔  d̄ > NOISE_MULTIPLE · SE   (2 standard errors),

    with sd the sample standard deviation over seeds (0 for n = 1), p_w, p_d the two mean accuracies and m
    the validation images: b, the binomial standard error of the difference of two accuracies measured on m
    images, is the least noise any one pair of runs carries, and stands in for the seed noise a single seed
    cannot measure. A default that diverged is beaten by a winner that did not; the default itself as
    winner is not beaten. Returns {"config", "trial", "accuracy" (mean over the paired seeds), "lr",
    "budget", "seeds" (n), "difference" (d̄), "noise" (NOISE_MULTIPLE · SE), "beaten", "recommend" (the
    winner's config if beaten, else the default's), "reason"}; ``accuracy``, ``difference``, ``noise`` and
    ``beaten`` are None, with the reason, when the default was not trained at that budget with the same seeds
    (or, with one seed, the validation size is not stored).
    """
    budget = winner_record["budget"]
    metric, higher = metric_of(winner_record)
    sign = 1.0 if higher else -1.0  # d_s is the winner's gain: accuracy up, or a loss down
    out: dict[str, Any] = {
        "config": config,
        "trial": None if default_record is None else default_record["trial"],
        "metric": metric,
        metric: None,
        "lr": None,
        "budget": budget,
        "seeds": 0,
        "difference": None,
        "noise": None,
        "beaten": None,
        "recommend": config,
        "reason": None,
    }
    mine = _seed_accuracies(winner_record, budget)
    theirs = None if default_record is None else _seed_accuracies(default_record, budget)
    if mine is None or theirs is None:
        out["reason"] = f"the default was not trained for {budget} epoch(s), the winner's budget"
        return out
    (ours, our_divergence, _), (their, their_divergence, lr) = mine, theirs
    seeds = sorted(set(ours) & set(their), key=int)
    if not seeds:
        out["reason"] = "the default was trained with other seeds than the winner"
        return out
    diffs = [sign * (ours[s] - their[s]) for s in seeds]
    n, mean = len(seeds), fmean(diffs)
    p_w, p_d = fmean(ours[s] for s in seeds), fmean(their[s] for s in seeds)
    out.update({metric: p_d, "lr": lr, "seeds": n, "difference": mean})
    if not higher:  # no binomial floor for a loss: one seed cannot measure its noise
        val_images = None
    if winner_record["config"] == config:
        out.update(difference=0.0, noise=0.0, beaten=False, reason="the winner is the default")
        return out
    if their_divergence or our_divergence:
        beaten = their_divergence and not our_divergence
        out.update(beaten=beaten, reason="the default diverged" if beaten else "the winner diverged")
    elif n == 1 and val_images is None:
        out["reason"] = (
            "one seed and no stored validation size: the noise is unknown"
            if higher
            else "one seed cannot measure a loss's noise: confirm with seeds 2 or more"
        )
        return out
    binomial = math.sqrt((p_w * (1 - p_w) + p_d * (1 - p_d)) / val_images) if val_images else 0.0
    spread = stdev(diffs) if n > 1 else 0.0
    out["noise"] = NOISE_MULTIPLE * max(spread, binomial) / math.sqrt(n)
    if out["beaten"] is None:
        out["beaten"] = mean > out["noise"]
    if out["beaten"]:
        out["recommend"] = winner_record["config"]
    return out


def _default_outcome(confirmation: Confirmation, rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    best = winner(rows)
    if best is None or confirmation.settings is None:
        return None
    config = confirmation.settings.default
    record = next((r for r in confirmation.records.values() if r["config"] == config), None)
    row = next(r for r in rows if r["trial"] == best["trial"])
    return versus_default(row["confirm"], record, config, confirmation.val_images)


def outcome(study: optuna.Study, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What the confirmation concluded, from all the study's rows: ``winner`` (:func:`winner`),
    ``calibration`` (the score's {spearman, kendall, n} at its ``budget``, with ``final_budget``, ``configs``
    and ``seeds``: the seed-to-seed ceiling; :func:`~normsearch.confirm.calibration.calibrate`) and ``training_cost`` ({spent_images,
    exhaustive_images}) and ``default`` (:func:`versus_default`: does the winner beat the space's default
    layer?); each None before any confirmation."""
    confirmation = load_confirmation(study)
    rows = rows if rows is not None else build_rows(study, confirmation=confirmation)
    complete = [row for row in rows if row["state"] != "FAIL"]
    cal = calibrate(complete, {row["trial"]: row["confirm"] for row in complete if "confirm" in row})
    score = (
        {**cal["score"], **{k: cal[k] for k in ("budget", "final_budget", "configs", "seeds")}}
        if cal["budget"] is not None
        else None
    )
    default = confirmation.settings.default if confirmation.settings is not None else None
    return {
        "winner": winner(rows),
        "calibration": score,
        "training_cost": training_cost(confirmation, len(all_candidates(complete, default))),
        "default": _default_outcome(confirmation, rows),
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
    :func:`outcome` (winner, calibration, training_cost, default; from all ``rows``) when the study is
    confirmed."""
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
    "NOISE_MULTIPLE",
    "ROW_KEYS",
    "SORT_FIELDS",
    "build_rows",
    "document",
    "outcome",
    "pareto_mask",
    "sort_rows",
    "trial_counts",
    "versus_default",
    "winner",
]
