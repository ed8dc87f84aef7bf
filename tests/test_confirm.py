"""Confirmation on a real Optuna journal study: admission to the first rung (Pareto exploration, rejected rows),
successive halving, learning-rate sets, collapse, work units in the companion study (reuse, resume after a
kill), the winner, training cost, calibration with seed noise, and the confirm/calibrate commands."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from rich.console import Console
from scipy import stats
from typer.testing import CliRunner

from normsearch.cli import app
from normsearch.confirm import ConfirmSettings, confirm_study, load_confirmation, select_candidates
from normsearch.confirm.calibration import calibrate, describe, rank_correlation, seed_noise
from normsearch.confirm.results import DIVERGED_ACCURACY, candidate_records
from normsearch.confirm.schedule import promote, run_rungs
from normsearch.confirm.select import Candidate
from normsearch.confirm.settings import rung_epochs, schedule_cost
from normsearch.confirm.units import Unit, UnitQueue, companion, training_digest, training_settings
from normsearch.data import load_data
from normsearch.leaderboard import build_rows, outcome, winner
from normsearch.settings import SettingsError
from normsearch.storage import open_study
from normsearch.train import collapse_threshold, train

runner = CliRunner()
TRAIN = {
    "depth": 8,
    "width": 8,
    "epochs": 1,
    "batch_size": 64,
    "device": "cpu",
    "lr_factors": [1.0],
    "max_cost": None,  # every admitted candidate: the counts below are the schedule's, uncut
}
TINY = (
    "space:\n"
    "  preset: {choices: [bn, ln, in, rms, none]}\n"
    "probe: {depth: 8, width: 8, batch_size: 16, seeds: 1, resolution: 8}\n"
    "search: {n_trials: 5, sampler: brute_force}\n"
    "confirm: {top_k: 1, explore: 0, depth: 8, width: 8, epochs: 1, batch_size: 64, device: cpu, lr_factors: [1],"
    " max_cost: null}\n"
)
CLI = [sys.executable, "-c", "from normsearch.cli import app; app()"]
DIGIT_IMAGES = (
    len(load_data("digits").train) // 64 * 64
)  # images of one epoch at batch 64 (last batch dropped)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``normsearch run --no-confirm`` of the tiny space: 5 presets probed, bn/ln/in enqueued as baselines."""
    root = tmp_path_factory.mktemp("searched")
    (root / "tiny.yaml").write_text(TINY)
    result = runner.invoke(
        app, ["run", "--space", str(root / "tiny.yaml"), "--runs-dir", str(root / "runs"), "--no-confirm"]
    )
    assert result.exit_code == 0, result.stderr
    return root / "runs"


@pytest.fixture
def runs(searched: Path, tmp_path: Path) -> Path:
    """A private copy of the searched study (confirmation writes to it)."""
    return Path(shutil.copytree(searched, tmp_path / "runs"))


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def _units(study: optuna.Study, state: TrialState = TrialState.COMPLETE) -> list[optuna.trial.FrozenTrial]:
    return companion(study).get_trials(states=(state,))


def _images(units: list[optuna.trial.FrozenTrial]) -> int:
    """Training images of these units: every epoch of digits at batch 64, or up to the step a run diverged at."""
    return sum(
        t.user_attrs["run"]["steps"] * 64
        if t.user_attrs["run"]["diverged"]
        else t.user_attrs["epochs"] * DIGIT_IMAGES
        for t in units
    )


# ---------------------------------------------------------------------------------------------------------
# admission and promotion


def _row(trial: int, config: str, score: float, baseline: bool = False, **extra) -> dict:
    return {
        "trial": trial,
        "config": config,
        "score": score,
        "baseline": baseline,
        "state": "COMPLETE",
        **extra,
    }


def test_selection_top_k_baselines_random_and_one_trial_per_config():
    rows = [
        _row(0, "bn", 5.0, True),
        _row(1, "ln", 1.0, True),
        _row(2, "a", 2.0),
        _row(3, "b", 3.0),
        _row(4, "a", 1.5),
        _row(5, "c", 4.0),
        _row(6, "d", 6.0),
        _row(7, "e", 7.0),
        _row(8, "bn", 0.5),
    ]
    uncut = {"max_cost": None}
    chosen = select_candidates(rows, ConfirmSettings(top_k=2, random=0, explore=0, **uncut))
    assert [(c.trial, c.config, c.reason) for c in chosen] == [
        (8, "bn", "default"),  # the default first, always
        (4, "a", "top"),
        (3, "b", "top"),
        (1, "ln", "baseline"),
    ]
    assert chosen[0].baseline and not chosen[1].baseline  # bn stays a baseline though trial 8 was sampled
    no_baselines = ConfirmSettings(top_k=1, baselines=False, **uncut)
    assert [c.config for c in select_candidates(rows, no_baselines)] == ["bn", "ln"]  # ln competes as a top
    picks = [
        select_candidates(rows, ConfirmSettings(top_k=1, random=2, seed=s, **uncut)) for s in (0, 0, 1, 2, 3)
    ]
    assert picks[0] == picks[1]  # seeded
    extras = [tuple(c.config for c in p if c.reason == "random") for p in picks]
    assert all(len(e) == 2 and set(e) <= {"b", "c", "d", "e"} for e in extras)
    assert len(set(extras)) > 1  # the seed changes the pick
    assert len(select_candidates(rows, ConfirmSettings(top_k=0, random=99, **uncut))) == 7  # all 7 configs


