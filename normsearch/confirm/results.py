"""From finished work units to one record per candidate: its best learning rate at the highest budget reached.

An *arm* is a candidate at one learning rate and budget (epochs); its runs are its units over seeds at the
default batch size. Each run reports its task's metric (:mod:`normsearch.task`): M = ``accuracy`` (higher is
better) for a classifier, ``val_loss`` (bits per byte, lower is better) for a language model; ``metric``
names it in every arm and record (its direction: :data:`HIGHER_IS_BETTER`). Per arm (:func:`arm_summary`): M = mean over seeds of
each run's best M over epochs, ``M_std`` = their sample standard deviation (0 for one seed), ``final_M`` =
mean last-epoch M, ``diverged`` / ``collapsed`` = some seed diverged / collapsed (:mod:`normsearch.train`),
``per_seed`` = seed → M. Arms are compared by :func:`ranking_value` (higher is better: M, or −M for a loss;
a diverged arm below every other).

A candidate's record (:func:`candidate_records`): ``budget`` = the highest epochs it was trained for, ``lr``
= its best learning rate there, and that arm's numbers (``metric``, M, ``M_std``,
``final_M``, ``diverged``, ``collapsed``, ``seeds`` = the per-seed run records); ``rungs`` = every arm's summary (epochs,
lr, …); ``seconds`` and ``images`` = totals over all its units; ``images_per_s`` = mean throughput. With
small-batch units at its best arm, ``small_batch`` = {``batch_size``, M, ``drop`` = how much worse M is at
the small batch (accuracy − small-batch accuracy; small-batch loss − loss), ``seeds``}. A candidate trained at one learning rate that diverged and at another
that trained is therefore not diverged: it needs the smaller learning rate, and is judged at it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from statistics import fmean, stdev
from typing import Any

from optuna.trial import FrozenTrial

from ..task import TASKS

DIVERGED_ACCURACY = -1.0
"""The ranking value of a diverged classifier (below every accuracy); a diverged language model ranks −inf."""
HIGHER_IS_BETTER = {task.metric: task.higher_is_better for task in TASKS.values()}
"""Metric name → whether higher is better (:mod:`normsearch.task`)."""
CLASSIFIER_METRIC = "accuracy"
"""The metric of runs and records that name none (written before the language-model task)."""


def metric_of(record: Mapping[str, Any]) -> tuple[str, bool]:
    """(metric name, whether higher is better) of a run record, arm, candidate record or leaderboard row."""
    metric = record.get("metric", CLASSIFIER_METRIC)
    return metric, HIGHER_IS_BETTER[metric]


def metric_keys(metric: str) -> tuple[str, str, str]:
    """The keys an arm or record holds its metric under: (M, M_std, final_M)."""
    return metric, f"{metric}_std", f"final_{metric}"


def ranking_value(record: Mapping[str, Any]) -> float:
    """What an arm or candidate is ranked by, higher is better: its metric (accuracy) or minus it (val_loss);
    a diverged one below every other (``DIVERGED_ACCURACY`` for accuracy, −inf for a loss)."""
    metric, higher = metric_of(record)
    if record["diverged"]:
        return DIVERGED_ACCURACY if higher else -math.inf
    value = float(record[metric])
    return value if higher else -value


def _run_values(run: Mapping[str, Any], metric: str) -> tuple[float, float]:
    """(best, final) metric of a run record (:meth:`~normsearch.train.TrainResult.to_dict`; records from
    before the task named its metric carry ``accuracy`` only)."""
    return run.get("value", run.get(metric)), run[f"final_{metric}"]


def arm_summary(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Summary of one arm's per-seed run records (see the module docstring)."""
    metric, _ = metric_of(runs[0])
    values, finals = zip(*(_run_values(r, metric) for r in runs), strict=True)
    mean, std, final = metric_keys(metric)
    return {
        "metric": metric,
        mean: fmean(values),
        std: stdev(values) if len(values) > 1 else 0.0,
        final: fmean(finals),
        "diverged": any(r["diverged"] for r in runs),
        "collapsed": any(r.get("collapsed", False) for r in runs),
        "n": len(runs),
        "per_seed": {str(r["seed"]): v for r, v in zip(runs, values, strict=True)},
    }


