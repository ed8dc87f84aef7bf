"""Confirmation and calibration on a real Optuna journal study: candidate selection, stored records, reuse of
done work, divergence ranked last, small-batch drop, rank correlations, and the confirm/calibrate commands."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console
from scipy import stats
from typer.testing import CliRunner

from normsearch.cli import app
from normsearch.confirm import ConfirmSettings, confirm_study, current_results, select_candidates
from normsearch.confirm.calibration import DIVERGED_ACCURACY, calibrate, rank_correlation
from normsearch.confirm.runs import confirm_candidate
from normsearch.leaderboard import build_rows
from normsearch.storage import open_study

runner = CliRunner()
TRAIN = {"depth": 8, "width": 8, "epochs": 1, "batch_size": 64, "device": "cpu"}
TINY = (
    "space:\n"
    "  preset: {choices: [bn, ln, in, rms, none]}\n"
    "probe: {depth: 8, width: 8, batch_size: 16, seeds: 1, resolution: 8}\n"
    "search: {n_trials: 5, sampler: brute_force}\n"
    "confirm: {top_k: 1, depth: 8, width: 8, epochs: 1, batch_size: 64, device: cpu}\n"
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``normsearch run --no-confirm`` of the tiny space: 5 presets probed, bn/ln/in enqueued as baselines."""
    root = tmp_path_factory.mktemp("searched")
    (root / "tiny.yaml").write_text(TINY)
    result = runner.invoke(app, ["run", "--space", str(root / "tiny.yaml"), "--runs-dir", str(root / "runs"),
                                 "--no-confirm"])
    assert result.exit_code == 0, result.stderr
    return root / "runs"


@pytest.fixture
def runs(searched: Path, tmp_path: Path) -> Path:
    """A private copy of the searched study (confirmation writes to it)."""
    return Path(shutil.copytree(searched, tmp_path / "runs"))


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


# ---------------------------------------------------------------------------------------------------------
# selection


def _row(trial: int, config: str, score: float, baseline: bool = False) -> dict:
    return {"trial": trial, "config": config, "score": score, "baseline": baseline}


def test_selection_top_k_baselines_random_and_one_trial_per_config():
    rows = [_row(0, "bn", 5.0, True), _row(1, "ln", 1.0, True), _row(2, "a", 2.0), _row(3, "b", 3.0),
            _row(4, "a", 1.5), _row(5, "c", 4.0), _row(6, "d", 6.0), _row(7, "e", 7.0), _row(8, "bn", 0.5)]
    chosen = select_candidates(rows, ConfirmSettings(top_k=2, random=0))
    assert [(c.trial, c.config, c.reason) for c in chosen] == [
        (4, "a", "top"), (3, "b", "top"), (8, "bn", "baseline"), (1, "ln", "baseline")]
    assert chosen[2].baseline and not chosen[0].baseline  # bn stays a baseline though trial 8 was sampled
    assert [c.config for c in select_candidates(rows, ConfirmSettings(top_k=1, baselines=False))] == ["a"]
    picks = [select_candidates(rows, ConfirmSettings(top_k=1, random=2, seed=s)) for s in (0, 0, 1, 2, 3)]
    assert picks[0] == picks[1]  # seeded
    extras = [tuple(c.config for c in p if c.reason == "random") for p in picks]
    assert all(len(e) == 2 and set(e) <= {"b", "c", "d", "e"} for e in extras)
    assert len(set(extras)) > 1  # the seed changes the pick
    assert len(select_candidates(rows, ConfirmSettings(top_k=0, random=99))) == 7  # all 7 configs: capped


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


def test_calibration_ranks_diverged_last_and_skips_unconfirmed():
    rows = [{"trial": t, "score": s, "activation_growth": s, "similarity": s, "grad_ratio": float("nan")}
            for t, s in ((0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0))]
    results = {0: {"accuracy": 0.9, "diverged": False}, 1: {"accuracy": 0.8, "diverged": False},
               2: {"accuracy": 0.95, "diverged": True}}  # best epoch before diverging: still ranked last
    got = calibrate(rows, results)
    assert got["score"] == {"spearman": pytest.approx(1.0), "kendall": pytest.approx(1.0), "n": 3}
    assert got["grad_ratio"]["n"] == 0 and got["grad_ratio"]["spearman"] is None
    assert DIVERGED_ACCURACY < 0


# ---------------------------------------------------------------------------------------------------------
# one candidate


def test_divergence_is_recorded_and_small_batch_drop():
    diverged = confirm_candidate("none", ConfirmSettings(dataset="synthetic", resolution=8, lr=1e8, **TRAIN), None)
    assert diverged["diverged"] and diverged["seeds"][0]["diverged"]
    settings = ConfirmSettings(dataset="digits", small_batch=8, **TRAIN)
    record = confirm_candidate("bn", settings, None)
    small = record["small_batch"]
    assert small["batch_size"] == 8 and small["seeds"][0]["batch_size"] == 8
    assert small["drop"] == pytest.approx(record["accuracy"] - small["accuracy"])
    assert confirm_candidate("bn", settings, record) is None  # nothing left to do
    with pytest.raises(ValueError, match="does not divide"):
        confirm_candidate("gn", ConfirmSettings(**TRAIN), None)  # 32 groups in 8 channels