def test_exploration_admits_the_pareto_front_and_rejected_or_unstable_rows_stay_out():
    def objectives(g: float, s: float, r: float) -> dict:
        return {"objectives": {"activation_growth": g, "similarity": s, "grad_ratio": r}}

    rows = [
        _row(0, "best-score", 1.0, pareto=True, **objectives(0.5, 0.5, 0.5)),
        _row(1, "low-similarity", 9.0, pareto=True, **objectives(0.8, 0.1, 0.9)),  # the score ranks it last
        _row(2, "low-ratio", 8.0, pareto=True, **objectives(0.9, 0.9, 0.1)),
        _row(3, "middle", 2.0, **objectives(0.6, 0.6, 0.6)),
        _row(
            4,
            "rejected",
            0.5,
            pareto=True,
            rejected="one-step loss ratio 3.1 > 1",
            **objectives(0.1, 0.9, 0.9),
        ),
        _row(5, "unstable", 0.1, state="UNSTABLE", **objectives(9, 9, 9)),
    ]

    def admitted(**settings) -> list:  # besides the default bn, which is not in these rows
        chosen = select_candidates(rows, ConfirmSettings(max_cost=None, **settings))
        assert chosen[0] == Candidate(-1, "bn", True, "default")
        return chosen[1:]

    plain = admitted(top_k=2, explore=0)
    assert [c.config for c in plain] == ["best-score", "middle"]  # not rejected, not unstable
    explored = admitted(top_k=2, explore=1)
    assert [(c.config, c.reason) for c in explored][2] == (
        "low-similarity",
        "pareto",
    )  # best remaining on growth
    both = admitted(top_k=2, explore=5)
    assert {c.config for c in both} == {"best-score", "middle", "low-similarity", "low-ratio"}


def test_promotion_keeps_the_best_third_of_the_arms():
    arms = [(Candidate(i, f"c{i}", False, "top"), lr) for i in range(3) for lr in (0.1, 0.025)]
    accuracy = dict(zip(arms, [0.5, 0.9, 0.2, 0.3, 0.95, 0.1], strict=True))
    runs = {
        arm: [{"accuracy": a, "final_accuracy": a, "diverged": arm == arms[4], "seed": 0}]
        for arm, a in accuracy.items()
    }
    assert promote(arms, runs, eta=3) == [arms[1], arms[0]]  # arms[4] is best but diverged: ranked last
    assert promote(arms, runs, eta=2) == [arms[1], arms[0], arms[3]]
    assert promote(arms[:2], runs, eta=3) == [arms[1]]  # at least one advances


def test_the_default_always_reaches_the_next_rung_at_its_best_learning_rate():
    arms = [
        (Candidate(i, c, False, "top"), lr) for i, c in enumerate(("a", "bn", "b")) for lr in (0.1, 0.025)
    ]
    accuracy = dict(zip(arms, [0.9, 0.8, 0.5, 0.6, 0.95, 0.7], strict=True))
    runs = {
        arm: [{"accuracy": a, "final_accuracy": a, "diverged": False, "seed": 0}]
        for arm, a in accuracy.items()
    }
    assert promote(arms, runs, eta=3) == [arms[4], arms[0]]  # bn (arms 2, 3) is not among the best two
    assert promote(arms, runs, eta=3, keep="bn") == [arms[4], arms[0], arms[3]]  # its best arm comes along
    # the default never takes a candidate's place: b's best arm is the best, and a's still advances
    assert promote(arms, runs, eta=3, keep="b") == [arms[0], arms[1], arms[4]]


def test_the_cost_cap_cuts_admissions_from_the_end_and_keeps_the_default():
    # classic: 13 configs, lr × [1, 0.25], rungs 1 and 3 epochs; --all trains 13 · 2 · 3 = 78 run-epochs.
    # 5 admitted: rung 1 trains 10 arms for 1 epoch, rung 2 the best 10 // 3 = 3 and the default for 3.
    settings = ConfirmSettings()
    assert schedule_cost(5, 13, settings) == pytest.approx((10 * 1 + 4 * 3) / 78)
    assert schedule_cost(6, 13, settings) == pytest.approx((12 * 1 + 5 * 3) / 78)  # 0.35: over 0.3
    rows = [_row(t, c, float(t), c in ("ln", "in")) for t, c in enumerate("abcdefghijk")]
    rows += [_row(11, "ln", 0.5, True), _row(12, "in", 20.0, True, rejected="collapse")]
    capped = select_candidates(rows, ConfirmSettings(top_k=3, explore=0))
    # the default bn first (not in the study: trial -1, and not counted among its 13 configs), the top 3,
    # then the baseline ln: 5 cost 22/78 = 0.28, 6 would cost 27/78 = 0.35, so in is cut
    assert [(c.trial, c.config, c.reason) for c in capped] == [
        (-1, "bn", "default"),
        (0, "a", "top"),
        (1, "b", "top"),
        (2, "c", "top"),
        (11, "ln", "baseline"),
    ]
    assert schedule_cost(len(capped) + 1, 13, settings) > 0.3 >= schedule_cost(len(capped), 13, settings)
    uncapped = select_candidates(rows, ConfirmSettings(top_k=3, explore=0, max_cost=None))
    assert [c.config for c in uncapped] == ["bn", "a", "b", "c", "ln", "in"]  # in: rejected, but a baseline
    tight = select_candidates(rows, ConfirmSettings(top_k=3, explore=0, max_cost=0.0))
    assert [c.config for c in tight] == ["bn", "a"]  # the default and the best other candidate always stay


