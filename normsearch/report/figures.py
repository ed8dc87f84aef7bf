"""The report's figures as matplotlib ``Figure`` objects (no pyplot, no global state; any backend can save
them, Agg writes PNG and SVG).

- :func:`probe_curves`: per-depth probe curves of several configs: channel variance per block output (log),
  cosine similarity between samples per block output, gradient norm at each conv output (log).
- :func:`pareto_front`: the objectives the study minimises, pairwise, for every stable candidate;
  the Pareto front, the confirmed candidates and the winner marked.
- :func:`calibration`: each probe quantity (lower is better) against trained accuracy, one panel each, with
  its Spearman ρ and Kendall τ; diverged candidates at the bottom as crosses.
- :func:`training_curves`: training loss and validation accuracy per epoch for each confirmed candidate;
  each run (seed, rung, small batch) is its own line, one colour per candidate.

Every function takes plain data (leaderboard rows, curves dicts) and returns the ``Figure``; series are
labelled so tests and readers can count them.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatterSciNotation, MaxNLocator

from ..confirm.calibration import lower_is_better
from ..confirm.results import DIVERGED_ACCURACY
from ..search import OBJECTIVES

CURVES = (
    ("variance", "activation variance", "block output", True),
    ("similarity", "cosine similarity of samples", "block output", False),
    ("grad_norm", "gradient norm ‖∂L/∂z‖", "conv layer", True),
)
"""Probe curves drawn: key in the probe record's ``curves``, y label, x label, log scale."""
OBJECTIVE_LABELS = {
    "score": "score",
    "activation_growth": "activation growth per block",
    "similarity": "similarity",
    "grad_ratio": "grad ratio (first / last conv)",
    "step_loss_ratio": "step loss ratio",
}
"""Axis labels of the probe quantities (all lower is better except growth and grad ratio, best near 0 / 1)."""
LOG_SCALE = ("grad_ratio",)
PALETTE = tuple(colormaps["tab10"].colors) + tuple(colormaps["Dark2"].colors)
"""Line colours, one per candidate (the winner in black)."""


def legend_label(text: str, width: int = 42) -> str:
    """A legend label broken into lines of about ``width`` characters after commas (configs are long)."""
    lines = [""]
    for piece in re.split(r"(?<=,)", text):
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines)


@dataclass(frozen=True)
class Series:
    """One candidate's line in :func:`probe_curves`: ``label``, ``curves`` (key → values), ``role``
    ("winner", "baseline" or "candidate": drawn thick, dashed or plain)."""

    label: str
    curves: Mapping[str, Sequence[float]]
    role: str = "candidate"


