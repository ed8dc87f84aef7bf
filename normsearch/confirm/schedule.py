"""Synchronous successive halving over (candidate, learning rate) arms, rung by rung.

Rung r trains every arm still in for ``rung_epochs(settings)[r]`` epochs (a fresh run with its own
schedule, one unit per seed), then the best ⌊n/η⌋ arms (at least one) by the mean of the task's metric over
seeds (:func:`~normsearch.confirm.results.ranking_value`: diverged arms last; ties: admission order, then the
order of ``lr_factors``) of the configs other than the default layer (``settings.default``) advance to
the next rung, and with them the default's best arm: the default always reaches the final budget, with
the same seeds as the winner, and never takes a candidate's place. A candidate enters rung 0 with one arm per
learning rate, so one that needs the smaller learning rate advances with it. Units that do not fit the
network drop out.

Why not Optuna's ``SuccessiveHalvingPruner`` / ``HyperbandPruner``: they are asynchronous (ASHA): a trial is
stopped when it reports below the rung's quantile *of the trials that reported before it*, so the first
trials at a rung are never pruned, the outcome depends on the order and timing of the trials, and a pruned
trial is a stopped run rather than a shorter one with its own schedule. Here each budget is a complete
run (its cosine schedule ends), the rung's whole field is known before anyone is promoted, and the result
is the same for any order or number of processes. Optuna still provides the queue (enqueued trials
claimed atomically), the per-epoch curves (intermediate values) and the storage (:mod:`.units`).
"""

from __future__ import annotations

from collections.abc import Sequence

from .results import arm_summary, ranking_value
from .select import Candidate
from .settings import ConfirmSettings, rung_epochs
from .units import Finished, Started, Unit, UnitQueue

Arm = tuple[Candidate, float]
"""A candidate at one learning rate."""


def seed_list(settings: ConfirmSettings) -> list[int]:
    """Training seeds: seed, seed + 1, … (``seeds`` of them)."""
    return [settings.seed + i for i in range(settings.seeds)]


def rung_units(
    arms: Sequence[Arm], epochs: int, seeds: Sequence[int], batch_size: int | None = None
) -> list[Unit]:
    return [Unit(c.trial, c.config, epochs, lr, s, batch_size) for c, lr in arms for s in seeds]


def promote(arms: Sequence[Arm], runs: dict[Arm, list[dict]], eta: int, keep: str | None = None) -> list[Arm]:
    """The best ⌊len(arms)/eta⌋ arms (at least one) with runs, by the mean metric, among those of other configs
    than ``keep`` (the default layer), then the best arm of ``keep`` (see the module docstring)."""
    order = {arm: i for i, arm in enumerate(arms)}
    trained = [arm for arm in arms if runs.get(arm)]
    ranked = sorted(trained, key=lambda a: (-ranking_value(arm_summary(runs[a])), order[a]))
    others = [arm for arm in ranked if arm[0].config != keep]
    kept = [arm for arm in ranked if arm[0].config == keep][:1]
    return others[: max(1, len(arms) // eta)] + kept


def run_rungs(
    candidates: Sequence[Candidate],
    settings: ConfirmSettings,
    queue: UnitQueue,
    *,
    started: Started,
    finished: Finished,
    rung_started=lambda r, n, epochs, units: None,
) -> list[Arm]:
    """Train the rungs; returns the arms of the last rung. ``rung_started(r, rungs, epochs, units)`` announces
    each rung. With ``small_batch``, the last rung's arms are also trained at that batch size."""
    lrs = settings.learning_rates()
    arms: list[Arm] = [(c, lr) for c in candidates for lr in lrs]
    seeds = seed_list(settings)
    budgets = rung_epochs(settings)
    for r, epochs in enumerate(budgets):
        units = rung_units(arms, epochs, seeds)
        rung_started(r, len(budgets), epochs, units)
        done = queue.complete(units, started=started, finished=finished)
        runs = {
            arm: [
                {**done[u.key(queue.training)].user_attrs["run"], "seed": u.seed}
                for u in rung_units([arm], epochs, seeds)
                if "run" in done[u.key(queue.training)].user_attrs
            ]
            for arm in arms
        }
        if r < len(budgets) - 1:
            arms = promote(arms, runs, settings.eta, keep=settings.default)
        else:
            arms = [arm for arm in arms if runs[arm]]
    if settings.small_batch:
        queue.complete(
            rung_units(_best_per_candidate(arms, runs), budgets[-1], seeds, settings.small_batch),
            started=started,
            finished=finished,
        )
    return arms


def _best_per_candidate(arms: Sequence[Arm], runs: dict[Arm, list[dict]]) -> list[Arm]:
    best: dict[str, Arm] = {}
    for arm in sorted(arms, key=lambda a: (-ranking_value(arm_summary(runs[a])), -a[1])):
        best.setdefault(arm[0].config, arm)
    return list(best.values())