def test_rung_budgets():
    assert rung_epochs(ConfirmSettings()) == [1, 3]
    assert rung_epochs(ConfirmSettings(epochs=10, min_epochs=1, eta=3)) == [1, 3, 10]
    assert rung_epochs(ConfirmSettings(epochs=8, min_epochs=1, eta=2)) == [1, 2, 4, 8]
    assert rung_epochs(ConfirmSettings(epochs=3, min_epochs=3)) == [3]


# ---------------------------------------------------------------------------------------------------------
# collapse, learning rates


def test_collapse_threshold_by_hand():
    balanced = torch.arange(100) % 10  # p = 0.1, n = 100: 0.1 + 3·sqrt(0.09/100) = 0.19
    assert collapse_threshold(balanced) == pytest.approx(0.19)
    skewed = torch.tensor([0] * 75 + [1] * 25)  # a constant guess scores 0.75: 0.75 + 3·sqrt(0.1875/100)
    assert collapse_threshold(skewed) == pytest.approx(0.75 + 3 * 0.1875**0.5 / 10)


def test_a_run_at_chance_is_collapsed_and_a_trained_one_is_not():
    still = train("bn", ConfirmSettings(**{**TRAIN, "lr": 0.0}), seed=0)  # learns nothing
    trained = train("bn", ConfirmSettings(**TRAIN), seed=0)
    labels = load_data("digits").val.tensors[1]
    assert still.final_accuracy <= collapse_threshold(labels) and still.collapsed and not still.diverged
    assert trained.final_accuracy > 0.5 and not trained.collapsed
    assert still.to_dict()["collapsed"] is True


@pytest.mark.slow
def test_the_learning_rate_set_picks_the_best_lr(runs: Path):
    """At lr 20 the network diverges; at 20 × 0.005 = 0.1 it trains: the candidate is judged at 0.1."""
    study = open_study("tiny", runs)
    settings = ConfirmSettings(**{**TRAIN, "lr": 20.0, "lr_factors": [1.0, 0.005]})
    queue = UnitQueue(study, settings)
    candidate = Candidate(0, "bn", True, "baseline")
    arms = run_rungs(
        [candidate], settings, queue, started=lambda unit: None, finished=lambda unit, trial: None
    )
    assert [lr for _, lr in arms] == [20.0, 0.1]
    record = candidate_records(_units(study))[0]
    assert record["lr"] == 0.1 and not record["diverged"] and record["accuracy"] > 0.5
    by_lr = {arm["lr"]: arm for arm in record["rungs"]}
    assert by_lr[20.0]["diverged"] or by_lr[20.0]["collapsed"]
    assert record["accuracy"] == by_lr[0.1]["accuracy"] > by_lr[20.0]["accuracy"]


# ---------------------------------------------------------------------------------------------------------
# correlations


def test_rank_correlation_by_hand():
    # −score ranks 4,3,2,1; accuracy ranks 4,2,3,1: Σd² = 2, ρ = 1 − 6·2/(4·15) = 0.8; 5 of 6 pairs agree: τ = 4/6
    got = rank_correlation([1.0, 2.0, 3.0, 4.0], [0.9, 0.7, 0.8, 0.6])
    assert got["spearman"] == pytest.approx(0.8) and got["kendall"] == pytest.approx(2 / 3) and got["n"] == 4
    perfect = rank_correlation([0.1, 0.2, 0.3], [0.99, 0.5, 0.2])  # lower score, higher accuracy: +1
    backwards = rank_correlation([0.1, 0.2, 0.3], [0.2, 0.5, 0.99])
    assert (perfect["spearman"], perfect["kendall"]) == (pytest.approx(1.0), pytest.approx(1.0))
    assert (backwards["spearman"], backwards["kendall"]) == (pytest.approx(-1.0), pytest.approx(-1.0))


