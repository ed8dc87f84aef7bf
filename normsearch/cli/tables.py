"""Tables that fit the terminal: the leaderboard, and the column-dropping layout the probe and presets
tables share.

A table is a list of :class:`Column` (a header, a cell function of the row, and a priority). At a given
width, :func:`fit_table` drops the columns with the highest priority numbers until the rest fits (priority 0
never goes), then gives the wrapped column, the last one, whatever width is left: its text is broken after
``,`` (a config string reads ``gn:group_size=16,`` / ``center=false``), never cut. Width
``None`` (output to a file or pipe) keeps every column at its natural width. Numbers are printed by
:func:`number`: three decimals below 10, fewer above, scientific notation beyond 1e4 and below 1e-3.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rich import box
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ..records import SCORE_NAMES as SCORES
from ..score import OBJECTIVES

MIN_WRAP = 16
"""Narrowest the wrapped column gets before further columns are dropped."""
_MEASURE = Console(width=10_000)


@dataclass(frozen=True)
class Column:
    """A table column: ``cell(row)`` gives its text; higher ``priority`` is dropped first (0: never)."""

    header: str
    cell: Callable[[dict[str, Any]], str | Text]
    priority: int = 0
    justify: Literal["left", "right"] = "right"
    wraps: bool = False
    """Whether rich may wrap the column's text at spaces (the ``wrapped`` column is wrapped here instead)."""


def number(value: Any) -> str:
    """A number at sensible precision for a table cell ("-" for None, "inf"/"nan" spelled out)."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    size = abs(value)
    if size >= 1e4 or (0 < size < 1e-3):
        return f"{value:.2e}"
    decimals = 3 if size < 10 else 2 if size < 100 else 1 if size < 1000 else 0
    return f"{value:.{decimals}f}"


def _pieces(text: str, width: int) -> list[str]:
    """``text`` split after each ``,``; a piece wider than ``width`` split after ``:`` and ``=`` too, and a
    part still wider folded at the width."""
    out: list[str] = []
    for piece in (p for p in re.split(r"(?<=,)", text) if p):
        parts = [piece] if len(piece) <= width else [p for p in re.split(r"(?<=[:=])", piece) if p]
        for part in parts:
            out += [part[i : i + width] for i in range(0, len(part), width)]
    return out


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken after ``,`` where possible (see
    :func:`_pieces`); joining the lines gives ``text`` back."""
    lines: list[str] = []
    line = ""
    for piece in _pieces(text, width):
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
    return [*lines, line]


def _table(
    columns: Sequence[Column],
    cells: list[list[str | Text]],
    wrapped: str | None,
    wrap_width: int | None,
    **options: Any,
) -> Table:
    grid = Table(**({"box": box.SIMPLE_HEAD, "padding": (0, 1, 0, 0), "show_edge": False} | options))
    for column in columns:
        grid.add_column(column.header, justify=column.justify, no_wrap=not column.wraps, overflow="fold")
    for row in cells:
        out: list[RenderableType] = []
        for column, cell in zip(columns, row, strict=True):
            if column.header == wrapped and wrap_width is not None:
                cell = "\n".join(wrap(cell.plain if isinstance(cell, Text) else cell, wrap_width))
            out.append(cell)
        grid.add_row(*out)
    return grid


def _width(table: Table, natural: bool) -> int:
    measured = Measurement.get(_MEASURE, _MEASURE.options, table)
    return measured.maximum if natural else measured.minimum


