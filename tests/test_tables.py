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
