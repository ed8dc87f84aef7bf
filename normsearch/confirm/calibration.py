"""Do the probes predict training? Rank correlations between probe scores and the confirmed metric.

For a probe quantity q (lower is better: the search's ranking by the scalar score, and each probe score
folded as :func:`normsearch.score.folded` defines it, i.e. |activation_growth|, similarity,
max(grad_ratio, 1/grad_ratio) and step_loss_ratio; see :func:`lower_is_better`) and the confirmed
accuracies a of the same candidates,

    ρ = Spearman(−q, a'),   τ = Kendall τ-b(−q, a'),

with a' = a for candidates that trained, and a' = −1 (below every accuracy, tied among themselves) for
diverged ones, which so rank last. +1 means q orders the candidates exactly as training does, −1 exactly
backwards. For a language model a is −val_loss (lower loss is better), and a diverged one ranks −inf
(:func:`~normsearch.confirm.results.ranking_value`). A coefficient rests on ``n`` candidates; it is ``None`` for n < ``MIN_CANDIDATES`` or when one
side is constant (a correlation is undefined then).

Candidates trained for different budgets do not compare, so the calibration is taken at one budget
(:func:`calibration_budget`): the one at which the most candidates were trained (the first rung after a
multi-fidelity confirmation; every config at the final budget after ``confirm --all``), each candidate at
its best learning rate there. It is **exact** when that budget is the final one (the highest any candidate
reached) and every scored config was trained there: what ``confirm --all`` gives (:func:`where`). **Seed noise** (``seeds``): with ≥ 2 seeds, the same correlations between
the accuracies of seed i and seed j over the same candidates, averaged over the seed pairs: how well one
training run predicts another. No probe can predict the accuracy better than that ceiling.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from statistics import fmean
from typing import Any

from scipy import stats

from ..probes.runner import SCORES
from ..score import folded
from .results import arm_at, metric_of, ranking_value

QUANTITIES = ("score", "activation_growth", "similarity", "grad_ratio", "step_loss_ratio")
"""Probe quantities calibrated, each lower-is-better; keys of leaderboard rows and of the calibration."""
MIN_CANDIDATES = 3


def lower_is_better(row: Mapping[str, Any], name: str) -> Any:
    """A leaderboard row's value of ``name``, lower is better: a probe score folded
    (:func:`~normsearch.probes.scores.folded`: |growth|, max(g, 1/g)), else the row's own field (``score``,
    ``trial``, …); None stays None."""
    value = row.get(name)
    return folded(name, value) if isinstance(value, int | float) and name in SCORES else value


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


def calibration_budget(records: Mapping[int, Mapping[str, Any]]) -> int | None:
    """The budget (epochs) at which the most candidates were trained (on a tie, the larger); None if none."""
    counts: dict[int, int] = {}
    for record in records.values():
        for epochs in {arm["epochs"] for arm in record["rungs"]}:
            counts[epochs] = counts.get(epochs, 0) + 1
    return max(counts, key=lambda e: (counts[e], e), default=None)


def _higher(arm: Mapping[str, Any], value: float) -> float:
    """``value`` of ``arm``'s metric, signed so that higher is better (−val_loss)."""
    return value if metric_of(arm)[1] else -value


