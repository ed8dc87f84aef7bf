"""What a user could do instead of normsearch at the same training cost (benchmarks/regret.py's baselines).

- **Random draw** (:func:`random_draw_expected_best`): pick m of the N configs uniformly at random, train each
  at every learning rate for the final budget and keep the best. With the ``confirm --all`` accuracies sorted
  a_(1) ≥ … ≥ a_(N), the best of the subset is a_(i) with probability C(N − i, m − 1) / C(N, m) (a_(i) drawn,
  a_(1) … a_(i−1) not), so

      E[best of m] = Σ_i a_(i) · C(N − i, m − 1) / C(N, m),

  exact, with no sampling. m = the number of whole configs the budget affords (:func:`affordable`).
- **Optuna on training alone** (:func:`optuna_pruned`): TPE (seeded) over (config, learning rate) with
  Optuna's ``HyperbandPruner`` (or ``SuccessiveHalvingPruner``) over epochs, each trial one
  :func:`normsearch.train.train` run reporting validation accuracy after every epoch. Training images are
  counted step by step (batch size per step); a step that would take the total over the budget is not taken,
  so the spent images never exceed it. The pick: the best completed trial (final-epoch accuracy), else the
  best trial at the most epochs reached.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import optuna

from normsearch.confirm.settings import ConfirmSettings
from normsearch.train import TrainProgress, train

PRUNERS = ("hyperband", "halving")


def random_draw_expected_best(accuracies: Sequence[float], m: int) -> float:
    """E[max accuracy of a uniformly random m-subset of ``accuracies``] (module docstring); 1 ≤ m ≤ N."""
    n = len(accuracies)
    if not 1 <= m <= n:
        raise ValueError(f"subset size must be in 1..{n}, got {m}")
    ordered = sorted(accuracies, reverse=True)
    total = math.comb(n, m)
    return sum(a * math.comb(n - i, m - 1) for i, a in enumerate(ordered, start=1)) / total


def affordable(budget_images: int, images_per_config: int, configs: int) -> int:
    """Whole configs (each trained at every learning rate for the final budget) that ``budget_images`` pays
    for, between 1 (a random draw trains at least one) and ``configs``."""
    return max(1, min(configs, budget_images // images_per_config))


class BudgetSpent(Exception):
    """Raised inside a training run when its next step would take the search over its image budget."""


@dataclass(frozen=True)
class OptunaPick:
    """The pruned training search's result: its pick, trials by state and images trained (≤ budget)."""

    config: str
    lr: float
    accuracy: float
    epochs: int
    spent_images: int
    budget_images: int
    completed: int
    pruned: int
    stopped: int


def optuna_pruned(
    configs: Sequence[str],
    settings: ConfirmSettings,
    budget_images: int,
    *,
    seed: int,
    pruner: str = "hyperband",
    max_trials: int = 200,
) -> OptunaPick | None:
    """TPE with a pruner over ``configs`` × ``settings.learning_rates()``, training with ``settings`` (seed
    ``seed``) for up to ``settings.epochs`` epochs per trial, until ``budget_images`` are spent (module
    docstring). A (config, lr) already completed is not trained again (same seed, same result: no cost).
    None when the budget does not pay for one epoch of any trial."""
    if pruner not in PRUNERS:
        raise ValueError(f"pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    rates = settings.learning_rates()
    resources = {"min_resource": 1, "max_resource": settings.epochs, "reduction_factor": settings.eta}
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(**resources)
        if pruner == "hyperband"
        else optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=settings.eta, min_early_stopping_rate=0
        ),
    )
    spent = 0
    done: dict[tuple[str, float], float] = {}
    reached: dict[int, tuple[int, float]] = {}  # trial → (epochs completed, last accuracy)
    stopped = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal spent
        config = trial.suggest_categorical("config", list(configs))
        lr = trial.suggest_categorical("lr", rates)
        if (config, lr) in done:
            return done[(config, lr)]
        run = dataclasses.replace(settings, lr=lr, lr_factors=(1.0,), seeds=1)
        counted = 0

        def count(progress: TrainProgress) -> None:
            nonlocal spent, counted
            step_images = (progress.step - counted) * run.batch_size
            counted = progress.step
            spent += step_images
            if spent + run.batch_size > budget_images:
                raise BudgetSpent

        def report(epoch: int, accuracy: float) -> None:
            reached[trial.number] = (epoch, accuracy)
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned

        result = train(config, run, seed=seed, progress=count, on_epoch=report)
        done[(config, lr)] = result.final_accuracy
        return result.final_accuracy

    while spent + settings.batch_size <= budget_images and len(study.trials) < max_trials:
        if len(done) == len(configs) * len(rates):
            break
        try:
            study.optimize(objective, n_trials=1, catch=())
        except BudgetSpent:
            stopped += 1
            break
    states = [t.state for t in study.trials]
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if completed:
        best = max(completed, key=lambda t: (t.value, -t.number))
        pick, accuracy, epochs = best, best.value, settings.epochs
    elif reached:
        number = max(reached, key=lambda k: (*reached[k], -k))
        pick, (epochs, accuracy) = study.trials[number], reached[number]
    else:
        return None
    return OptunaPick(
        config=pick.params["config"],
        lr=pick.params["lr"],
        accuracy=accuracy,
        epochs=epochs,
        spent_images=spent,
        budget_images=budget_images,
        completed=len(completed),
        pruned=states.count(optuna.trial.TrialState.PRUNED),
        stopped=stopped,
    )
