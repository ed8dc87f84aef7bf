"""The leaderboard of a study: one row per distinct config, ranked by scalar score, as a table or JSON.

Rows (:func:`build_rows`): the first COMPLETE trial of each config stands for it (later samples of the same
config reuse its result and are counted in ``samples``). Order: stable rows by score (lower is better),
rejected ones after them (``rejected``: why the search's filters say it cannot train, else None), then
unstable ones (NaN/inf at init; capped worst scores), then, with ``include_failed``, failed trials
(interrupted ones included) with their reason. The four probe-score columns are the probes' own values;
``objectives`` holds what the study minimises (:func:`~normsearch.search.objective_values`: similarity,
step loss ratio). ``pareto`` marks the stable, not rejected rows no other such row beats on all objectives
(≤ on each, < on one). Confirmation results,
which the confirm stage stores as
study user attrs ``confirm:<trial>`` (Optuna cannot update finished trials), add ``accuracy`` and
``diverged`` to their rows, and the whole record as ``confirm``; ``calibration`` holds how well the score predicts them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich import box
from rich.table import Table
from rich.text import Text

from .confirm import store
from .confirm.calibration import lower_is_better
from .probes import SCORES
from .search import OBJECTIVES, trial_score
from .space import ScoreWeights

ROW_KEYS = (
    "rank", "trial", "config", "baseline", "pareto", "state", *SCORES, "score", "rejected",
)
"""Keys every row has (the ``--json`` contract); more follow them."""
SORT_FIELDS = {"score": 1, "activation_growth": 1, "similarity": 1, "grad_ratio": 1, "step_loss_ratio": 1,
               "accuracy": -1, "trial": 1}
"""Sortable fields and their direction (1: ascending is better, -1: descending)."""
STATE_ORDER = {"COMPLETE": 0, "UNSTABLE": 1, "FAIL": 2}
CAPTION = (
    "★ Pareto front   B baseline   R rejected (cannot train)   best: similarity low, step ratio low, "
    "score low"
)


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


def _merge_confirmation(study: optuna.Study, rows: list[dict[str, Any]]) -> None:
    records = store.results(study)  # one storage read for all rows
    for row in rows:
        confirmed = records.get(row["trial"])
        if confirmed is not None:
            row["accuracy"] = confirmed.get("accuracy")
            row["diverged"] = bool(confirmed.get("diverged", False))
            row["confirm"] = confirmed


def _sort_key(field: str):
    direction = SORT_FIELDS[field]

    def key(row: dict[str, Any]) -> tuple:
        value = lower_is_better(row, field)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return (STATE_ORDER[row["state"]], row["rejected"] is not None, missing, 0 if missing else direction * value,
                row["score"] or 0, row["trial"])

    return key


def sort_rows(rows: list[dict[str, Any]], field: str = "score") -> list[dict[str, Any]]:
    """Rows ordered by ``field`` within state groups (complete, unstable, failed), ranks renumbered 1…n."""
    if field not in SORT_FIELDS:
        raise ValueError(f"cannot sort by {field!r}; allowed: {', '.join(SORT_FIELDS)}")
    ordered = sorted(rows, key=_sort_key(field))
    for rank, row in enumerate(ordered, 1):
        row["rank"] = rank
    return ordered


def build_rows(study: optuna.Study, *, include_failed: bool = False) -> list[dict[str, Any]]:
    """The leaderboard rows of a study, sorted by rank (scalar score); see the module docstring."""
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
    _merge_confirmation(study, rows)
    return sort_rows(rows)


def calibration(study: optuna.Study) -> dict[str, Any] | None:
    """The score's calibration against confirmed accuracy ({spearman, kendall, n}), if confirmed."""
    stored = store.calibration(study)
    score = stored.get("score") if isinstance(stored, dict) else None
    return score if isinstance(score, dict) else None


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """Trials of the study by state (lower-case state names, plus ``total``)."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    counts["total"] = sum(counts.values())
    return counts


def document(study: optuna.Study, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``--json`` document: study, space, weights, trial counts, rows, and calibration if present."""
    doc: dict[str, Any] = {
        "study": study.study_name,
        "space": study.user_attrs.get("space", {}).get("name"),
        "objectives": list(OBJECTIVES),
        "weights": study.user_attrs.get("weights"),
        "probe_matches_confirm": study.user_attrs.get("probe_matches_confirm"),
        "probe_differs": study.user_attrs.get("probe_differs"),
        "trials": trial_counts(study),
        "rows": rows,
    }
    cal = calibration(study)
    if cal is not None:
        doc["calibration"] = cal
    return doc


# ------------------------------------------------------------------------------------------------------
# The table


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def _accuracy(row: dict[str, Any]) -> Text:
    if row.get("diverged"):
        return Text("diverged", style="red")
    accuracy = row.get("accuracy")
    return Text("-" if accuracy is None else f"{100 * accuracy:.1f}%")


def table(study_name: str, rows: list[dict[str, Any]], *, total: int | None = None) -> Table:
    """A rich table of rows: rank, markers (★ Pareto front, B baseline), config, probe scores, score,
    confirmed accuracy when any row has one, state and trial number."""
    confirmed = any("accuracy" in row for row in rows)
    shown = f"top {len(rows)} of {total}" if total is not None and total > len(rows) else f"{len(rows)} configs"
    grid = Table(title=f"normsearch leaderboard: {study_name} ({shown})", title_justify="left",
                 box=box.SIMPLE_HEAD, caption=CAPTION, caption_justify="left")
    grid.add_column("#", justify="right")
    grid.add_column("", no_wrap=True)
    grid.add_column("config", no_wrap=True)
    for name in ("growth", "similarity", "grad ratio", "step ratio", "score"):
        grid.add_column(name, justify="right")
    if confirmed:
        grid.add_column("accuracy", justify="right")
    grid.add_column("state")
    grid.add_column("trial", justify="right")
    for row in rows:
        marks = Text("★" if row["pareto"] else " ", style="yellow")
        marks.append("B" if row["baseline"] else "", style="cyan")
        marks.append("R" if row["rejected"] else "", style="red")
        state = {"COMPLETE": Text("ok", style="green"), "UNSTABLE": Text("unstable", style="yellow"),
                 "FAIL": Text("failed", style="red")}[row["state"]]
        cells = [str(row["rank"]), marks, row["config"] or "?",
                 *(_number(row[name]) for name in SCORES), _number(row["score"])]
        if confirmed:
            cells.append(_accuracy(row))
        grid.add_row(*cells, state, str(row["trial"]))
    return grid


def calibration_line(cal: dict[str, Any] | None) -> str | None:
    """One line under the table on how well the score ranked the confirmed candidates."""
    if cal is None:
        return None
    return (f"calibration of the score against confirmed accuracy over {cal.get('n', '?')} candidates: "
            f"Spearman {_number(cal.get('spearman'), 2)}, Kendall {_number(cal.get('kendall'), 2)}")


def failure_lines(rows: list[dict[str, Any]]) -> list[str]:
    """'trial N: reason' for failed rows (shown under the table with --all)."""
    return [f"trial {row['trial']} ({row['config'] or '?'}): {row['reason']}" for row in rows if row["state"] == "FAIL"]


__all__ = [
    "ROW_KEYS",
    "SORT_FIELDS",
    "build_rows",
    "calibration",
    "calibration_line",
    "document",
    "failure_lines",
    "pareto_mask",
    "sort_rows",
    "table",
    "trial_counts",
]
