"""Tables fitted to the terminal: the leaderboard at 80 columns keeps every confirmed row's rank, full config
(wrapped, never cut) and accuracy; wider terminals add columns; presets and probe tables fit too."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from normsearch import PRESETS
from normsearch.cli import app
from normsearch.cli.tables import leaderboard_table, number, wrap
from normsearch.leaderboard import build_rows
from normsearch.search import OBJECTIVES

from .test_leaderboard import _complete, _make_study

runner = CliRunner()
LONG = [
    "gn:group_size=16,center=false,scale=rms,affine=none",
    "bgn:group_size=8,center=false,scale=rms,eps=0.0003,momentum=0.05,affine=gain,act=evo_s0",
]


def _render(table, width: int) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text().splitlines()


def _cells(lines: list[str], rank: int) -> tuple[str, str]:
    """(first line, config reassembled from its column) of the row with this rank."""
    header = next(line for line in lines if re.match(r"\s*#\s", line))
    at = header.index("config")
    start = next(i for i, line in enumerate(lines) if re.match(rf"\s*{rank}\s", line))
    config = lines[start][at:].strip()
    for line in lines[start + 1 :]:
        if line[:at].strip() or not line[at:].strip():
            break
        config += line[at:].strip()
    return lines[start], config


@pytest.fixture
def confirmed(tmp_path: Path):
    study = _make_study(tmp_path / "runs")
    for config, scores in zip(LONG, ([0.06, 0.92, 1.7, 0.8], [0.04, 0.95, 1.5, 0.9]), strict=True):
        study.add_trial(_complete(config, scores))
    trials = {t.user_attrs["config"]: t.number for t in reversed(study.trials)}  # a config's first trial
    for config, accuracy in (("bn", 0.912), ("in", 0.5), (LONG[0], 0.975), (LONG[1], 0.333)):
        study.set_user_attr(  # a confirmation record as normsearch kept them before the work units
            f"confirm:{trials[config]}", {"accuracy": accuracy, "final_accuracy": accuracy, "diverged": False}
        )
    return study


def test_leaderboard_at_80_columns_shows_rank_full_config_scores_and_accuracy(confirmed) -> None:
    rows = build_rows(confirmed)
    lines = _render(leaderboard_table("hand", rows, width=80), 80)
    assert max(len(line) for line in lines) <= 80
    assert "…" not in "\n".join(lines)
    confirmed_rows = [row for row in rows if "accuracy" in row]
    assert len(confirmed_rows) == 4
    for row in confirmed_rows:
        first, config = _cells(lines, row["rank"])
        assert config == row["config"]
        assert f"{100 * row['accuracy']:.1f}%" in first
        for name in (*OBJECTIVES, "score"):  # the scores the study minimises
            assert number(row[name]) in first
    assert not any(
        row["config"] in "\n".join(lines) for row in confirmed_rows if row["config"] in LONG
    )  # wrapped


def test_wider_terminals_show_more_columns_and_a_pipe_shows_all(confirmed) -> None:
    rows = build_rows(confirmed)
    headers = {}
    for width in (80, 160, None):
        lines = _render(leaderboard_table("hand", rows, width=width), width or 400)
        headers[width] = next(line for line in lines if re.match(r"\s*#\s", line)).split()
    assert set(headers[80]) < set(headers[160]) <= set(headers[None])
    assert (
        "growth" in headers[160] and "growth" not in headers[80]
    )  # a probe score the study does not minimise
    assert {"trial", "final", "samples"} <= set(headers[None])


def test_wrap_breaks_after_commas_and_never_loses_text() -> None:
    assert wrap("gn:group_size=16,center=false,scale=rms", 17) == [
        "gn:group_size=16,",
        "center=false,",
        "scale=rms",
    ]
    long = "bgn:group_size=8,eps=0.000123456789012345,affine=gain"
    for width in (5, 8, 16, 30):
        lines = wrap(long, width)
        assert "".join(lines) == long and max(map(len, lines)) <= width


def test_numbers_have_sensible_precision() -> None:
    assert number(0.07) == "0.070" and number(16.4262) == "16.43" and number(1e6) == "1.00e+06"
    assert number(1.2345678901234567e-05) == "1.23e-05" and number(None) == "-" and number(3) == "3"


def test_top_says_how_many_of_how_many(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _make_study(tmp_path / "runs")
    shown = runner.invoke(app, ["leaderboard", "hand", "--top", "2"])
    assert shown.exit_code == 0, shown.output
    assert "(2 of 5 configs)" in shown.stdout


@pytest.mark.parametrize("width", [80, 100])
def test_presets_table_fits_and_keeps_every_name(width: int) -> None:
    result = runner.invoke(app, ["presets"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= width and "…" not in result.stdout
    names = {line.split("│")[1].strip() for line in lines if line.startswith("│")}
    assert set(PRESETS) <= names


def test_accuracy_spread_collapse_and_budget_render_from_row_fields() -> None:
    base = {
        "state": "COMPLETE",
        "pareto": False,
        "baseline": False,
        "activation_growth": 0.1,
        "similarity": 0.5,
        "grad_ratio": 2.0,
        "score": 1.0,
    }
    rows = [
        {
            **base,
            "rank": 1,
            "trial": 4,
            "config": "gn:group_size=4",
            "accuracy": 0.9,
            "accuracy_std": 0.012,
            "budget": 3,
            "lr": 0.1,
            "confirm": {"seeds": [{}, {}]},
        },
        {
            **base,
            "rank": 2,
            "trial": 7,
            "config": "ln",
            "accuracy": 0.1,
            "accuracy_std": 0.0,
            "budget": 1,
            "collapsed": True,
            "diverged": False,
            "confirm": {"seeds": [{}]},
        },
    ]
    text = "\n".join(_render(leaderboard_table("s", rows, width=None), 300))
    assert "90.0±1.2%" in text and "collapsed" in text and "epochs" in text
    assert "std" not in text  # the spread sits in the accuracy cell, not a column of its own
    assert re.search(r"\blr\b", text)  # another scalar field: a generic column


# ------------------------------------------------------------------------------------------------------
# Every table at 80, 100, 120 and 200 columns: columns drop by priority, numbers are never cut

WIDTHS = (80, 100, 120, 200)


def _tokens_intact(lines: list[str], text: str) -> bool:
    """Whether ``lines`` (``text`` wrapped) split it only at its spaces: every word is one of ``text``'s."""
    return " ".join(" ".join(lines).split()) == " ".join(text.split())