def best_arm(arms: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The arm with the highest ranking value (the larger learning rate on a tie), or None."""
    return max(arms, key=lambda a: (ranking_value(a), a["lr"]), default=None)


def arm_at(record: Mapping[str, Any], epochs: int) -> dict[str, Any] | None:
    """A candidate's best arm at budget ``epochs``, or None when it was not trained for that long."""
    return best_arm(a for a in record["rungs"] if a["epochs"] == epochs)


def _runs(trial: FrozenTrial) -> dict[str, Any]:
    return {**trial.user_attrs["run"], "seed": trial.user_attrs["seed"]}


def candidate_records(trials: Iterable[FrozenTrial]) -> dict[int, dict[str, Any]]:
    """Search trial number → candidate record, from COMPLETE unit trials (one per unit key)."""
    by_config: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        by_config.setdefault(trial.user_attrs["config"], []).append(trial)
    records = {}
    for config, units in by_config.items():
        record = _record(config, units)
        records[record["trial"]] = record
    return records


def _record(config: str, units: list[FrozenTrial]) -> dict[str, Any]:
    groups: dict[tuple[int, float, int | None], list[dict[str, Any]]] = {}
    for unit in units:
        a = unit.user_attrs
        groups.setdefault((a["epochs"], a["lr"], a["batch_size"]), []).append(_runs(unit))
    rungs = [
        {"epochs": e, "lr": lr, **arm_summary(sorted(runs, key=lambda r: r["seed"]))}
        for (e, lr, batch), runs in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1]))
        if batch is None
    ]
    budget = max(a["epochs"] for a in rungs)  # small-batch runs only follow a candidate's default-batch ones
    best = arm_at({"rungs": rungs}, budget)
    runs = [_runs(u) for u in units]
    metric, higher = metric_of(best)
    record: dict[str, Any] = {
        "config": config,
        "trial": min(u.user_attrs["trial"] for u in units),
        "budget": budget,
        "lr": best["lr"],
        **{k: best[k] for k in ("metric", *metric_keys(metric), "diverged", "collapsed")},
        "seeds": sorted(groups[(budget, best["lr"], None)], key=lambda r: r["seed"]),
        "rungs": rungs,
        "seconds": sum(r["seconds"] for r in runs),
        "images": sum(r["steps"] * r["batch_size"] for r in runs),
        "images_per_s": fmean(r["images_per_s"] for r in runs),
    }
    small = [
        (batch, rs)
        for (e, lr, batch), rs in groups.items()
        if batch is not None and e == budget and lr == best["lr"]
    ]
    if small:
        batch, small_runs = small[0]
        summary = arm_summary(small_runs)
        drop = record[metric] - summary[metric]
        record["small_batch"] = {
            "batch_size": batch,
            metric: summary[metric],
            "drop": drop if higher else -drop,
            "seeds": sorted(small_runs, key=lambda r: r["seed"]),
        }
    return record


def legacy_record(old: Mapping[str, Any], trial: int) -> dict[str, Any]:
    """A candidate record from a ``confirm:<trial>`` study attr written before the work units (one budget,
    one learning rate: those of its ``training`` settings)."""
    training = old.get("training", {})
    runs = [{**r, "collapsed": r.get("collapsed", False)} for r in old.get("seeds", [])]
    summary = arm_summary(runs) if runs else {"accuracy_std": 0.0, "n": 0, "per_seed": {}}
    arm = {
        **summary,
        "epochs": training.get("epochs", 0),
        "lr": training.get("lr"),
        "accuracy": old.get("accuracy", 0.0),
        "final_accuracy": old.get("final_accuracy", 0.0),
        "diverged": bool(old.get("diverged", False)),
        "collapsed": False,
    }
    return {
        "config": old.get("config", ""),
        "trial": trial,
        "budget": arm["epochs"],
        "lr": arm["lr"],
        **{k: arm[k] for k in ("accuracy", "accuracy_std", "final_accuracy", "diverged", "collapsed")},
        "seeds": runs,
        "rungs": [arm],
        "seconds": old.get("seconds", 0.0),
        "images": sum(r.get("steps", 0) * r.get("batch_size", 0) for r in runs),
        "images_per_s": old.get("images_per_s", 0.0),
        "legacy": True,
    }


def row_records(
    records: Mapping[int, Mapping[str, Any]], rows: Iterable[Mapping[str, Any]]
) -> dict[int, Mapping[str, Any]]:
    """Trial number of each scored row (``trial``, ``config``, ``state`` not FAIL) → its candidate record: the
    record of its config (trained under whichever trial), else the record of its trial number."""
    by_config = {record["config"]: record for record in records.values()}
    out = {}
    for row in rows:
        record = (
            (by_config.get(row["config"]) or records.get(row["trial"])) if row["state"] != "FAIL" else None
        )
        if record is not None:
            out[row["trial"]] = record
    return out


def ranking_key(record: Mapping[str, Any]) -> tuple[int, float]:
    """Higher is better: (budget, ranking value). The winner is the record with the largest key."""
    return record["budget"], ranking_value(record)


__all__ = [
    "CLASSIFIER_METRIC",
    "DIVERGED_ACCURACY",
    "arm_at",
    "arm_summary",
    "best_arm",
    "candidate_records",
    "legacy_record",
    "metric_keys",
    "metric_of",
    "ranking_key",
    "ranking_value",
    "row_records",
]
