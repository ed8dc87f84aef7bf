"""The leaderboard on hand-made trials in a real journal storage: ranking by the stored score weights,
one row per config, unstable and failed rows, the Pareto front, merged confirmation results, table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial
from scipy import stats
from typer.testing import CliRunner

from normsearch.cli import app
from normsearch.cli.tables import default_line
from normsearch.leaderboard import build_rows, document, pareto_mask, sort_rows, versus_default
from normsearch.probes import SCORES
from normsearch.records import ROW_KEYS, IncompatibleStudy, TrialRecord, check_schema, schema_version, write
from normsearch.search import DIRECTIONS, OBJECTIVES_VERSION, objective_values
from normsearch.space import ScoreWeights

runner = CliRunner()
WEIGHTS = {"activation_growth": 1.0, "similarity": 2.0, "grad_ratio": 0.5, "step_loss_ratio": 1.0}


def _complete(config: str, scores: list[float], **attrs) -> optuna.trial.FrozenTrial:
    """A finished trial with these probe scores (growth, similarity, grad ratio, step loss ratio), valued as
    the search does."""
    probe = {
        "blocks": 4,
        "unstable": attrs.pop("unstable", False),
        "reason": None,
        **dict(zip(SCORES, scores, strict=True)),
    }
    return create_trial(
        state=TrialState.COMPLETE,
        values=objective_values(probe),
        user_attrs={"config": config, "baseline": False, "probe": probe, **attrs},
    )


def _make_study(runs: Path, name: str = "hand") -> optuna.Study:
    (runs / name).mkdir(parents=True)
    storage = JournalStorage(JournalFileBackend(str(runs / name / "journal.log")))
    study = optuna.create_study(study_name=name, storage=storage, directions=DIRECTIONS)
    study.set_user_attr("weights", WEIGHTS)
    study.set_user_attr("objectives_version", OBJECTIVES_VERSION)
    study.set_user_attr("space", {"name": "hand"})
    for trial in (
        _complete("bn", [0.10, 0.50, 2.0, 0.6], baseline=True, baseline_name="bn"),  # 0
        _complete("ln", [0.05, 0.90, 1.2, 0.55], baseline=True, baseline_name="ln"),  # 1
        _complete("bn", [0.10, 0.50, 2.0, 0.6], duplicate_of=0),  # 2: a repeat of trial 0
        _complete("none", [100.0, 1.0, 1e6, 1e6], unstable=True),  # 3
        create_trial(
            state=TrialState.FAIL, user_attrs={"config": "gn:group_size=3", "fail_reason": "does not fit"}
        ),
        _complete("gn:group_size=4", [0.20, 0.95, 8.0, 0.97]),  # 5: worse than ln on every score
        _complete("in", [0.08, 0.30, 30.0, 0.7]),  # 6
        create_trial(state=TrialState.WAITING, user_attrs={"config": "bgn"}),  # 7: not run yet
    ):
        study.add_trial(trial)
    return study


def _score(scores: list[float]) -> float:
    return ScoreWeights(**WEIGHTS).score(dict(zip(SCORES, scores, strict=True)), blocks=4)


def test_pareto_mask_keeps_ties_and_drops_dominated_points() -> None:
    points = [(1, 1, 1), (2, 2, 2), (0, 3, 1), (1, 1, 1), (1, 1, 2)]
    assert pareto_mask(points) == [True, False, True, True, False]


def test_rows_one_per_config_ranked_by_the_studys_weights(tmp_path: Path) -> None:
    study = _make_study(tmp_path / "runs")
    rows = build_rows(study)
    assert [row["config"] for row in rows][-1] == "none"  # unstable after every stable row
    stable = rows[:-1]
    assert [row["score"] for row in stable] == sorted(row["score"] for row in stable)
    by_config = {row["config"]: row for row in rows}
    assert set(by_config) == {"bn", "ln", "none", "gn:group_size=4", "in"}  # no failed, no waiting
    assert by_config["bn"]["trial"] == 0 and by_config["bn"]["samples"] == 2
    assert by_config["ln"]["score"] == pytest.approx(_score([0.05, 0.90, 1.2, 0.55]))
    assert by_config["bn"]["baseline"] and by_config["bn"]["baseline_name"] == "bn"
    assert not by_config["in"]["baseline"]
    assert {c for c, row in by_config.items() if row["pareto"]} == {"bn", "ln", "in"}
    assert by_config["none"]["state"] == "UNSTABLE" and not by_config["none"]["pareto"]
    assert [row["rank"] for row in rows] == list(range(1, 6))
    everything = build_rows(study, include_failed=True)
    assert everything[-1]["state"] == "FAIL" and everything[-1]["reason"] == "does not fit"
    assert everything[-1]["score"] is None and len(everything) == 6


def test_columns_keep_the_probe_scores_and_decay_scores_like_growth(tmp_path: Path) -> None:
    (tmp_path / "runs" / "two").mkdir(parents=True)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "runs" / "two" / "journal.log")))
    study = optuna.create_study(study_name="two", storage=storage, directions=DIRECTIONS)
    study.set_user_attr("weights", WEIGHTS)
    study.add_trial(_complete("grows", [0.3, 0.4, 5.0, 0.8]))
    study.add_trial(
        _complete("vanishes", [-0.3, 0.4, 0.2, 0.8])
    )  # variance and early gradients decay instead
    study.add_trial(_complete("level", [0.01, 0.45, 1.1, 0.8]))
    rows = {row["config"]: row for row in build_rows(study)}
    assert rows["vanishes"]["activation_growth"] == -0.3 and rows["vanishes"]["grad_ratio"] == 0.2
    assert rows["vanishes"]["step_loss_ratio"] == 0.8
    assert rows["vanishes"]["objectives"] == {"similarity": 0.4, "step_loss_ratio": 0.8}
    assert rows["vanishes"]["score"] == pytest.approx(rows["grows"]["score"])
    assert rows["level"]["rank"] == 1 and rows["level"]["score"] < rows["vanishes"]["score"]


def test_legacy_confirmation_records_merge_into_rows_and_document(tmp_path: Path) -> None:
    """Records of normsearch before the work units (study attrs confirm:<trial>) stay readable."""
    study = _make_study(tmp_path / "runs")
    study.set_user_attr("confirm:0", {"accuracy": 0.9, "diverged": False, "seconds": 3.5})
    study.set_user_attr("confirm:1", {"accuracy": 0.5, "diverged": False})
    study.set_user_attr("confirm:6", {"accuracy": 0.1, "diverged": True})
    rows = build_rows(study)
    by_trial = {row["trial"]: row for row in rows}
    assert by_trial[0]["accuracy"] == 0.9 and by_trial[0]["confirm"]["seconds"] == 3.5
    assert by_trial[6]["diverged"] is True
    assert "accuracy" not in by_trial[5]
    by_accuracy = sort_rows(rows, "accuracy")
    assert [row["trial"] for row in by_accuracy[:3]] == [0, 1, 6]  # highest first, unconfirmed after
    assert [row["rank"] for row in by_accuracy] == list(range(1, 6))
    doc = document(study, rows)
    scores = [_score(s) for s in ([0.10, 0.50, 2.0, 0.6], [0.05, 0.90, 1.2, 0.55], [0.08, 0.30, 30.0, 0.7])]
    expected = stats.spearmanr([-s for s in scores], [0.9, 0.5, -1.0]).statistic  # diverged ranks last
    assert doc["calibration"]["spearman"] == pytest.approx(expected) and doc["calibration"]["n"] == 3
    assert doc["winner"]["trial"] == 0 and doc["winner"]["accuracy"] == 0.9 and doc["study"] == "hand"
    assert rows[0]["trial"] == 0  # rank 1 is the winner
    assert doc["trials"] == {"complete": 6, "fail": 1, "waiting": 1, "total": 8}
    assert json.loads(json.dumps(doc)) == doc


def test_leaderboard_and_runs_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    study = _make_study(tmp_path / "runs")
    study.set_user_attr("confirm:0", {"accuracy": 0.9, "diverged": False})
    study.set_user_attr("confirm:6", {"accuracy": 0.1, "diverged": True})
    shown = runner.invoke(app, ["leaderboard", "hand", "--all"])
    assert shown.exit_code == 0, shown.stderr
    out = shown.stdout
    for text in ("accuracy", "90.0%", "diverged", "unstable", "failed", "★", "B"):
        assert text in out
    assert "winner: bn (trial 0), 90.0%" in out
    assert "trial 4 (gn:group_size=3): does not fit" in out
    top = runner.invoke(app, ["leaderboard", "--top", "2", "--json"])
    assert [row["config"] for row in json.loads(top.stdout)["rows"]] == [
        r["config"] for r in build_rows(study)[:2]
    ]
    bad = runner.invoke(app, ["leaderboard", "hand", "--sort", "speed"])
    assert bad.exit_code == 2
    assert "--sort: 'speed' is not a field; allowed: trained, score, activation_growth" in bad.stderr
    listed = runner.invoke(app, ["runs", "--json"])
    entry = json.loads(listed.stdout)["runs"][0]
    assert entry["study"] == "hand" and entry["best"] == build_rows(study)[0]["config"]
    assert entry["trials"]["complete"] == 6
    empty = runner.invoke(app, ["leaderboard", "--runs-dir", "elsewhere"])
    assert empty.exit_code == 2 and "no studies under elsewhere/" in empty.stderr


def test_rows_keep_their_key_order_and_a_study_without_a_schema_version_reads_as_version_1(
    tmp_path: Path,
) -> None:
    """The ``--json`` rows as before the typed records: ROW_KEYS first, objectives only on scored rows, the
    stds last; a study written before the schema version was stored (``_make_study`` stores none) reads."""
    study = _make_study(tmp_path / "runs")
    assert "schema_version" not in study.user_attrs and schema_version(study) == 1
    check_schema(study)  # today's layout: readable
    rows = {row["state"]: row for row in build_rows(study, include_failed=True)}
    tail = ["baseline_name", "unstable", "reason", "samples", "seconds", "params", "network"]
    assert list(rows["COMPLETE"]) == [*ROW_KEYS, "objectives", *tail, *(f"{name}_std" for name in SCORES)]
    assert list(rows["FAIL"]) == [*ROW_KEYS, *tail]
    assert list(ROW_KEYS) == [
        "rank",
        "trial",
        "config",
        "baseline",
        "pareto",
        "state",
        *SCORES,
        "score",
        "rejected",
    ]


@pytest.mark.parametrize("version", [3, 0, "1", None])
def test_a_study_of_an_unknown_schema_is_refused_in_one_line(tmp_path: Path, version) -> None:
    study = _make_study(tmp_path / "runs")
    study.set_user_attr("schema_version", version)
    with pytest.raises(
        IncompatibleStudy, match=rf"study 'hand' holds records of schema version {version!r} "
    ):
        check_schema(study)
    result = runner.invoke(app, ["leaderboard", "hand", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "reads versions 1 to 2" in result.stderr


def test_trial_records_refuse_undeclared_keys() -> None:
    stored: dict = {}
    write(stored.__setitem__, config="bn", rejected=None)
    assert stored == {"config": "bn", "rejected": None}
    with pytest.raises(TypeError, match="not a trial record field: confg"):
        write(stored.__setitem__, confg="bn")
    assert stored == {"config": "bn", "rejected": None}  # nothing written
    assert TrialRecord(**stored) == TrialRecord(config="bn")


def _record(config: str, per_seed: dict[str, float], budget: int = 3, diverged: bool = False) -> dict:
    """A candidate record trained at ``budget`` (its best arm) with these per-seed accuracies."""
    mean = sum(per_seed.values()) / len(per_seed)
    arm = {"epochs": budget, "lr": 0.1, "accuracy": mean, "per_seed": per_seed, "diverged": diverged}
    return {"config": config, "trial": 0, "budget": budget, "rungs": [{**arm, "epochs": 1}, arm]}


def test_the_winner_beats_the_default_only_beyond_twice_the_standard_error_of_paired_seeds() -> None:
    # 2 seeds: d = +0.03, +0.01 → mean 0.02, sd 0.01414, SE 0.01 (b on 10⁶ images is ~0.0002): beaten
    got = versus_default(
        _record("gn", {"0": 0.95, "1": 0.93}), _record("bn", {"0": 0.92, "1": 0.92}), "bn", 10**6
    )
    assert got["beaten"] is True and got["recommend"] == "gn" and got["seeds"] == 2
    assert got["difference"] == pytest.approx(0.02) and got["noise"] == pytest.approx(
        2 * 0.01414 / 2**0.5, rel=1e-3
    )
    assert got["accuracy"] == pytest.approx(0.92) and got["config"] == "bn"
    # d = +0.05, −0.01: mean 0.02 < 2 · 0.04243 / √2 = 0.06: seed noise, use the default
    noisy = versus_default(
        _record("gn", {"0": 0.97, "1": 0.91}), _record("bn", {"0": 0.92, "1": 0.92}), "bn", 10**6
    )
    assert noisy["beaten"] is False and noisy["recommend"] == "bn"
    # one seed: the binomial SE of the difference on 359 images, √((.95·.05 + .93·.07)/359) = 0.0177, stands in
    one = versus_default(_record("gn", {"0": 0.95}), _record("bn", {"0": 0.93}), "bn", 359)
    assert (
        one["noise"] == pytest.approx(2 * ((0.95 * 0.05 + 0.93 * 0.07) / 359) ** 0.5)
        and one["beaten"] is False
    )
    clear = versus_default(_record("gn", {"0": 0.95}), _record("bn", {"0": 0.85}), "bn", 359)
    assert clear["beaten"] is True
    # a default that diverged is beaten; the default as winner is not; untrained or unpaired: unknown
    assert versus_default(_record("gn", {"0": 0.9}), _record("bn", {"0": 0.95}, diverged=True), "bn", 359)[
        "beaten"
    ]
    assert versus_default(_record("bn", {"0": 0.9}), _record("bn", {"0": 0.9}), "bn", 359)["beaten"] is False
    missing = versus_default(_record("gn", {"0": 0.9}), _record("bn", {"0": 0.9}, budget=1), "bn", 359)
    assert missing["beaten"] is None and "not trained for 3 epoch(s)" in missing["reason"]
    other = versus_default(_record("gn", {"0": 0.9}), _record("bn", {"1": 0.9}), "bn", 359)
    assert other["beaten"] is None and other["recommend"] == "bn"


def test_the_default_line_says_whether_the_winner_beats_it_and_what_to_use() -> None:
    best = {"config": "gn"}
    beaten = versus_default(
        _record("gn", {"0": 0.95, "1": 0.93}), _record("bn", {"0": 0.92, "1": 0.92}), "bn", 10**6
    )
    assert default_line(best, beaten) == "winner gn beats the default bn by +2.0 points (2 seeds; noise 2.0)"
    kept = versus_default(_record("gn", {"0": 0.95}), _record("bn", {"0": 0.93}), "bn", 359)
    assert default_line(best, kept) == (
        "winner gn does not beat the default bn beyond seed noise (+2.0 points, 1 seed; noise 3.5): use bn"
    )
    assert default_line(
        {"config": "bn"}, versus_default(_record("bn", {"0": 0.9}), _record("bn", {"0": 0.9}), "bn", 9)
    ) == ("winner bn is the default: use bn")
    assert default_line(best, None) is None