# ---------------------------------------------------------------------------------------------------------
# a whole study


def test_confirm_study_stores_calibrates_and_skips_done_work(runs: Path):
    study = open_study("tiny", runs)
    settings = ConfirmSettings(dataset="digits", top_k=1, **TRAIN)
    confirm_study(study, settings, console=_quiet())
    study = open_study("tiny", runs)  # re-read from the journal
    rows = build_rows(study)
    chosen = {c.trial for c in select_candidates(rows, settings)}
    results = current_results(study, settings)
    assert set(results) == chosen and len(chosen) == 4  # top 1 + bn, ln, in
    for trial, record in results.items():
        assert study.user_attrs[f"confirm:{trial}"] == record
        assert 0.0 <= record["accuracy"] <= 1.0 and isinstance(record["diverged"], bool)
        assert record["seconds"] > 0 and record["images_per_s"] > 0
        (seed,) = record["seeds"]
        assert seed["seed"] == 0 and len(seed["train_loss"]) == len(seed["val_accuracy"]) == 1
    calibration = study.user_attrs["calibration"]
    assert set(calibration) == {"score", "activation_growth", "similarity", "grad_ratio"}
    assert calibration["score"]["n"] == 4
    rows_by_trial = {r["trial"]: r for r in rows}
    expected = rank_correlation([rows_by_trial[t]["score"] for t in results],
                                [DIVERGED_ACCURACY if r["diverged"] else r["accuracy"] for r in results.values()])
    assert calibration["score"] == expected

    before = dict(study.user_attrs)
    confirm_study(study, settings, console=_quiet())  # everything is done: nothing is trained again
    assert open_study("tiny", runs).user_attrs == before

    confirm_study(study, ConfirmSettings(dataset="digits", top_k=1, seeds=2, **TRAIN), console=_quiet())
    grown = current_results(open_study("tiny", runs), settings)
    for trial, record in grown.items():
        assert [s["seed"] for s in record["seeds"]] == [0, 1]
        assert record["seeds"][0] == results[trial]["seeds"][0]  # seed 0 kept, only seed 1 trained

    confirm_study(study, ConfirmSettings(dataset="digits", top_k=0, baselines=True, **{**TRAIN, "epochs": 2}),
                  console=_quiet())
    latest = open_study("tiny", runs)
    assert not current_results(latest, settings)  # records of the old training settings are discarded
    assert len(current_results(latest, ConfirmSettings(**{**TRAIN, "epochs": 2}))) == 3


# ---------------------------------------------------------------------------------------------------------
# commands


def test_confirm_command_json_and_leaderboard(runs: Path):
    result = runner.invoke(app, ["confirm", "tiny", "--runs-dir", str(runs), "--top-k", "2", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["settings"]["top_k"] == 2 and doc["settings"]["depth"] == 8  # the space's confirm: section
    assert len(doc["rows"]) == 5 and doc["calibration"]["score"]["n"] == 5
    ranked = [r["confirm"]["accuracy"] for r in doc["rows"] if not r["confirm"]["diverged"]]
    assert ranked == sorted(ranked, reverse=True)
    board = json.loads(runner.invoke(app, ["leaderboard", "tiny", "--runs-dir", str(runs), "--json"]).stdout)
    assert board["calibration"] == doc["calibration"]["score"]
    assert all(0.0 <= r["accuracy"] <= 1.0 and "diverged" in r for r in board["rows"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "imagenet"], "--dataset: must be one of digits, synthetic"),
        (["--epochs", "0"], "--epochs: must be >= 1"),
        (["--dataset", "mnist", "--data-dir", "{tmp}"], "the offline choice is dataset 'digits'"),
        (["--device", "tpu"], "--device: must be one of auto, cpu, cuda"),
        (["--augment", "crop"], "--augment: must be one of auto, none, flip"),
    ],
)
def test_confirm_command_bad_input(runs: Path, tmp_path: Path, args: list[str], message: str):
    before = dict(open_study("tiny", runs).user_attrs)
    args = [a.replace("{tmp}", str(tmp_path / "nodata")) for a in args]
    result = runner.invoke(app, ["confirm", "tiny", "--runs-dir", str(runs), *args])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:") and message in result.stderr
    assert open_study("tiny", runs).user_attrs == before  # existing results intact


def test_calibrate_command_probes_and_trains_every_candidate(tmp_path: Path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = runner.invoke(app, ["calibrate", "--space", str(tmp_path / "tiny.yaml"), "--runs-dir",
                                 str(tmp_path / "runs"), "--dataset", "synthetic", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["study"] == "tiny-calibration"
    assert sorted(r["config"] for r in doc["rows"]) == ["bn", "in", "ln", "none", "rms"]
    assert all(doc["calibration"][q]["n"] == 5 for q in ("score", "activation_growth", "similarity", "grad_ratio"))
    table = runner.invoke(app, ["calibrate", "--space", str(tmp_path / "tiny.yaml"), "--runs-dir",
                                str(tmp_path / "runs"), "--dataset", "synthetic"])
    assert table.exit_code == 0 and "Spearman" in table.stdout and "(stored)" in table.stderr  # nothing retrained