def fit_table(
    columns: Sequence[Column],
    rows: Sequence[dict[str, Any]],
    *,
    width: int | None,
    wrapped: str | None = None,
    **options: Any,
) -> Table:
    """A rich ``Table`` of ``rows`` that fits ``width`` (see the module docstring); ``wrapped`` names the
    column (the last) whose text is wrapped; ``options`` go to ``Table``.

    Columns of priority ≥ 2 are dropped (highest first) while the table does not fit unwrapped; then
    columns of priority 1 while it does not fit with the ``wrapped`` column at ``MIN_WRAP`` and the
    ``wraps`` columns at their longest word; the ``wrapped`` column is wrapped to what is left.
    """
    shown = list(columns)

    def cells() -> list[list[str | Text]]:
        return [[column.cell(row) for column in shown] for row in rows]

    def natural() -> int | None:
        if wrapped is None:
            return None
        at = [c.header for c in shown].index(wrapped)
        return max(
            [
                len(wrapped),
                *(len(Text(row[at]).plain if isinstance(row[at], str) else row[at].plain) for row in cells()),
            ]
        )

    def excess(wrap_width: int | None, natural: bool = False) -> int:
        return _width(_table(shown, cells(), wrapped, wrap_width, **options), natural) - width

    if width is None:
        return _table(shown, cells(), wrapped, None, **options)
    for least, wrap_width, unwrapped in ((2, natural(), True), (1, MIN_WRAP if wrapped else None, False)):
        while excess(wrap_width, unwrapped) > 0 and (droppable := [c for c in shown if c.priority >= least]):
            shown.remove(max(droppable, key=lambda c: (c.priority, shown.index(c))))
    full = natural()
    wrap_width = None if full is None else max(MIN_WRAP, min(full, MIN_WRAP - excess(MIN_WRAP)))
    return _table(shown, cells(), wrapped, wrap_width, **options)


# ------------------------------------------------------------------------------------------------------
# The leaderboard

PROBE_HEADERS = {
    "activation_growth": "growth",
    "similarity": "similarity",
    "grad_ratio": "grad\nratio",
    "step_loss_ratio": "step\nratio",
}
FLAGS = {
    "winner": ("W", "bold green", "winner"),
    "pareto": ("★", "yellow", "Pareto front"),
    "baseline": ("B", "cyan", "baseline"),
    "rejected": ("R", "red", "rejected (cannot train)"),
}
"""Row flags shown as one-letter marks: key → (mark, style, legend)."""
STATES = {"COMPLETE": ("ok", "green"), "UNSTABLE": ("unstable", "yellow"), "FAIL": ("failed", "red")}
SHOWN_ELSEWHERE = {
    "rank",
    "trial",
    "config",
    "baseline",
    "pareto",
    "state",
    "score",
    "objectives",
    "baseline_name",
    "unstable",
    "reason",
    "samples",
    "seconds",
    "params",
    "accuracy",
    "accuracy_std",
    "metric",
    "val_loss",
    "val_loss_std",
    "diverged",
    "collapsed",
    "confirm",
    "budget",
    *FLAGS,
    *SCORES,
    *(f"{name}_std" for name in SCORES),
}
"""Row keys with a column or mark of their own (or none: nested data); other scalar keys get a generic
column on wide terminals."""


def _header(key: str) -> str:
    words = key.replace("_", " ").split()
    half = (len(words) + 1) // 2
    return " ".join(words[:half]) + ("\n" + " ".join(words[half:]) if words[half:] else "")


def _marks(row: dict[str, Any]) -> Text:
    text = Text()
    for key, (mark, style, _) in FLAGS.items():
        if row.get(key):
            text.append(mark, style=style)
    return text


METRIC_HEADERS = {"accuracy": "accuracy", "val_loss": "val loss\nbits/byte"}
"""The header of the confirmed metric's column, by the task's metric."""


def metric_text(metric: str, value: float, std: float | None = None) -> str:
    """``97.2%`` / ``97.2±0.4%`` for accuracy, ``2.931`` / ``2.931±0.037`` (bits per byte) for val_loss."""
    if metric == "accuracy":
        return f"{100 * value:.1f}" + (f"±{100 * std:.1f}" if std is not None else "") + "%"
    return f"{value:.3f}" + (f"±{std:.3f}" if std is not None else "")


def _metric_of(rows: Sequence[dict[str, Any]]) -> str:
    return next((row["metric"] for row in rows if "metric" in row), "accuracy")


def _accuracy(row: dict[str, Any]) -> Text:
    """The row's metric: ``97.2%``, ``97.2±0.4%`` when the row has a spread over several seeds (val_loss:
    ``2.931±0.037``), ``diverged`` or ``collapsed``."""
    if row.get("diverged") or row.get("collapsed"):
        return Text("diverged" if row.get("diverged") else "collapsed", style="red")
    metric = row.get("metric", "accuracy")
    value = row.get(metric)
    if value is None:
        return Text("-")
    seeds = len((row.get("confirm") or {}).get("seeds") or [])
    std = row.get(f"{metric}_std") if seeds > 1 else None
    return Text(metric_text(metric, value, std))