def test_rank_correlation_matches_scipy_with_ties_and_is_undefined_when_it_must_be():
    generator = torch.Generator().manual_seed(0)
    score = torch.randint(0, 5, (30,), generator=generator).double().tolist()  # ties on both sides
    accuracy = torch.randint(0, 4, (30,), generator=generator).double().div(4).tolist()
    got = rank_correlation(score, accuracy)
    negated = [-s for s in score]
    assert got["spearman"] == pytest.approx(stats.spearmanr(negated, accuracy).statistic)
    assert got["kendall"] == pytest.approx(stats.kendalltau(negated, accuracy).statistic)
    assert rank_correlation([1.0, 2.0], [0.5, 0.4]) == {"spearman": None, "kendall": None, "n": 2}
    assert rank_correlation([1.0, 1.0, 1.0], [0.5, 0.4, 0.3])["spearman"] is None
    with pytest.raises(ValueError, match="differ in length"):
        rank_correlation([1.0], [0.5, 0.4])


def _arm(epochs: int, accuracy: float, diverged: bool = False, per_seed: dict | None = None) -> dict:
    return {
        "epochs": epochs,
        "lr": 0.1,
        "accuracy": accuracy,
        "diverged": diverged,
        "per_seed": per_seed or {"0": accuracy},
    }


def test_calibration_at_the_most_trained_budget_ranks_diverged_last_with_seed_noise():
    rows = [
        {"trial": t, "score": s, "activation_growth": s, "similarity": s, "grad_ratio": float("nan")}
        for t, s in ((0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0))
    ]
    records = {  # budget 1: trials 0, 1, 2 (2 diverged after a good epoch: still last); budget 3: trial 0 only
        0: {"rungs": [_arm(1, 0.9, per_seed={"0": 0.9, "1": 0.8}), _arm(3, 0.99)]},
        1: {"rungs": [_arm(1, 0.8, per_seed={"0": 0.7, "1": 0.85})]},
        2: {"rungs": [_arm(1, 0.95, diverged=True, per_seed={"0": 0.2, "1": 0.1})]},
    }
    got = calibrate(rows, records)
    assert got["budget"] == 1
    assert got["score"] == {"spearman": pytest.approx(1.0), "kendall": pytest.approx(1.0), "n": 3}
    assert got["grad_ratio"]["n"] == 0 and got["grad_ratio"]["spearman"] is None
    # seed 0 orders them 0 > 1 > 2, seed 1 orders them 1 > 0 > 2: ρ = 1 − 6·2/(3·8) = 0.5
    assert got["seeds"] == {
        "spearman": pytest.approx(0.5),
        "kendall": pytest.approx(1 / 3),
        "n": 3,
        "pairs": 1,
    }
    assert seed_noise([_arm(1, 0.5)])["pairs"] == 0 and DIVERGED_ACCURACY < 0


def test_growth_and_gradient_ratio_are_calibrated_folded_a_collapse_is_not_the_best_growth():
    # |growth| and max(g, 1/g): trial 0 collapses (growth −2, gradient vanishing 100×) and trains worst
    probes = {0: (-2.0, 0.01), 1: (0.1, 1.1), 2: (1.0, 5.0)}
    rows = [
        {"trial": t, "score": 1.0 + t, "activation_growth": g, "similarity": 0.5, "grad_ratio": r}
        for t, (g, r) in probes.items()
    ]
    records = {0: {"rungs": [_arm(1, 0.3)]}, 1: {"rungs": [_arm(1, 0.9)]}, 2: {"rungs": [_arm(1, 0.6)]}}
    got = calibrate(rows, records)
    assert got["activation_growth"]["spearman"] == pytest.approx(1.0)  # 0.1 < 1.0 < 2.0 as 0.9 > 0.6 > 0.3
    assert got["grad_ratio"]["spearman"] == pytest.approx(1.0)  # 1.1 < 5 < 100
    signed = rank_correlation([-2.0, 0.1, 1.0], [0.3, 0.9, 0.6])["spearman"]
    assert signed == pytest.approx(-0.5)  # what ranking the signed growth gave: the collapse counted best


def test_the_calibration_line_names_its_budget_and_n_and_says_when_it_is_exact():
    rows = [{"trial": t, "score": float(t), "similarity": 0.1 * t} for t in range(4)]
    first_rung = {
        0: {"rungs": [_arm(1, 0.9), _arm(3, 0.95)]},
        **{t: {"rungs": [_arm(1, 0.8 - 0.1 * t)]} for t in (1, 2, 3)},
    }
    line = describe(calibrate(rows, first_rung))
    assert line.startswith(
        "calibration at 1 epoch, n = 4 (the first rung; the exact calibration, every config at 3 epochs, "
        "is confirm --all's): score ρ=+1.00"
    )
    everything = {t: {"rungs": [*r["rungs"], _arm(3, 0.5 + 0.1 * t)]} for t, r in first_rung.items()}
    everything[0] = first_rung[0]
    line = describe(calibrate(rows, everything))
    assert line.startswith("calibration at 3 epochs, n = 4 (every config at the final budget: exact): score")
    partial = {t: first_rung[t] for t in (0, 1)} | {2: {"rungs": [_arm(3, 0.4)]}}
    assert describe(calibrate(rows, partial)).startswith("calibration at 3 epochs, n = 2 of 4 configs")


