"""From finished work units to one record per candidate: its best learning rate at the highest budget reached.

An *arm* is a candidate at one learning rate and budget (epochs); its runs are its units over seeds at the
default batch size. Per arm (:func:`arm_summary`): ``accuracy`` = mean over seeds of each run's best
validation accuracy, ``accuracy_std`` = their sample standard deviation (0 for one seed),
``final_accuracy`` = mean last-epoch accuracy, ``diverged`` / ``collapsed`` = some seed diverged /
collapsed (:mod:`normsearch.train`), ``per_seed`` = seed → accuracy. Arms are compared by
:func:`ranking_accuracy` (a diverged arm below every other).

A candidate's record (:func:`candidate_records`): ``budget`` = the highest epochs it was trained for, ``lr``
= its best learning rate there, and that arm's numbers (``accuracy``, ``accuracy_std``, ``final_accuracy``,
``diverged``, ``collapsed``, ``seeds`` = the per-seed run records); ``rungs`` = every arm's summary (epochs,
lr, …); ``seconds`` and ``images`` = totals over all its units; ``images_per_s`` = mean throughput. With
small-batch units at its best arm, ``small_batch`` = {``batch_size``, ``accuracy``, ``drop`` = accuracy −
small-batch accuracy, ``seeds``}. A candidate trained at one learning rate that diverged and at another
that trained is therefore not diverged: it needs the smaller learning rate, and is judged at it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from statistics import fmean, stdev
from typing import Any

from optuna.trial import FrozenTrial

DIVERGED_ACCURACY = -1.0


def ranking_accuracy(record: Mapping[str, Any]) -> float:
    """The accuracy an arm or candidate is ranked by: its ``accuracy``, or ``DIVERGED_ACCURACY`` (below every
    accuracy) if it diverged."""
    return DIVERGED_ACCURACY if record["diverged"] else float(record["accuracy"])


def arm_summary(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Summary of one arm's per-seed run records (see the module docstring)."""
    accuracies = [r["accuracy"] for r in runs]
    return {
        "accuracy": fmean(accuracies),
        "accuracy_std": stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "final_accuracy": fmean(r["final_accuracy"] for r in runs),
        "diverged": any(r["diverged"] for r in runs),
        "collapsed": any(r.get("collapsed", False) for r in runs),
        "n": len(runs),
        "per_seed": {str(r["seed"]): r["accuracy"] for r in runs},
    }


def best_arm(arms: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The arm with the highest ranking accuracy (the larger learning rate on a tie), or None."""
    return max(arms, key=lambda a: (ranking_accuracy(a), a["lr"]), default=None)


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
    record: dict[str, Any] = {
        "config": config,
        "trial": min(u.user_attrs["trial"] for u in units),
        "budget": budget,
        "lr": best["lr"],
        **{k: best[k] for k in ("accuracy", "accuracy_std", "final_accuracy", "diverged", "collapsed")},
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
        record["small_batch"] = {
            "batch_size": batch,
            "accuracy": summary["accuracy"],
            "drop": record["accuracy"] - summary["accuracy"],
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
    """Higher is better: (budget, ranking accuracy). The winner is the record with the largest key."""
    return record["budget"], ranking_accuracy(record)


__all__ = [
    "DIVERGED_ACCURACY",
    "arm_at",
    "arm_summary",
    "best_arm",
    "candidate_records",
    "legacy_record",
    "ranking_accuracy",
    "ranking_key",
    "row_records",
]