def _final(row: dict[str, Any]) -> str:
    metric = row.get("metric", "accuracy")
    final = (row.get("confirm") or {}).get(f"final_{metric}")
    return "-" if final is None else metric_text(metric, final)


def _state(row: dict[str, Any]) -> Text:
    label, style = STATES.get(row["state"], (row["state"].lower(), ""))
    return Text(label, style=style)


def _generic(key: str) -> Callable[[dict[str, Any]], str]:
    def cell(row: dict[str, Any]) -> str:
        value = row.get(key)
        return ("yes" if value else "") if isinstance(value, bool) else number(value)

    return cell


def leaderboard_columns(rows: Sequence[dict[str, Any]]) -> list[Column]:
    """The leaderboard's columns for these rows: only those some row has a value for; config last."""

    def some(key: str) -> bool:
        return any(row.get(key) is not None for row in rows)

    columns = [Column("#", lambda r: str(r["rank"])), Column("", _marks, justify="left")]
    columns += [
        Column(
            PROBE_HEADERS.get(name, _header(name)),
            lambda r, n=name: number(r.get(n)),
            1 if name in OBJECTIVES else 2,
        )
        for name in SCORES
        if some(name)
    ]
    columns.append(Column("score", lambda r: number(r.get("score"))))
    if any("metric" in row or "accuracy" in row or row.get("diverged") for row in rows):
        columns.append(Column(METRIC_HEADERS[_metric_of(rows)], _accuracy))
        if some("budget"):  # the epochs the accuracy comes from (the highest rung reached): never dropped
            columns.append(Column("epochs", lambda r: number(r.get("budget"))))
        columns.append(Column("final", _final, 4))
    extras = sorted(
        {
            key
            for row in rows
            for key, value in row.items()
            if key not in SHOWN_ELSEWHERE and isinstance(value, int | float | str | bool)
        }
    )
    columns += [Column(_header(key), _generic(key), 3) for key in extras if some(key)]
    if any(row["state"] != "COMPLETE" for row in rows):
        columns.append(Column("state", _state, 2, "left"))
    columns += [
        Column("trial", lambda r: str(r["trial"]), 2),
        Column("samples", lambda r: str(r.get("samples", 1)), 5),
        Column("probe s", lambda r: number(r.get("seconds")), 6),
    ]
    columns.append(Column("config", lambda r: r["config"] or "?", justify="left"))
    return columns


def leaderboard_caption(rows: Sequence[dict[str, Any]], *, scores: bool = True) -> str:
    """The legend of the marks these rows use, and (``scores``) which way each score is better."""
    legend = [
        f"{mark} {label}" for key, (mark, _, label) in FLAGS.items() if any(row.get(key) for row in rows)
    ]
    return "   ".join([*legend, *(["best: similarity low, step ratio low, score low"] if scores else [])])


def leaderboard_table(
    study_name: str, rows: Sequence[dict[str, Any]], *, total: int | None = None, width: int | None = None
) -> Table:
    """The leaderboard rows as a table fitted to ``width`` (None: every column, natural width).

    Always shown: rank, marks, score, accuracy and its budget (epochs) when confirmed, and the config in full
    (last, wrapped); then the probe scores the study minimises (dropped only below ~70 columns); then, as
    width allows, the other probe scores, trial, state, generic row fields, final accuracy, samples and probe
    seconds.
    """
    count = total if total is not None else len(rows)
    shown = f"{len(rows)} of {count} configs" if count > len(rows) else f"{count} configs"
    return fit_table(
        leaderboard_columns(rows),
        rows,
        width=width,
        wrapped="config",
        title=f"normsearch leaderboard: {study_name} ({shown})",
        title_justify="left",
        caption=leaderboard_caption(rows),
        caption_justify="left",
    )