def test_the_winner_is_the_best_at_the_highest_budget():
    def row(trial: int, accuracy: float, budget: int, diverged: bool = False) -> dict:
        return {
            "trial": trial,
            "config": f"c{trial}",
            "network": {},
            "metric": "accuracy",
            "accuracy": accuracy,
            "accuracy_std": 0.01,
            "budget": budget,
            "lr": 0.1,
            "diverged": diverged,
            "confirm": {"seeds": [{}, {}]},
        }

    rows = [row(0, 0.99, 1), row(1, 0.90, 3), row(2, 0.95, 3), row(3, 0.97, 3, diverged=True), {"trial": 4}]
    assert winner(rows) == {
        "trial": 2,
        "config": "c2",
        "network": {},
        "metric": "accuracy",
        "accuracy": 0.95,
        "accuracy_std": 0.01,
        "budget": 3,
        "lr": 0.1,
        "seeds": 2,
    }  # 0.99 after 1 epoch does not beat 0.95 after 3
    assert winner([{"trial": 4}]) is None


# ---------------------------------------------------------------------------------------------------------
# a whole study


@pytest.mark.slow
def test_multi_fidelity_confirmation_stores_units_and_reuses_them(runs: Path):
    study = open_study("tiny", runs)
    settings = ConfirmSettings(
        dataset="digits", top_k=1, explore=0, **{**TRAIN, "epochs": 3, "eta": 2, "lr_factors": [1.0, 0.25]}
    )
    confirm_study(study, settings, console=_quiet())
    study = open_study("tiny", runs)  # re-read from the journal
    units = _units(study)
    # rung 1: 4 candidates (the default bn, top 1, ln, in) × 2 lrs for 1 epoch; rung 2: the best 8 // 2 = 4
    # arms of the others and bn's best arm for 3 epochs
    assert sorted(t.user_attrs["epochs"] for t in units) == [1] * 8 + [3] * 5
    for unit in units:
        run = unit.user_attrs["run"]
        assert unit.value == run["accuracy"] == max(run["val_accuracy"])
        assert unit.intermediate_values == dict(enumerate(run["val_accuracy"], 1))  # the training curve
    confirmation = load_confirmation(study)
    assert confirmation.spent_images == _images(units)
    rows = build_rows(study)
    trained = [r for r in rows if "budget" in r]
    assert len(trained) == 4 and {r["budget"] for r in trained} <= {1, 3}
    assert [r["trial"] for r in rows[: len(trained)]] == [r["trial"] for r in trained]  # trained rows first
    best = max((r for r in trained if r["budget"] == 3), key=lambda r: r["accuracy"])
    assert rows[0]["trial"] == best["trial"] and rows[0]["lr"] in (0.1, 0.025)

    before = [t.number for t in companion(study).get_trials()]
    confirm_study(study, settings, console=_quiet())  # everything is done: nothing is trained again
    assert [t.number for t in companion(open_study("tiny", runs)).get_trials()] == before

    confirm_study(study, dataclasses.replace(settings, seeds=2), console=_quiet())
    grown = _units(open_study("tiny", runs))
    assert [t.number for t in grown if t.user_attrs["seed"] == 0] == [t.number for t in units]  # kept
    assert len([t for t in grown if t.user_attrs["seed"] == 1]) >= 8  # seed 1 trained, rung by rung


