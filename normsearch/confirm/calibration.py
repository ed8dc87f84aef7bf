"""Do the probes predict training? Rank correlations between probe scores and confirmed accuracy.

For a probe quantity q (lower is better: the scalar score and the study's three objective values, i.e.
|activation_growth|, similarity and max(grad_ratio, 1/grad_ratio); see :func:`lower_is_better`) and the
confirmed accuracies a of the same candidates,

    ρ = Spearman(−q, a'),   τ = Kendall τ-b(−q, a'),

with a' = a for candidates that trained, and a' = −1 (below every accuracy, tied among themselves) for
diverged ones, which so rank last. +1 means q orders the candidates exactly as training does, −1 exactly
backwards. A coefficient rests on ``n`` candidates; it is ``None`` for n < ``MIN_CANDIDATES`` or when one
side is constant (a correlation is undefined then).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from scipy import stats

QUANTITIES = ("score", "activation_growth", "similarity", "grad_ratio", "step_loss_ratio")
"""Probe quantities calibrated, each lower-is-better; keys of leaderboard rows and of the calibration."""
MIN_CANDIDATES = 3
DIVERGED_ACCURACY = -1.0


def lower_is_better(row: Mapping[str, Any], name: str) -> Any:
    """A leaderboard row's value of ``name`` as the search ranks it: an objective value for a probe score
    (``row["objectives"]``), else the row's own field (``score``, ``trial``, …)."""
    return row.get("objectives", {}).get(name, row.get(name))


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def rank_correlation(lower_is_better: Sequence[float], accuracy: Sequence[float]) -> dict[str, Any]:
    """{"spearman": ρ, "kendall": τ-b, "n": n} of −lower_is_better against accuracy (paired sequences)."""
    if len(lower_is_better) != len(accuracy):
        raise ValueError(f"paired sequences differ in length: {len(lower_is_better)} vs {len(accuracy)}")
    n = len(accuracy)
    result: dict[str, Any] = {"spearman": None, "kendall": None, "n": n}
    if n < MIN_CANDIDATES or len(set(lower_is_better)) < 2 or len(set(accuracy)) < 2:
        return result
    negated = [-q for q in lower_is_better]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result["spearman"] = _finite(stats.spearmanr(negated, accuracy).statistic)
        result["kendall"] = _finite(stats.kendalltau(negated, accuracy).statistic)
    return result


def ranking_accuracy(record: Mapping[str, Any]) -> float:
    """The accuracy a candidate is ranked by: its accuracy, or ``DIVERGED_ACCURACY`` if it diverged."""
    return DIVERGED_ACCURACY if record["diverged"] else float(record["accuracy"])


def calibrate(rows: Sequence[Mapping[str, Any]], results: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Correlations of each of :data:`QUANTITIES` with accuracy over the confirmed rows.

    ``rows``: leaderboard rows (``trial`` and the quantities); ``results``: trial number → confirmation
    record (``accuracy``, ``diverged``). Rows without a record, or with a non-finite quantity, are left out
    of that quantity's correlation.
    """
    out = {}
    for name in QUANTITIES:
        pairs = [
            (_finite(lower_is_better(row, name)), ranking_accuracy(results[row["trial"]]))
            for row in rows
            if row["trial"] in results
        ]
        pairs = [(q, a) for q, a in pairs if q is not None]
        out[name] = rank_correlation([q for q, _ in pairs], [a for _, a in pairs])
    return out


def describe(calibration: Mapping[str, Any]) -> str:
    """One line: ``calibration (n=8): score ρ=+0.71 τ=+0.57 · activation_growth ρ=… · …``."""

    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:+.2f}"

    n = calibration["score"]["n"]
    parts = [f"{name} ρ={number(c['spearman'])} τ={number(c['kendall'])}" for name, c in calibration.items()]
    return f"calibration (n={n}): " + " · ".join(parts)
