"""The language-model task through the pipeline: probes on gpt read the text task (seeded byte windows, the
LM loss, one AdamW step) and fill the probe record the search reads; confirmation and the leaderboard rank
by val_loss (bits per byte, lower is better); the shipped ``transformer`` space loads. Tiny sizes, seed 0."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from typer.testing import CliRunner

from normsearch.cli import app
from normsearch.confirm.results import arm_summary, ranking_value
from normsearch.confirm.schedule import promote
from normsearch.confirm.select import Candidate
from normsearch.confirm.settings import ConfirmSettings, rung_epochs, rung_steps
from normsearch.probes import ProbeRunner, ProbeSettings
from normsearch.records import ProbeRecord
from normsearch.score import rejection
from normsearch.space import load_space
from normsearch.task import LANGUAGE_MODEL
from normsearch.train import TrainResult

runner = CliRunner()

pytestmark = pytest.mark.usefixtures("one_thread")

LM_PROBE = ProbeSettings(model="gpt", data="text", depth=2, width=16, batch_size=4, seeds=1, lr=0.002)


def test_gpt_probe_record_is_finite_and_carries_the_transformer_quantities():
    result = ProbeRunner(LM_PROBE).run("pn|context=16,heads=2")
    record = ProbeRecord.of(result).attr()
    assert not record["unstable"], record["reason"]
    assert record["blocks"] == 2
    for name in ("activation_growth", "similarity", "grad_ratio", "step_loss_ratio"):
        assert math.isfinite(record[name]), name
    # one AdamW step at the training lr lowers a Pre-LN LayerNorm gpt's loss on its own batch
    assert 0.5 < record["step_loss_ratio"] < 1.0
    curves = record["curves"]
    for name in ("variance", "similarity", "grad_norm", "attention_entropy", "massive_ratio", "logit_scale"):
        assert len(curves[name]) == 2 and all(math.isfinite(v) for v in curves[name]), name
    # attention over ≤ 16 causal keys: entropy in (0, ln 16]
    assert 0 < min(curves["attention_entropy"]) <= math.log(16)
    assert min(curves["massive_ratio"]) > 1
    assert rejection(record, lr=LM_PROBE.lr) is None


LM_SPACE = (
    "space:\n"
    "  preset: {choices: [pn, none]}\n"
    "network:\n"
    "  context: {choices: [16]}\n"
    "  heads: {choices: [2]}\n"
    "probe: {batch_size: 4, seeds: 1}\n"
    "search: {n_trials: 2, sampler: brute_force}\n"
    "confirm: {model: gpt, dataset: text, depth: 2, width: 16, epochs: 3, min_epochs: 1, steps: 24,\n"
    "  batch_size: 8, optimizer: adamw, lr: 0.01, weight_decay: 0.0, lr_factors: [1], top_k: 2, explore: 0,\n"
    "  device: cpu, warmup_epochs: 0}\n"
)


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``normsearch run`` of a 2-candidate gpt space, confirmed in rungs of 8 and 24 steps (seed 0)."""
    root = tmp_path_factory.mktemp("lm")
    (root / "lm2.yaml").write_text(LM_SPACE)
    result = runner.invoke(app, ["run", "--space", str(root / "lm2.yaml"), "--runs-dir", str(root / "runs")])
    assert result.exit_code == 0, result.stderr
    assert "bits/byte" in result.stdout
    return root / "runs"


def test_lm_confirmation_ranks_by_val_loss_ascending_and_rows_carry_it(lm_runs: Path):
    board = json.loads(
        runner.invoke(app, ["leaderboard", "lm2", "--runs-dir", str(lm_runs), "--json"]).stdout
    )
    trained = [row for row in board["rows"] if "budget" in row]
    assert trained and all(row["metric"] == "val_loss" for row in trained)
    assert all(math.isfinite(row["val_loss"]) and row["val_loss"] > 0 for row in trained)
    at_top = [row["val_loss"] for row in trained if row["budget"] == trained[0]["budget"]]
    assert at_top == sorted(at_top)
    assert board["winner"]["val_loss"] == at_top[0] and board["winner"]["metric"] == "val_loss"
    assert board["rows"][0]["network"] == {"context": 16, "heads": 2}
    # the maximising companion study holds −val_loss (rung 1: 8 steps, rung 2: 24, one evaluation each)
    study = optuna.load_study(
        study_name="lm2.confirm",
        storage=JournalStorage(JournalFileBackend(str(lm_runs / "lm2" / "journal.log"))),
    )
    units = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert {t.user_attrs["run"]["steps"] for t in units} == {8, 24}
    for unit in units:
        assert unit.value == pytest.approx(-unit.user_attrs["run"]["best_val_loss"])
        assert list(unit.intermediate_values.values()) == [pytest.approx(unit.value)]


def _lm_result(val_loss: float) -> dict:
    result = TrainResult(spec="pn", seed=0, batch_size=8, device="cpu", task=LANGUAGE_MODEL.name)
    result.val_loss, result.train_loss = [val_loss + 0.5, val_loss], [6.0, 5.0]
    return {**result.to_dict(), "seed": 0}


def test_promotion_and_ranking_prefer_the_lower_val_loss():
    low, high = (Candidate(0, "pn", False, "top"), 0.01), (Candidate(1, "none", False, "top"), 0.01)
    runs = {high: [_lm_result(4.0)], low: [_lm_result(3.0)]}
    assert promote([high, low], runs, eta=2) == [low]
    assert ranking_value(arm_summary(runs[low])) > ranking_value(arm_summary(runs[high]))


def test_rung_steps_scale_the_step_cap_with_the_rung_epochs():
    settings = ConfirmSettings(epochs=3, min_epochs=1, steps=300)
    assert [rung_steps(settings, e) for e in rung_epochs(settings)] == [100, 300]
    assert rung_steps(ConfirmSettings(epochs=3), 1) is None


def test_the_transformer_space_loads_and_validates():
    space = load_space("transformer")
    assert space.confirm.model == "gpt" and space.confirm.dataset == "text" and space.confirm.steps
    assert space.probe.model == "gpt" and space.probe.data == "text"  # the probes read text, not digits
    assert {"placement", "qk_norm", "final_norm", "depth_scaling"} <= {p.option for p in space.params}
    shown = runner.invoke(app, ["space", "validate", "transformer"])
    assert shown.exit_code == 0, shown.stderr