@pytest.mark.slow
def test_confirm_all_trains_every_config_and_reports_the_cost(runs: Path):
    result = runner.invoke(
        app,
        [
            "confirm",
            "tiny",
            "--runs-dir",
            str(runs),
            "--epochs",
            "2",
            "--min-epochs",
            "1",
            "--eta",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    units = _units(open_study("tiny", runs))
    # rung 1: top 1 + 3 baselines for 1 epoch; rung 2: the best 4 // 2 = 2 and the default bn for 2 epochs
    assert sorted(t.user_attrs["epochs"] for t in units) == [1, 1, 1, 1, 2, 2, 2]
    assert doc["training_cost"] == {"spent_images": _images(units), "exhaustive_images": 5 * 2 * DIGIT_IMAGES}
    assert doc["winner"]["budget"] == 2 and doc["winner"]["trial"] == doc["rows"][0]["trial"]
    board = runner.invoke(app, ["leaderboard", "tiny", "--runs-dir", str(runs)]).stdout
    assert "against confirmed accuracy at 1 epoch, n = 4 (the first rung; the exact calibration" in board
    assert ("the default bn" in board and "winner" in board) or "winner bn is the default: use bn" in board
    everything = runner.invoke(
        app, ["confirm", "tiny", "--runs-dir", str(runs), "--epochs", "2", "--all", "--json"]
    )
    assert everything.exit_code == 0, everything.stderr
    full = json.loads(everything.stdout)
    assert {r["config"] for r in full["rows"] if r["budget"] == 2} == {"bn", "ln", "in", "rms", "none"}
    # the 3 two-epoch runs of the first call are reused: 2 more configs for 2 epochs
    units = _units(open_study("tiny", runs))
    assert sorted(t.user_attrs["epochs"] for t in units) == [1, 1, 1, 1, 2, 2, 2, 2, 2]
    assert full["training_cost"] == {
        "spent_images": _images(units),
        "exhaustive_images": 5 * 2 * DIGIT_IMAGES,
    }
    assert full["calibration"]["budget"] == 2 and full["calibration"]["score"]["n"] == 5
    best = max((r for r in full["rows"] if not r["diverged"]), key=lambda r: r["accuracy"])
    assert full["winner"]["config"] == best["config"] and full["winner"]["accuracy"] == best["accuracy"]
    text = runner.invoke(app, ["leaderboard", "tiny", "--runs-dir", str(runs)]).stdout
    assert "accuracy at 2 epochs, n = 5 (every config at the final budget: exact)" in text  # replaced
    board = json.loads(runner.invoke(app, ["leaderboard", "tiny", "--runs-dir", str(runs), "--json"]).stdout)
    assert board["winner"] == full["winner"] and board["training_cost"] == full["training_cost"]
    bn = next(r for r in full["rows"] if r["config"] == "bn")  # the default: trained at 2 epochs, paired
    assert board["default"]["config"] == "bn" and board["default"]["accuracy"] == bn["accuracy"]
    assert (
        board["default"]["beaten"] is (board["default"]["recommend"] != "bn")
        and board["default"]["seeds"] == 1
    )
    assert board["rows"][0]["config"] == full["winner"]["config"]
    assert board["calibration"]["spearman"] == full["calibration"]["score"]["spearman"]
    exported = runner.invoke(app, ["export", "tiny", "--runs-dir", str(runs)])
    assert (
        exported.exit_code == 0 and f"trial {full['winner']['trial']} (leaderboard rank 1)" in exported.stdout
    )


@pytest.mark.slow
def test_a_default_outside_the_space_trains_at_the_final_budget_with_the_winners_seed(runs: Path):
    study = open_study("tiny", runs)
    settings = ConfirmSettings(
        top_k=1, explore=0, baselines=False, default="gn:groups=2", **{**TRAIN, "epochs": 2, "eta": 2}
    )
    confirm_study(study, settings, console=_quiet())
    units = _units(open_study("tiny", runs))
    gn = [u for u in units if u.user_attrs["config"] == "gn:groups=2"]
    assert sorted(u.user_attrs["epochs"] for u in gn) == [1, 2] and {u.user_attrs["trial"] for u in gn} == {
        -1
    }
    # 2 arms at 1 epoch (the default and the top 1); 2 // 2 = 1 promoted, and the default if it was not that one
    assert len([u for u in units if u.user_attrs["epochs"] == 2]) in (1, 2)
    result = outcome(open_study("tiny", runs))
    default, best = result["default"], result["winner"]
    assert default["config"] == "gn:groups=2" and default["budget"] == best["budget"] == 2
    assert default["accuracy"] == gn[-1].user_attrs["run"]["accuracy"] and default["seeds"] == 1
    assert (
        default["beaten"] in (True, False) and default["noise"] > 0
    )  # one seed: the binomial SE, 359 images
    assert all(row["config"] != "gn:groups=2" for row in build_rows(open_study("tiny", runs)))  # not a row


@pytest.mark.slow
def test_a_killed_confirmation_resumes_mid_rung_without_retraining(runs: Path):
    """A subprocess is killed (SIGKILL) while a rung is half done; the next call trains only what is missing."""
    args = [
        *CLI,
        "confirm",
        "tiny",
        "--runs-dir",
        str(runs),
        "--epochs",
        "3",
        "--eta",
        "3",
        "--lr-factors",
        "1,0.5",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    study = open_study("tiny", runs)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            queue = companion(study, create=False)
            done = len(queue.get_trials(states=(TrialState.COMPLETE,))) if queue else 0
            if done >= 2:
                break
            time.sleep(0.05)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    queue = companion(open_study("tiny", runs))
    finished = {t.user_attrs["key"]: t.number for t in queue.get_trials(states=(TrialState.COMPLETE,))}
    assert 2 <= len(finished) < 8  # rung 1 holds 4 candidates × 2 lrs
    result = runner.invoke(
        app,
        ["confirm", "tiny", "--runs-dir", str(runs), "--epochs", "3", "--eta", "3", "--lr-factors", "1,0.5"],
    )
    assert result.exit_code == 0, result.stderr
    queue = companion(open_study("tiny", runs))
    complete = queue.get_trials(states=(TrialState.COMPLETE,))
    keys = [t.user_attrs["key"] for t in complete]
    assert (
        len(keys) == len(set(keys)) == 8 + 3
    )  # every unit once: 8 one-epoch runs, the best 8 // 3 and the default's for 3 epochs
    assert all(finished[t.user_attrs["key"]] == t.number for t in complete if t.user_attrs["key"] in finished)
    killed = [t for t in queue.get_trials(states=(TrialState.FAIL,)) if t.user_attrs.get("interrupted")]
    assert all(t.user_attrs["key"] in keys for t in killed)  # a unit running at the kill was trained again


@pytest.mark.slow
def test_workers_share_the_runs_and_train_each_once(runs: Path):
    result = runner.invoke(
        app,
        [
            "confirm",
            "tiny",
            "--runs-dir",
            str(runs),
            "--workers",
            "2",
            "--seeds",
            "2",
            "--lr-factors",
            "1,0.5",
            "--epochs",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    complete = _units(open_study("tiny", runs))
    keys = [t.user_attrs["key"] for t in complete]
    # rung 1: 4 candidates × 2 lrs × 2 seeds for 1 epoch; rung 2: the best 8 // 3 = 2 arms and the default's
    # × 2 seeds for 3 epochs
    assert len(keys) == len(set(keys)) == 16 + 6
    assert json.loads(result.stdout)["winner"]["budget"] == 3


@pytest.mark.slow
def test_a_unit_queued_twice_is_trained_once_and_the_extra_copy_closed(runs: Path):
    """Two processes that find a unit missing at once both queue it: it trains once, and the extra WAITING copy
    is recorded PRUNED with ``surplus`` (not left waiting in the companion study)."""
    study = open_study("tiny", runs)
    queue = UnitQueue(study, ConfirmSettings(**TRAIN))
    unit = Unit(0, "bn", 1, 0.1, 0)
    for _ in range(2):  # as two racing processes do
        queue.study.enqueue_trial({}, user_attrs=queue._attrs(unit), skip_if_exists=False)
    done = queue.complete([unit])
    trials = companion(study).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert trials[1].user_attrs["surplus"] is True and "run" not in trials[1].user_attrs
    assert done[unit.key(queue.training)].number == trials[0].number
    assert queue.complete([unit])[unit.key(queue.training)].number == 0  # reused, nothing queued
    assert len(companion(study).get_trials()) == 2


@pytest.mark.slow
def test_devices_run_one_worker_per_device_and_each_unit_records_its_device(runs: Path):
    """``--devices cpu,cpu``: two workers (this process and a spawned one), each training on its device; every
    unit once, each recording the device it trained on."""
    result = runner.invoke(
        app,
        [
            "confirm",
            "tiny",
            "--runs-dir",
            str(runs),
            "--devices",
            "cpu,cpu",
            "--seeds",
            "4",
            "--batch-size",
            "16",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    complete = _units(open_study("tiny", runs))
    keys = [t.user_attrs["key"] for t in complete]
    assert len(keys) == len(set(keys)) == 4 * 4  # top 1 + 3 baselines, 4 seeds each
    assert {t.user_attrs["run"]["device"] for t in complete} == {"cpu"}
    workers = {t.user_attrs["worker"] for t in complete}
    assert len(workers) == 2 and f":{os.getpid()}" in " ".join(workers)  # this process and its spawned worker


@pytest.mark.slow
def test_a_full_disk_under_confirm_workers_is_one_line_per_process(tmp_path: Path):
    """The disk fills before ``confirm --workers 2`` writes: this process and its spawned worker each stop with
    one ``error:`` line (the worker's line names it), exit 2, no traceback. tests/test_robustness.py's tmpfs (root)."""
    from tests.test_robustness import TINY as SEARCHED
    from tests.test_robustness import _fill, cli_process, search_tiny, tmpfs

    (tmp_path / "tiny.yaml").write_text(SEARCHED)
    with tmpfs(tmp_path / "fs", "20m") as fs:
        assert search_tiny(fs, "8", cwd=tmp_path).returncode == 0
        _fill(fs, fs / "tiny" / "journal.log", slack=50)
        full = cli_process("confirm", "tiny", "--runs-dir", str(fs), "--workers", "2", cwd=tmp_path)
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-3000:]
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert 1 <= len(errors) <= 2 and all("No space left on device" in line for line in errors), errors
    assert all(line.startswith("error: worker ") for line in errors[1:])


# ---------------------------------------------------------------------------------------------------------
# commands


@pytest.mark.slow
def test_confirm_command_json_and_leaderboard(runs: Path):
    result = runner.invoke(
        app, ["confirm", "tiny", "--runs-dir", str(runs), "--top-k", "2", "--seeds", "2", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["settings"]["top_k"] == 2 and doc["settings"]["depth"] == 8  # the space's confirm: section
    assert len(doc["rows"]) == 5 and doc["calibration"]["score"]["n"] == 5
    assert doc["calibration"]["seeds"]["pairs"] == 1 and doc["calibration"]["seeds"]["n"] == 5
    ranked = [r["confirm"]["accuracy"] for r in doc["rows"] if not r["confirm"]["diverged"]]
    assert ranked == sorted(ranked, reverse=True)
    for row in doc["rows"]:
        seeds = [s["accuracy"] for s in row["confirm"]["seeds"]]
        assert row["accuracy"] == pytest.approx(sum(seeds) / 2) and row["budget"] == 1
        assert row["accuracy_std"] == pytest.approx(stats.tstd(seeds)) if seeds[0] != seeds[1] else True
    board = json.loads(runner.invoke(app, ["leaderboard", "tiny", "--runs-dir", str(runs), "--json"]).stdout)
    assert board["calibration"]["spearman"] == doc["calibration"]["score"]["spearman"]
    assert board["calibration"]["seeds"] == doc["calibration"]["seeds"]
    assert all(
        0.0 <= r["accuracy"] <= 1.0 and "diverged" in r and r["budget"] == 1
        for r in board["rows"]
        if "accuracy" in r
    )
    shown = runner.invoke(app, ["leaderboard", "tiny", "--runs-dir", str(runs)])
    assert "seed to seed: Spearman" in shown.stdout and "winner: " in shown.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "imagenet"], "--dataset: unknown dataset 'imagenet'; allowed: digits, synthetic"),
        (["--epochs", "0"], "--epochs: must be >= 1"),
        (["--dataset", "mnist", "--data-dir", "{tmp}"], "the offline choice is dataset 'digits'"),
        (["--device", "tpu"], "--device: must be one of auto, cpu, cuda"),
        (["--augment", "crop"], "--augment: must be one of auto, none, flip"),
        (["--lr-factors", "1,x"], "--lr-factors[1]: must be a number, got 'x'"),
        (["--lr-factors", "1,-2"], "--lr-factors[1]: must be >= 0.0"),
        (["--min-epochs", "5"], "--min-epochs: must be <= epochs (1), got 5"),
        (["--eta", "1"], "--eta: must be >= 2"),
        (["--devices", "cuda:99"], "--devices: cuda:99: not on this machine, which has "),
        (
            ["--devices", "cpu,garbage"],
            "--devices: 'garbage' is not a training device; allowed: cpu, cuda, cuda:N",
        ),
        (
            ["--devices", "cpu,cpu", "--workers", "3"],
            "--workers 3 and --devices cpu,cpu (2 devices) disagree",
        ),
        (["--devices", "cpu", "--device", "cpu"], "--device and --devices: give one"),
    ],
)
def test_confirm_command_bad_input(runs: Path, tmp_path: Path, args: list[str], message: str):
    before = dict(open_study("tiny", runs).user_attrs)
    args = [a.replace("{tmp}", str(tmp_path / "nodata")) for a in args]
    result = runner.invoke(app, ["confirm", "tiny", "--runs-dir", str(runs), *args])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:") and message in result.stderr
    assert open_study("tiny", runs).user_attrs == before  # existing results intact
    assert companion(open_study("tiny", runs), create=False) is None  # nothing queued


def test_compile_is_checked_and_leaves_the_unit_key_alone():
    """compile changes how a unit runs, not its numbers (beyond float rounding): compiled and eager runs
    are the same units, and adding the setting kept every stored digest."""
    with pytest.raises(SettingsError, match="compile: must be true or false, got 'yes'"):
        ConfirmSettings(compile="yes")
    assert training_digest(ConfirmSettings(compile=True)) == training_digest(ConfirmSettings())
    assert "compile" not in training_settings(ConfirmSettings(compile=True))
    assert training_digest(ConfirmSettings(amp=True)) != training_digest(ConfirmSettings())


def test_a_bad_compile_setting_is_one_error_line(tmp_path: Path):
    (tmp_path / "tiny.yaml").write_text(TINY.replace("max_cost: null}", "max_cost: null, compile: maybe}"))
    result = runner.invoke(
        app, ["calibrate", "--space", str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:")
    assert "confirm.compile: must be true or false, got 'maybe'" in result.stderr
    assert not (tmp_path / "runs").exists()
    for command in ("confirm", "calibrate"):
        assert "--compile" in runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout


@pytest.mark.slow
def test_calibrate_command_probes_and_trains_every_candidate(tmp_path: Path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = runner.invoke(
        app,
        [
            "calibrate",
            "--space",
            str(tmp_path / "tiny.yaml"),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--dataset",
            "synthetic",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["study"] == "tiny-calibration"
    assert "calibrate tiny-calibration: probing 5 candidates" in result.stderr  # the study, not the space
    assert "confirm tiny-calibration rung 1/1:" in result.stderr
    assert sorted(r["config"] for r in doc["rows"]) == ["bn", "in", "ln", "none", "rms"]
    assert all(
        doc["calibration"][q]["n"] == 5 for q in ("score", "activation_growth", "similarity", "grad_ratio")
    )
    units = len(_units(open_study("tiny-calibration", tmp_path / "runs")))
    table = runner.invoke(
        app,
        [
            "calibrate",
            "--space",
            str(tmp_path / "tiny.yaml"),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--dataset",
            "synthetic",
        ],
    )
    assert table.exit_code == 0 and "Spearman" in table.stdout
    assert len(_units(open_study("tiny-calibration", tmp_path / "runs"))) == units == 5  # nothing retrained


def test_the_score_is_calibrated_as_the_search_ranks_rejected_rows_last() -> None:
    from normsearch.confirm.calibration import search_ranking

    rows = [
        {"trial": 0, "score": 0.1, "rejected": "step loss ratio 1.3 > 1.05"},  # best score, but filtered
        {"trial": 1, "score": 0.5, "rejected": None},
        {"trial": 2, "score": 0.3, "rejected": None},
        {"trial": 3, "score": None, "rejected": None},  # no score: not ranked
    ]
    assert search_ranking(rows) == {2: 0.0, 1: 1.0, 0: 2.0}