def seed_noise(arms: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """{"spearman", "kendall", "n", "pairs"}: the mean rank correlation between two seeds' accuracies over the
    arms (each with ``per_seed``: seed → accuracy), over every pair of seeds all arms share."""
    shared = sorted(set.intersection(*(set(a["per_seed"]) for a in arms)), key=int) if arms else []
    pairs = list(itertools.combinations(shared, 2))
    found = [
        rank_correlation(
            [-_higher(a, a["per_seed"][s]) for a in arms], [_higher(a, a["per_seed"][t]) for a in arms]
        )
        for s, t in pairs
    ]
    out: dict[str, Any] = {"n": len(arms), "pairs": len(pairs)}
    for name in ("spearman", "kendall"):
        values = [f[name] for f in found if f[name] is not None]
        out[name] = fmean(values) if values else None
    return out


def search_ranking(rows: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Trial number → position in the search's ranking: rows that pass the filters by ``score``, then the
    ``rejected`` ones by score (the order the leaderboard gives untrained rows); rows without a finite score
    are left out."""
    scored = [row for row in rows if _finite(row.get("score")) is not None]
    ordered = sorted(scored, key=lambda row: (row.get("rejected") is not None, row["score"], row["trial"]))
    return {row["trial"]: float(position) for position, row in enumerate(ordered)}


def calibrate(rows: Sequence[Mapping[str, Any]], records: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Correlations of each of :data:`QUANTITIES` with accuracy at :func:`calibration_budget`, and the seed
    noise there: {"budget": epochs, "final_budget": the highest epochs reached, "configs": scored rows,
    quantity: {"spearman", "kendall", "n"}, …, "seeds": {…, "pairs"}}.
    ``score`` is calibrated as the search ranks by it (:func:`search_ranking`: the filters first), the probe
    quantities as their objective values.

    ``rows``: leaderboard rows (``trial`` and the quantities); ``records``: trial number → candidate record
    (:mod:`normsearch.confirm.results`: ``rungs`` with each arm's ``epochs``, ``accuracy``, ``diverged``,
    ``per_seed``). Candidates not trained at that budget, or with a non-finite quantity, are left out.
    """
    budget = calibration_budget(records)
    arms = {trial: arm_at(record, budget) for trial, record in records.items()} if budget is not None else {}
    results = {trial: arm for trial, arm in arms.items() if arm is not None}
    ranking = search_ranking(rows)
    out: dict[str, Any] = {
        "budget": budget,
        "final_budget": max((a["epochs"] for r in records.values() for a in r["rungs"]), default=None),
        "configs": len(ranking),
    }
    for name in QUANTITIES:
        pairs = [
            (
                ranking.get(row["trial"]) if name == "score" else _finite(lower_is_better(row, name)),
                ranking_value(results[row["trial"]]),
            )
            for row in rows
            if row["trial"] in results
        ]
        pairs = [(q, a) for q, a in pairs if q is not None]
        out[name] = rank_correlation([q for q, _ in pairs], [a for _, a in pairs])
    out["seeds"] = seed_noise([results[row["trial"]] for row in rows if row["trial"] in results])
    return out


def epochs_text(epochs: int) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{epochs} epoch{'' if epochs == 1 else 's'}"


def where(calibration: Mapping[str, Any]) -> str:
    """What a calibration rests on, for its one-line summaries: ``at 1 epoch, n = 13 (the first rung; the
    exact calibration, every config at 3 epochs, is confirm --all's)``, or ``at 3 epochs, n = 13 (every
    config at the final budget: exact)``. ``calibration``: :func:`calibrate`'s (``n`` from its ``score``
    entry, or its own ``n``)."""
    budget, final = calibration["budget"], calibration.get("final_budget")
    n = calibration["score"]["n"] if "score" in calibration else calibration.get("n")
    configs = calibration.get("configs")
    head = f"at {epochs_text(budget)}, n = {n}"
    if final is None or configs is None:
        return head
    if budget < final:
        return (
            f"{head} (the first rung; the exact calibration, every config at {epochs_text(final)}, is "
            "confirm --all's)"
        )
    if n is not None and n >= configs:
        return f"{head} (every config at the final budget: exact)"
    return f"{head} of {configs} configs (the final budget)"


def describe(calibration: Mapping[str, Any]) -> str:
    """One line: ``calibration at 1 epoch, n = 8 (…): score ρ=+0.71 τ=+0.57 · … · seed-to-seed ρ=+0.90``
    (:func:`where` says what it rests on)."""

    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:+.2f}"

    parts = [
        f"{name} ρ={number(calibration[name]['spearman'])} τ={number(calibration[name]['kendall'])}"
        for name in QUANTITIES
    ]
    seeds = calibration.get("seeds", {})
    if seeds.get("pairs"):
        parts.append(f"seed-to-seed ρ={number(seeds['spearman'])} τ={number(seeds['kendall'])} (the ceiling)")
    return f"calibration {where(calibration)}: " + " · ".join(parts)
