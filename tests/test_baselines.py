"""benchmarks/baselines.py: the random draw's exact expected best, and Optuna's pruned training search that
stops at its image budget (real training on the synthetic set, real Optuna)."""

from __future__ import annotations

import importlib.util
import itertools
import statistics
import sys
from pathlib import Path

import pytest

from normsearch.confirm.settings import ConfirmSettings

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "baselines.py"
_SPEC = importlib.util.spec_from_file_location("baselines", _PATH)
baselines = sys.modules.setdefault("baselines", importlib.util.module_from_spec(_SPEC))
_SPEC.loader.exec_module(baselines)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_random_draw_expected_best_equals_enumeration(m: int) -> None:
    accuracies = [0.31, 0.9, 0.55, 0.9, 0.12]  # a tie at the top
    brute = statistics.fmean(max(subset) for subset in itertools.combinations(accuracies, m))
    assert baselines.random_draw_expected_best(accuracies, m) == pytest.approx(brute, abs=1e-12)
    with pytest.raises(ValueError, match="1..5"):
        baselines.random_draw_expected_best(accuracies, 6)


def test_affordable_counts_whole_configs_at_least_one() -> None:
    assert baselines.affordable(10_000, 3_000, 8) == 3
    assert baselines.affordable(100, 3_000, 8) == 1
    assert baselines.affordable(10**9, 3_000, 8) == 8


def test_optuna_pruned_search_stops_at_its_image_budget() -> None:
    settings = ConfirmSettings(
        dataset="synthetic", resolution=4, depth=8, width=4, epochs=2, eta=2, batch_size=64, lr=0.1, seed=0
    )
    per_epoch = (1024 // 64) * 64  # the last partial batch is dropped
    budget = 2 * per_epoch + 3 * 64 + 10  # two whole epochs and part of a third
    configs = ["bn", "in", "ln", "none"]
    pick = baselines.optuna_pruned(configs, settings, budget, seed=0)
    assert budget - settings.batch_size < pick.spent_images <= budget  # no step over the budget
    assert pick.stopped == 1 and pick.budget_images == budget
    assert pick.config in configs and pick.lr in settings.learning_rates()
    assert pick.completed >= 1 and 0 < pick.accuracy <= 1
    again = baselines.optuna_pruned(configs, settings, budget, seed=0)
    assert again == pick  # seeded TPE, seeded training
    assert baselines.optuna_pruned(configs, settings, settings.batch_size - 1, seed=0) is None