def _trained_row(rank: int, config: str, accuracy: float, budget: int, **extra) -> dict:
    record = {
        "budget": budget,
        "lr": 0.025,
        "accuracy": accuracy,
        "accuracy_std": 0.004,
        "final_accuracy": accuracy - 0.01,
        "diverged": False,
        "collapsed": False,
        "seeds": [{}, {}],
        "seconds": 62.46955,
        "images_per_s": 311.75,
        "small_batch": {"accuracy": accuracy - 0.02, "batch_size": 8, "drop": -0.02},
    }
    return {
        "rank": rank,
        "trial": 10 + rank,
        "config": config,
        "baseline": rank == 3,
        "pareto": rank == 1,
        "state": "COMPLETE",
        "score": 0.6148810328060386,
        "accuracy": accuracy,
        "accuracy_std": 0.004,
        "budget": budget,
        "lr": 0.025,
        "collapsed": False,
        "diverged": False,
        "confirm": record,
        **extra,
    }


TRAINED = [
    _trained_row(1, LONG[1], 0.98050, 3),
    _trained_row(2, LONG[0], 0.97771, 3),
    _trained_row(3, "gn:group_size=16", 0.85793, 1),
]


@pytest.mark.parametrize("width", WIDTHS)
def test_results_table_keeps_accuracy_budget_and_lr_at_every_width(width: int) -> None:
    from normsearch.cli.tables import results_table

    lines = _render(results_table("confirmation of vgg", TRAINED, width=width), width)
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= width and "…" not in text
    header = next(line for line in lines if re.match(r"\s*#\s", line)).split()
    assert {"accuracy", "epochs", "lr", "config"} <= set(header)
    for row in TRAINED:
        first, config = _cells(lines, row["rank"])
        assert config == row["config"]
        assert f"{100 * row['accuracy']:.1f}±0.4%" in first
        assert re.search(rf"\s{row['budget']}\s+0\.025\s", first)  # epochs and lr side by side
    if width >= 200:
        assert {"trial", "final"} <= set(header)
        assert "62.5" in text and "(b=8)" in text  # seconds and the small-batch accuracy


def test_leaderboard_keeps_the_epochs_at_80_columns() -> None:
    rows = [{k: v for k, v in row.items() if k != "small_batch"} for row in TRAINED]
    for row in rows:
        row.update(activation_growth=0.084, similarity=0.733, grad_ratio=2.706, step_loss_ratio=0.838)
    lines = _render(leaderboard_table("vgg", rows, width=80), 80)
    header = next(line for line in lines if re.match(r"\s*#\s", line)).split()
    assert "epochs" in header and "accuracy" in header
    assert re.search(r"85\.8±0\.4%\s+1\s", _cells(lines, 3)[0])  # the 1-epoch row says so


def test_default_top_fits_a_24_row_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    study = _make_study(tmp_path / "runs")
    for size in range(2, 30):
        study.add_trial(
            _complete(f"gn:group_size={size},center=false,scale=rms", [0.1, 0.5 + size / 100, 2, 0.7])
        )
    shown = runner.invoke(app, ["leaderboard", "hand"], env={"COLUMNS": "80", "LINES": "24"})
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert len(lines) <= 23 and max(map(len, lines)) <= 80
    count = int(re.search(r"\((\d+) of 33 configs\)", shown.stdout).group(1))
    assert 5 <= count < 20  # as many as fit, fewer than the 20 a file gets
    assert len(runner.invoke(app, ["leaderboard", "hand"]).stdout.splitlines()) > 24  # no terminal: 20 rows
    asked = runner.invoke(app, ["leaderboard", "hand", "--top", "20"], env={"COLUMNS": "80", "LINES": "24"})
    assert "(20 of 33 configs)" in asked.stdout  # an explicit --top is what the user asked for


