"""``normsearch report`` on a small real study (digits, a tiny ResNet, a few one-epoch confirmation runs):
each figure exists as a valid PNG and SVG with the expected axes and series, the page embeds and links them,
a study without confirmation degrades to the figures it has; ``probe --plot`` draws a direct probe."""

from __future__ import annotations

import itertools
import math
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from matplotlib.collections import PathCollection
from matplotlib.image import imread
from typer.testing import CliRunner

from normsearch.cli import app
from normsearch.confirm import ConfirmSettings, confirm_study
from normsearch.confirm.calibration import QUANTITIES, calibrate
from normsearch.confirm.units import companion, unit_trials
from normsearch.leaderboard import build_rows
from normsearch.report import FORMATS, figures, write_report
from normsearch.search import OBJECTIVES
from normsearch.storage import open_study

runner = CliRunner()
TINY = (
    "space:\n"
    "  preset: {choices: [bn, ln, in, rms, none]}\n"
    "probe: {depth: 8, width: 8, batch_size: 16, seeds: 1, resolution: 8}\n"
    "search: {n_trials: 5, sampler: brute_force}\n"
    "confirm: {top_k: 1, depth: 8, width: 8, epochs: 2, batch_size: 64, device: cpu, seeds: 2, max_cost: null}\n"
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    (root / "tiny.yaml").write_text(TINY)
    result = runner.invoke(
        app, ["run", "--space", str(root / "tiny.yaml"), "--runs-dir", str(root / "runs"), "--no-confirm"]
    )
    assert result.exit_code == 0, result.stderr
    steps = [line.split("`")[1] for line in result.stdout.splitlines() if "`normsearch " in line]
    assert steps == [
        "normsearch confirm tiny",
        "normsearch report tiny",
        "normsearch export tiny -o my_norm.py",
    ]
    return root / "runs"


@pytest.fixture(scope="module")
def confirmed(searched: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = Path(shutil.copytree(searched, tmp_path_factory.mktemp("confirmed") / "runs"))
    study = open_study("tiny", runs)
    confirm_study(study, ConfirmSettings(**open_study("tiny", runs).user_attrs["confirm"]))
    return runs


def _labels_span_the_axis(ax) -> None:
    """A log axis labels at least three ticks, spread over at least half its (log) range."""
    low, high = sorted(ax.get_ylim())
    ticks = [
        label.get_position()[1]
        for label in ax.get_yticklabels()
        if label.get_text() and low <= label.get_position()[1] <= high
    ]
    assert len(ticks) >= 3, ax.get_ylabel()
    assert math.log(max(ticks) / min(ticks)) >= 0.5 * math.log(high / low), (ax.get_ylabel(), ticks)


def _svg_axes(path: Path) -> int:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return sum(1 for g in root.iter(f"{SVG}g") if re.fullmatch(r"axes_\d+", g.get("id", "")))


def _valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 300
    assert pixels.std() > 0.01  # something is drawn


def test_report_of_a_confirmed_study(confirmed: Path, tmp_path: Path) -> None:
    study = open_study("tiny", confirmed)
    rows = build_rows(study)
    report = write_report(study, tmp_path / "out", top=5)
    assert set(report.figures) == {"probe_curves", "pareto_front", "calibration", "training_curves"}
    assert not report.missing
    axes = {key: figure.axes for key, figure in report.figures.items()}

    drawn = [row for row in rows if row["state"] == "COMPLETE" or row["baseline"]]
    records = {t.number: t.user_attrs["probe"]["curves"] for t in study.trials if "probe" in t.user_attrs}
    distinct = {repr(records[row["trial"]]) for row in drawn}
    assert len(axes["probe_curves"]) == 3
    for ax in axes["probe_curves"]:
        assert len(ax.get_lines()) == len(distinct)  # identical curves: one line
    legend = [t.get_text() for t in report.figures["probe_curves"].legends[0].get_texts()]
    assert len(legend) == len(distinct)
    for row in drawn:  # each config named once, by its spec string
        assert sum(f"#{row['rank']} {row['config']}" in text.replace("\n", "") for text in legend) == 1
    assert axes["probe_curves"][0].get_yscale() == "log" and axes["probe_curves"][1].get_yscale() == "linear"
    blocks = len(study.trials[rows[0]["trial"]].user_attrs["probe"]["curves"]["variance"])
    assert len(axes["probe_curves"][0].get_lines()[0].get_xdata()) == blocks

    confirmed_rows = [row for row in rows if "accuracy" in row]
    assert len(confirmed_rows) >= 4  # top 1 + the baselines bn, ln, in
    assert len(axes["pareto_front"]) == len(list(itertools.combinations(OBJECTIVES, 2)))
    for ax in axes["pareto_front"]:
        groups = {
            c.get_label(): len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)
        }
        stable = [row for row in rows if row["state"] == "COMPLETE"]
        assert groups["candidates"] == len(stable) and groups["winner"] == 1
        assert groups["Pareto front"] == sum(row["pareto"] for row in stable)
        assert groups["confirmed"] == sum("accuracy" in row for row in stable)

    calibration = calibrate(rows, {row["trial"]: row["confirm"] for row in confirmed_rows})
    assert len(axes["calibration"]) == len(QUANTITIES)
    for ax, name in zip(axes["calibration"], QUANTITIES, strict=True):
        rho = calibration[name]["spearman"]
        assert ("n/a" if rho is None else f"{rho:+.2f}") in ax.get_title()
        groups = {
            c.get_label(): len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)
        }
        assert groups.pop("winner") == 1  # rank 1 of this study is a confirmed candidate
        assert sum(groups.values()) == len(confirmed_rows)
        assert "ρ" in ax.get_title() and f"n {len(confirmed_rows)}" in ax.get_title()

    loss, accuracy = axes["training_curves"]
    queue = companion(study, create=False)
    units = unit_trials(queue, queue.user_attrs["training"])
    assert len(units) > 2 * len(confirmed_rows)  # every rung, learning rate and seed, not the best arms only
    for ax in (loss, accuracy):
        runs = [line.get_label() for line in ax.get_lines() if " lr " in line.get_label()]
        assert len(runs) == len(units)  # one line per run, named with its learning rate
        for unit in units:
            attrs = unit.user_attrs
            assert any(f" {attrs['config']} lr {attrs['lr']:g} seed {attrs['seed']}" in run for run in runs)

    pixels = imread(report.files["calibration"]["png"])
    assert pixels.shape[1] / pixels.shape[0] < 2.5  # a grid, not a 5:1 strip
    for key in ("probe_curves", "training_curves"):
        report.figures[key].draw_without_rendering()
        for ax in report.figures[key].axes:
            if ax.get_yscale() == "log":
                _labels_span_the_axis(ax)

    for key, files in report.files.items():
        assert set(files) == set(FORMATS)
        _valid_png(files["png"])
        assert _svg_axes(files["svg"]) == len(axes[key])

    html = report.html.read_text()
    assert html.count('src="data:image/png;base64,') == 4
    board = html[html.index("<h2>Leaderboard</h2>") :]
    assert "<td>W" in board and "W winner" in board  # the legend's marks are the rows' marks
    assert ("R rejected" in board) == any(row.get("rejected") for row in rows[:25])
    for key in report.files:
        assert f'href="{key}.svg"' in html and f'href="{key}.png"' in html
    winner = rows[0]
    assert f"<code>{winner['config']}</code>" in html.replace("<wbr>", "")
    code = report.code.read_text()
    compile(code, str(report.code), "exec")
    assert "class " in code and code.split("\n", 1)[0] in html.replace("&quot;", '"')