class _PlainLog(LogFormatterSciNotation):
    """matplotlib's choice of which log ticks to label, written plainly (0.02, 10) instead of 2×10⁻²."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def _log(axis: Any) -> None:
    axis.set_major_formatter(_PlainLog())
    axis.set_minor_formatter(_PlainLog(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _figure(columns: int, width: float = 4.4, height: float = 3.4) -> tuple[Figure, list[Any]]:
    figure = Figure(figsize=(width * columns, height), layout="constrained")
    return figure, list(figure.subplots(1, columns, squeeze=False)[0])


def probe_curves(series: Sequence[Series], title: str) -> Figure:
    """Three panels (see the module docstring), one line per series; the winner thick, baselines dashed."""
    legend_lines = sum(legend_label(item.label).count("\n") + 1 for item in series)
    figure, axes = _figure(
        len(CURVES), height=3.4 + 0.17 * math.ceil(legend_lines / 3)
    )  # room for the legend
    styles = {
        "winner": {"linewidth": 3.0, "zorder": 3, "color": "black"},
        "baseline": {"linestyle": "--", "linewidth": 1.2},
        "candidate": {"linewidth": 1.4},
    }
    colored = [item for item in series if item.role != "winner"]
    for item in series:
        style = {
            "color": PALETTE[colored.index(item) % len(PALETTE)] if item in colored else None,
            **styles.get(item.role, styles["candidate"]),
        }
        for ax, (key, _, _, _) in zip(axes, CURVES, strict=True):
            values = list(item.curves.get(key, []))
            if values:
                ax.plot(
                    range(1, len(values) + 1),
                    values,
                    marker=".",
                    markersize=4,
                    label=legend_label(item.label),
                    **style,
                )
    for ax, (_, ylabel, xlabel, log) in zip(axes, CURVES, strict=True):
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
            _log(ax.yaxis)
        ax.grid(alpha=0.3)
    if series:
        figure.legend(
            *axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize="small"
        )
    figure.suptitle(title)
    return figure


def pareto_front(rows: Sequence[Mapping[str, Any]], title: str, winner: int | None = None) -> Figure:
    """Objective pairs of the stable rows: all candidates, the front, confirmed ones (labelled with their
    rank) and the winner (trial number ``winner``)."""
    stable = [row for row in rows if row.get("state") == "COMPLETE" and row.get("objectives")]
    pairs = list(itertools.combinations(range(len(OBJECTIVES)), 2))
    figure, axes = _figure(
        len(pairs), width=4.4 if len(pairs) > 1 else 6.0, height=3.4 if len(pairs) > 1 else 4.2
    )
    groups = (
        ("candidates", lambda r: True, {"color": "#bbbbbb", "s": 14}),
        ("Pareto front", lambda r: r.get("pareto"), {"color": "#ff7f0e", "s": 26}),
        (
            "confirmed",
            lambda r: "accuracy" in r or r.get("diverged"),
            {"facecolors": "none", "edgecolors": "black", "s": 70, "linewidths": 1.2},
        ),
        (
            "winner",
            lambda r: r["trial"] == winner,
            {"marker": "*", "color": "#d62728", "s": 220, "zorder": 4},
        ),
    )
    for ax, (i, j) in zip(axes, pairs, strict=True):
        x_name, y_name = OBJECTIVES[i], OBJECTIVES[j]
        for label, keep, style in groups:
            chosen = [row for row in stable if keep(row)]
            if chosen:
                ax.scatter(
                    [row["objectives"][x_name] for row in chosen],
                    [row["objectives"][y_name] for row in chosen],
                    label=label,
                    **style,
                )
            if label == "confirmed":
                for row in chosen:
                    ax.annotate(
                        f"#{row['rank']}",
                        (row["objectives"][x_name], row["objectives"][y_name]),
                        xytext=(5, 4),
                        textcoords="offset points",
                        fontsize="x-small",
                        color="#333",
                    )
        ax.set_xlabel(OBJECTIVE_LABELS[x_name] + " →")
        ax.set_ylabel(OBJECTIVE_LABELS[y_name] + " →")
        for name, set_scale, axis in ((x_name, ax.set_xscale, ax.xaxis), (y_name, ax.set_yscale, ax.yaxis)):
            if name in LOG_SCALE:
                set_scale("log")
                _log(axis)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small", loc="best")
    unstable = sum(row.get("state") == "UNSTABLE" for row in rows)
    figure.suptitle(
        f"{title} (lower is better on every axis" + (f"; {unstable} unstable not shown)" if unstable else ")")
    )
    return figure


def _coefficient(value: Any) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def calibration(
    rows: Sequence[Mapping[str, Any]], coefficients: Mapping[str, Any], title: str, winner: int | None = None
) -> Figure:
    """One panel per calibrated quantity: its value (lower is better) against accuracy of the confirmed rows;
    the winner (trial number ``winner``) starred."""
    quantities = [name for name in coefficients if isinstance(coefficients[name], Mapping)]
    confirmed = [row for row in rows if "accuracy" in row or row.get("diverged")]
    figure, axes = _figure(len(quantities), width=3.6)
    for ax, name in zip(axes, quantities, strict=True):
        trained = [row for row in confirmed if not row.get("diverged")]
        diverged = [row for row in confirmed if row.get("diverged")]
        ax.scatter(
            [lower_is_better(row, name) for row in trained],
            [100 * row["accuracy"] for row in trained],
            color="#1f77b4",
            label="trained",
        )
        if diverged:
            low = min([100 * row["accuracy"] for row in trained] or [0.0])
            ax.scatter(
                [lower_is_better(row, name) for row in diverged],
                [low] * len(diverged),
                marker="x",
                color="#d62728",
                label=f"diverged (ranked {DIVERGED_ACCURACY:g})",
            )
        best = [row for row in trained if row["trial"] == winner]
        if best:
            ax.scatter(
                [lower_is_better(best[0], name)],
                [100 * best[0]["accuracy"]],
                marker="*",
                s=200,
                color="#d62728",
                zorder=4,
                label="winner",
            )
        c = coefficients[name]
        ax.set_title(
            f"ρ {_coefficient(c.get('spearman'))}   τ {_coefficient(c.get('kendall'))}   n {c.get('n')}",
            fontsize="medium",
        )
        ax.set_xlabel(OBJECTIVE_LABELS.get(name, name))
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
    if axes:
        axes[0].legend(fontsize="small", loc="best")
    figure.suptitle(title)
    return figure


def runs_of(record: Mapping[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every training run inside a confirmation record: (label, run) for each nested dict with a
    ``train_loss`` list, labelled by where it sits (``seed 0``, ``small_batch / seed 1``, ``rungs 2 / seed 0``),
    so records with rungs or other nesting draw without knowing their layout."""
    if isinstance(record.get("train_loss"), list):
        yield " / ".join([*path, *([f"seed {record['seed']}"] if "seed" in record else [])]), record
        return
    for key, value in record.items():
        if isinstance(value, Mapping):
            yield from runs_of(value, (*path, str(key)))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    yield from runs_of(item, path if key == "seeds" else (*path, f"{key} {index}"))


def training_curves(candidates: Sequence[tuple[str, Mapping[str, Any]]], title: str) -> Figure:
    """Training loss and validation accuracy per epoch; one line per run, one colour per candidate
    (``candidates``: (label, confirmation record)); the first run of each candidate carries its label."""
    figure, axes = _figure(2, width=5.2)
    loss_ax, accuracy_ax = axes
    for index, (label, record) in enumerate(candidates):
        color = PALETTE[index % len(PALETTE)]
        for number, (run_label, run) in enumerate(runs_of(record)):
            style = {
                "color": color,
                "marker": ".",
                "linewidth": 1.4 if "small_batch" not in run_label else 0.8,
                "linestyle": "-" if "small_batch" not in run_label else ":",
                "label": legend_label(label) if number == 0 else "_" + f"{label} {run_label}",
            }
            loss = run.get("train_loss") or []
            accuracy = run.get("val_accuracy") or []
            loss_ax.plot(range(1, len(loss) + 1), loss, **style)
            accuracy_ax.plot(range(1, len(accuracy) + 1), [100 * a for a in accuracy], **style)
    loss_ax.set_ylabel("training loss (mean per epoch)")
    loss_ax.set_yscale("log")
    _log(loss_ax.yaxis)
    accuracy_ax.set_ylabel("validation accuracy (%)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if candidates:
        figure.legend(*loss_ax.get_legend_handles_labels(), loc="outside right upper", fontsize="small")
    figure.suptitle(title)
    return figure


__all__ = ["CURVES", "Series", "calibration", "pareto_front", "probe_curves", "runs_of", "training_curves"]