def test_winner_is_marked_and_the_legend_lists_only_marks_in_use(trained_study) -> None:
    shown = runner.invoke(app, ["leaderboard", "hand"], env={"COLUMNS": "100"})
    assert shown.exit_code == 0, shown.output
    first, _ = _cells(shown.stdout.splitlines(), 1)
    assert "W" in first.split()[1] and "W winner" in shown.stdout
    assert "winner: " + LONG[0] in " ".join(shown.stdout.split())


@pytest.fixture
def trained_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The hand study with confirmation records at 3 epochs (LONG[0] best) and 1 epoch (bn, in)."""
    monkeypatch.chdir(tmp_path)
    study = _make_study(tmp_path / "runs")
    study.add_trial(_complete(LONG[0], [0.06, 0.92, 1.7, 0.8]))
    trials = {t.user_attrs["config"]: t.number for t in reversed(study.trials)}
    for config, accuracy, epochs in (("bn", 0.99, 1), ("in", 0.5, 1), (LONG[0], 0.975, 3)):
        study.set_user_attr(
            f"confirm:{trials[config]}",
            {"accuracy": accuracy, "final_accuracy": accuracy, "training": {"epochs": epochs, "lr": 0.1}},
        )
    return study


def test_summary_lines_break_at_spaces_only() -> None:
    from normsearch.confirm.display import say

    line = (
        "calibration at 1 epoch(s) (n=11): score ρ=-0.42 τ=-0.09 · activation_growth ρ=-0.10 τ=-0.07 · "
        "similarity ρ=-0.42 τ=-0.09 · grad_ratio ρ=+0.41 τ=+0.07 · step_loss_ratio ρ=+0.16 τ=+0.20"
    )
    for width in WIDTHS:
        console = Console(width=width, file=io.StringIO(), force_terminal=True, color_system=None)
        say(console, line)
        lines = console.file.getvalue().splitlines()
        assert len(lines) > 1 or width == 200
        assert max(map(len, lines)) <= width and _tokens_intact(lines, line)


def test_margin_within_seed_noise_and_most_runs_collapsed() -> None:
    from normsearch.cli.tables import collapse_line, margin_line

    best = {
        "trial": 11,
        "config": LONG[1],
        "accuracy": 0.9805,
        "accuracy_std": 0.004,
        "budget": 3,
        "seeds": 2,
    }
    line = margin_line(TRAINED, best)
    assert line is not None and "0.3 pp" in line and "within seed noise (σ 0.4 pp over 2 seeds)" in line
    assert LONG[0] in line
    apart = [TRAINED[0], {**TRAINED[1], "accuracy": 0.95}]
    assert margin_line(apart, best) is None  # 3 pp apart, σ 0.4 pp
    one_seed = margin_line(TRAINED, {**best, "seeds": 1})
    assert one_seed is not None and "one seed" in one_seed
    assert collapse_line(TRAINED) is None
    collapsed = [TRAINED[0], *({**row, "collapsed": True} for row in TRAINED[1:])]
    warning = collapse_line(collapsed)
    assert warning is not None and "2 of 3" in warning and "--epochs" in warning and "--lr" in warning


def test_confirmation_progress_counts_runs_and_gives_an_eta() -> None:
    from optuna.trial import TrialState, create_trial

    from normsearch.confirm.display import TrainingDisplay
    from normsearch.confirm.units import Unit

    units = [Unit(trial=1, config="gn:group_size=8", lr=0.1, epochs=1, seed=seed) for seed in range(3)]
    console = Console(width=100, file=io.StringIO(), force_terminal=True, color_system=None)
    run = {"accuracy": 0.9, "seconds": 1.5, "images_per_s": 300.0, "diverged": False, "collapsed": False}
    with TrainingDisplay(console, "vgg") as display:
        display.rung_started(0, 2, 1, units)
        for unit in units:
            display.started(unit)
            display.finished(
                unit, create_trial(state=TrialState.COMPLETE, value=0.9, user_attrs={"run": run})
            )
    printed = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "\n", console.file.getvalue())
    lines = [line for line in printed.splitlines() if line.startswith(("confirm", "  "))]
    assert lines[0].startswith("confirm vgg rung 1/2:")
    assert lines[1].startswith("  1/3 gn:group_size=8 lr 0.1 seed 0, 1 ep: accuracy 0.900")
    assert lines[1].endswith(" · eta 0:00") and lines[3].startswith("  3/3 ")
    assert max(map(len, lines)) <= 100


def test_search_bar_has_an_eta_and_keeps_the_best_score_at_80_columns() -> None:
    from normsearch.cli.search import _progress

    progress = _progress()
    task = progress.add_task("vgg", total=60, completed=0, best="best 0.321 " + LONG[1])
    for done in (10, 20):
        progress.update(task, completed=done)
    console = Console(width=80, file=io.StringIO(), color_system=None)
    console.print(progress.make_tasks_table(progress.tasks))
    (line,) = console.file.getvalue().splitlines()
    assert len(line) <= 80 and "20/60" in line and "eta" in line and "best 0.321 bgn:" in line