def test_report_command_without_confirmation_and_bad_output(searched: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", "tiny", "--runs-dir", str(searched), "-o", str(tmp_path / "page")])
    assert result.exit_code == 0, result.output
    assert "drawing probe curves" in result.stderr and "wrote" in result.stderr
    made = {p.name for p in (tmp_path / "page").iterdir()}
    assert {"index.html", "winner.py", "probe_curves.png", "probe_curves.svg", "pareto_front.svg"} <= made
    assert not {"calibration.png", "training_curves.png"} & made
    html = (tmp_path / "page" / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "Not drawn: not confirmed yet" in html

    (tmp_path / "file").write_text("keep")
    bad = runner.invoke(app, ["report", "tiny", "--runs-dir", str(searched), "-o", str(tmp_path / "file")])
    assert bad.exit_code == 2 and bad.stdout == ""
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: -o:") and "not a folder" in lines[0]
    assert (tmp_path / "file").read_text() == "keep"


def test_probe_plot_draws_each_spec(tmp_path: Path) -> None:
    args = ["--depth", "8", "--width", "8", "--batch-size", "8", "--seeds", "1", "--resolution", "8"]
    result = runner.invoke(app, ["probe", "bn", "ln", *args, "--plot", str(tmp_path / "curves.svg")])
    assert result.exit_code == 0, result.output
    assert _svg_axes(tmp_path / "curves.svg") == 3
    text = (tmp_path / "curves.svg").read_text()
    assert text.count("<!-- bn -->") == 1 and text.count("<!-- ln -->") == 1  # legend entries
    bad = runner.invoke(app, ["probe", "bn", *args, "--plot", str(tmp_path / "curves.gif")])
    assert bad.exit_code == 2 and "--plot" in bad.stderr and ".png, .svg, .pdf" in bad.stderr


def _row(rank: int, similarity: float, step: float, **extra) -> dict:
    return {
        "rank": rank,
        "trial": rank,
        "config": f"gn:group_size={rank}",
        "state": "COMPLETE",
        "objectives": {"similarity": similarity, "step_loss_ratio": step},
        "accuracy": 0.9,
        **extra,
    }


def test_pareto_rank_labels_never_overlap() -> None:
    """Confirmed candidates on one spot share a label; near ones get labels that keep apart."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rows = [
        _row(1, 0.73, 0.84, pareto=True),
        _row(2, 0.7301, 0.8401),  # on top of #1
        *(_row(rank, 0.90 + 0.004 * rank, 1.08 + 0.002 * rank) for rank in range(3, 9)),
        _row(9, 0.62, 0.85, pareto=True),
        _row(10, 0.6201, 0.8499),
        _row(11, 0.6202, 0.85),
        _row(12, 0.55, 2.0, accuracy=None),
    ]
    rows[-1].pop("accuracy")
    figure = figures.pareto_front(rows, "t", winner=1)
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)
    (ax,) = figure.axes
    texts = [t for t in ax.texts if t.get_text().startswith("#")]
    named = [int(rank[1:]) for t in texts for rank in t.get_text().split()]
    assert sorted(named) == list(range(1, 12))  # every confirmed rank once
    assert "#1 #2" in [t.get_text() for t in texts] and "#9 #10 #11" in [t.get_text() for t in texts]
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), [t.get_text() for t in texts]


def test_identical_probe_curves_share_one_legend_entry() -> None:
    same = {"variance": [1.0, 0.9], "similarity": [0.5, 0.6], "grad_norm": [0.1, 0.2]}
    series = [
        figures.Series("#1 bn (winner)", {**same, "variance": [1.0, 1.1]}, "winner"),
        figures.Series("#2 in", same, "candidate"),
        figures.Series("#3 in:affine=none", same, "baseline"),
    ]
    merged = figures.merge_identical(series)
    assert [item.label for item in merged] == ["#1 bn (winner)", "#2 in, #3 in:affine=none"]
    assert merged[1].role == "baseline"
    figure = figures.probe_curves(series, "t")
    assert len(figure.axes[0].get_lines()) == 2 and len(figure.legends[0].get_texts()) == 2