def mark_winner(rows: Sequence[dict[str, Any]], best: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The rows with ``winner`` set on the winner's (``best``: :func:`normsearch.leaderboard.winner`)."""
    trial = None if best is None else best["trial"]
    return [{**row, "winner": row["trial"] == trial} for row in rows]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _small_batch(row: dict[str, Any]) -> str:
    record = row["confirm"].get("small_batch")
    return "-" if not record else f"{_percent(record['accuracy'])} (b={record['batch_size']})"


def _drop(row: dict[str, Any]) -> str:
    record = row["confirm"].get("small_batch")
    return "-" if not record else f"{100 * record['drop']:+.1f}"


def results_columns(rows: Sequence[dict[str, Any]]) -> list[Column]:
    """The confirmation table's columns: rank, marks, score, accuracy (± over seeds) and its budget and
    learning rate always; then, as width allows, trial, final accuracy, seconds, small-batch accuracy and
    drop, seeds, throughput; the config last (wrapped)."""
    columns = [
        Column("#", lambda r: str(r["rank"])),
        Column("", _marks, justify="left"),
        Column("score", lambda r: number(r.get("score")), 1),
        Column(METRIC_HEADERS[_metric_of(rows)], _accuracy),
        Column("epochs", lambda r: str(r["confirm"]["budget"])),
        Column("lr", lambda r: "-" if r["confirm"].get("lr") is None else f"{r['confirm']['lr']:g}"),
        Column("trial", lambda r: str(r["trial"]), 2),
        Column("final", _final, 3),
        Column("s", lambda r: f"{r['confirm']['seconds']:.1f}", 4),
    ]
    if any(row["confirm"].get("small_batch") for row in rows):
        columns += [Column("small batch", _small_batch, 5), Column("drop\npp", _drop, 5)]
    columns += [
        Column("seeds", lambda r: str(len(r["confirm"].get("seeds") or [])), 6),
        Column("img/s", lambda r: f"{r['confirm']['images_per_s']:.0f}", 7),
        Column("config", lambda r: r["config"] or "?", justify="left"),
    ]
    return columns


def results_table(title: str, rows: Sequence[dict[str, Any]], *, width: int | None = None) -> Table:
    """The trained candidates (rows with a ``confirm`` record, in leaderboard order) fitted to ``width`` as
    the leaderboard is (None: every column at its natural width); numbers are never cut."""
    return fit_table(
        results_columns(rows),
        [{**row, "rank": rank} for rank, row in enumerate(rows, 1)],
        width=width,
        wrapped="config",
        title=title,
        title_justify="left",
        caption=leaderboard_caption(rows, scores=False),
        caption_justify="left",
    )


def rendered_lines(renderables: Sequence[RenderableType], width: int) -> int:
    """How many terminal lines ``renderables`` take at ``width`` columns."""
    console = Console(width=width, file=io.StringIO(), color_system=None, soft_wrap=False)
    for renderable in renderables:
        console.print(renderable)
    return console.file.getvalue().count("\n")


def rows_that_fit(draw: Callable[[int], Sequence[RenderableType]], most: int, width: int, height: int) -> int:
    """The largest ``n`` in 1..``most`` whose ``draw(n)`` (the table of the first n rows and the lines under
    it) fits ``height`` lines at ``width`` columns, leaving one for the prompt; 1 when none does."""
    low, high = 1, max(1, most)
    while low < high:  # the height grows with n: bisect
        middle = (low + high + 1) // 2
        if rendered_lines(draw(middle), width) <= height - 1:
            low = middle
        else:
            high = middle - 1
    return low


def calibration_line(cal: dict[str, Any] | None) -> str | None:
    """One line under the table on how well the score ranked the confirmed candidates."""
    if cal is None:
        return None

    from ..confirm.calibration import where  # the confirm package loads torch: not at start-up

    def signed(value: Any) -> str:
        return "n/a" if value is None else f"{value:+.2f}"

    line = (
        f"calibration of the score against confirmed accuracy {where(cal)}: "
        f"Spearman {signed(cal.get('spearman'))}, Kendall {signed(cal.get('kendall'))}"
    )
    seeds = cal.get("seeds") or {}
    if seeds.get("pairs"):
        line += f"; seed to seed: Spearman {signed(seeds.get('spearman'))} (the most a probe can reach)"
    return line


def winner_line(best: dict[str, Any] | None) -> str | None:
    """``winner: gn:group_size=4 (trial 12), 97.8±0.3% after 3 epochs at lr 0.1``."""
    if best is None:
        return None
    metric = best.get("metric", "accuracy")
    value = metric_text(metric, best[metric], best[f"{metric}_std"] if best["seeds"] > 1 else None)
    unit = "" if metric == "accuracy" else " bits/byte"
    lr = "" if best["lr"] is None else f" at lr {best['lr']:g}"
    return (
        f"winner: {best['config']} (trial {best['trial']}), {value}{unit} after {best['budget']} epoch(s){lr}"
    )


def margin_line(rows: Sequence[dict[str, Any]], best: dict[str, Any] | None) -> str | None:
    """Whether the winner (``best``) beats the runner-up at its budget by more than seed noise.

    Seed noise is the larger of the two accuracies' spreads over seeds (σ); the margin is the difference of
    their mean accuracies. Said when the margin is within σ, or, with one seed (σ unmeasured), below 1 pp;
    None otherwise or without a runner-up."""
    if best is None:
        return None
    rivals = [
        row
        for row in rows
        if row.get("budget") == best["budget"]
        and row["trial"] != best["trial"]
        and row.get("accuracy") is not None
        and not row.get("diverged")
    ]
    if not rivals:
        return None
    second = max(rivals, key=lambda row: row["accuracy"])
    margin = 100 * (best["accuracy"] - second["accuracy"])
    head = f"the winner's margin over {second['config']} (trial {second['trial']}) is {margin:.1f} pp"
    if best["seeds"] > 1:
        noise = 100 * max(best["accuracy_std"] or 0.0, second.get("accuracy_std") or 0.0)
        if margin > noise:
            return None
        return (
            f"{head}, within seed noise (σ {noise:.1f} pp over {best['seeds']} seeds): the two are not told "
            "apart; more --seeds may separate them"
        )
    if margin >= 1.0:
        return None
    return f"{head} with one seed per run, which cannot tell it from seed noise: --seeds 3 measures the noise"


def collapse_line(rows: Sequence[dict[str, Any]]) -> str | None:
    """A warning when most trained candidates collapsed or diverged even at their best learning rate (the
    training was too short or too hot for the data to tell the layers apart); None otherwise."""
    trained = [row for row in rows if row.get("budget") is not None]
    failed = [row for row in trained if row.get("collapsed") or row.get("diverged")]
    if not trained or 2 * len(failed) <= len(trained):
        return None
    return (
        f"warning: {len(failed)} of {len(trained)} trained candidates collapsed or diverged at their best "
        "learning rate, so the ranking says little: train longer (more --epochs or --steps) or at a lower --lr"
    )


def default_line(best: dict[str, Any] | None, default: dict[str, Any] | None) -> str | None:
    """Whether the winner beats the space's default layer (:func:`normsearch.leaderboard.versus_default`):
    ``winner gn:group_size=4 beats the default bn by +1.2 points (2 seeds; noise 0.8)``, or ``… does not beat
    the default bn beyond seed noise (…): use bn``."""
    if best is None or default is None:
        return None
    name, seeds = default["config"], f"{default['seeds']} seed{'' if default['seeds'] == 1 else 's'}"
    if default["beaten"] is None:
        return f"default {name}: not compared with the winner ({default['reason']})"
    if best["config"] == name:
        return f"winner {name} is the default: use {name}"
    if default.get("metric", "accuracy") == "accuracy":
        diff = f"{100 * default['difference']:+.1f} points"
        noise = f"noise {100 * default['noise']:.1f}" if default["noise"] is not None else default["reason"]
    else:  # a loss, in bits per byte
        diff = f"{default['difference']:+.3f} bits/byte"
        noise = f"noise {default['noise']:.3f}" if default["noise"] is not None else default["reason"]
    if default["beaten"]:
        return f"winner {best['config']} beats the default {name} by {diff} ({seeds}; {noise})"
    return (
        f"winner {best['config']} does not beat the default {name} beyond seed noise ({diff}, {seeds}; {noise}): "
        f"use {name}"
    )


def failure_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """'trial N (config): reason' for failed rows (shown under the table with --all)."""
    return [
        f"trial {row['trial']} ({row['config'] or '?'}): {row['reason']}"
        for row in rows
        if row["state"] == "FAIL"
    ]


__all__ = [
    "Column",
    "calibration_line",
    "collapse_line",
    "default_line",
    "failure_lines",
    "fit_table",
    "leaderboard_caption",
    "leaderboard_columns",
    "leaderboard_table",
    "margin_line",
    "mark_winner",
    "number",
    "rendered_lines",
    "results_columns",
    "results_table",
    "rows_that_fit",
    "winner_line",
    "wrap",
]
