"""The report's figures as matplotlib ``Figure`` objects (no pyplot, no global state; any backend can save
them, Agg writes PNG and SVG).

- :func:`probe_curves`: per-depth probe curves of several configs: channel variance per block output (log),
  cosine similarity between samples per block output, gradient norm at each conv output (log).
- :func:`pareto_front`: the objectives the study minimises, pairwise, for every stable candidate;
  the Pareto front, the confirmed candidates and the winner marked.
- :func:`calibration`: each probe quantity (lower is better) against trained accuracy, one panel each, with
  its Spearman ρ and Kendall τ; diverged candidates at the bottom as crosses.
- :func:`training_curves`: training loss and validation accuracy per epoch of every confirmation run
  (each rung, learning rate, seed and small batch its own line), one colour per candidate, one line style
  per learning rate.

Every function takes plain data (leaderboard rows, curves dicts) and returns the ``Figure``; series are
labelled so tests and readers can count them.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

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


def _log(ax: Any, which: str = "y") -> None:
    """A log scale on ``which`` axis of ``ax`` (after its data are drawn) with plain labels (0.02, 10) spread
    over the whole view: 1-9 × each decade below one decade of range, 1, 2, 5 × each decade up to three,
    the decades beyond; minor ticks unlabelled."""
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis = ax.yaxis if which == "y" else ax.xaxis
    low, high = sorted(ax.get_ylim() if which == "y" else ax.get_xlim())
    decades = math.log10(high / low) if low > 0 and high > low else 1.0
    subs = tuple(range(1, 10)) if decades < 1 else (1, 2, 5) if decades <= 3 else (1,)
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=30))
    axis.set_major_formatter(FuncFormatter(lambda x, pos: f"{x:g}"))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10)), numticks=30))
    axis.set_minor_formatter(NullFormatter())


def _figure(
    panels: int, width: float = 4.4, height: float = 3.4, columns: int | None = None
) -> tuple[Figure, list[Any]]:
    """A figure of ``panels`` axes of ``width`` × ``height`` inches, in rows of ``columns`` (default: one
    row); the unused cells of the last row are left empty."""
    columns = panels if columns is None else max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for ax in axes[panels:]:
        figure.delaxes(ax)
    return figure, axes[:panels]


ROLE_ORDER = ("winner", "baseline", "candidate")


def merge_identical(series: Sequence[Series]) -> list[Series]:
    """Series whose curves are equal (configs that tie at initialisation, e.g. affine variants) as one, its
    label naming them all (comma-separated, in order) and its role the first of winner, baseline,
    candidate among them; in order of first appearance."""
    groups: dict[tuple, list[Series]] = {}
    for item in series:
        key = tuple((name, tuple(item.curves.get(name, ()))) for name, *_ in CURVES)
        groups.setdefault(key, []).append(item)
    return [
        Series(
            ", ".join(item.label for item in group),
            group[0].curves,
            min((item.role for item in group), key=ROLE_ORDER.index),
        )
        for group in groups.values()
    ]


def probe_curves(series: Sequence[Series], title: str) -> Figure:
    """Three panels (see the module docstring), one line per distinct series (:func:`merge_identical`: one
    legend entry names every config drawn by that line); the winner thick, baselines dashed."""
    series = merge_identical(series)
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
            _log(ax)
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
                _rank_labels(
                    ax, [(row["objectives"][x_name], row["objectives"][y_name], row) for row in chosen]
                )
        ax.set_xlabel(OBJECTIVE_LABELS[x_name] + " →")
        ax.set_ylabel(OBJECTIVE_LABELS[y_name] + " →")
        for name, which in ((x_name, "x"), (y_name, "y")):
            if name in LOG_SCALE:
                _log(ax, which)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small", loc="best")
    unstable = sum(row.get("state") == "UNSTABLE" for row in rows)
    figure.suptitle(
        f"{title} (lower is better on every axis" + (f"; {unstable} unstable not shown)" if unstable else ")")
    )
    return figure


LABEL_POINTS = 7.0
"""Font size of the rank labels (points)."""
MARKER_POINTS = 4.5
"""Half the width of a confirmed candidate's ring (points): labels keep off the rings."""
LABEL_OFFSETS = (
    (5, 4, "left"),
    (5, -11, "left"),
    (-5, 4, "right"),
    (-5, -11, "right"),
    (0, 9, "center"),
    (0, -17, "center"),
    (12, -3, "left"),
    (-12, -3, "right"),
)
"""Where a rank label may sit relative to its point (offset in points, horizontal alignment), by preference."""


Box = tuple[float, float, float, float]
"""A label's extent in pixels: left, bottom, right, top."""


def _box(
    at: Sequence[float], offset: tuple[float, float, str], width: float, height: float, scale: float
) -> Box:
    dx, dy, align = offset
    left = at[0] + dx * scale - {"left": 0.0, "right": width, "center": width / 2}[align]
    bottom = at[1] + dy * scale
    return left, bottom, left + width, bottom + height


def _overlap(box: Box, placed: Sequence[Box]) -> float:
    """The area ``box`` shares with the boxes ``placed``."""
    return sum(
        max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
        * max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
        for other in placed
    )


def _rank_labels(ax: Any, points: Sequence[tuple[float, float, Mapping[str, Any]]]) -> None:
    """Label each point (x, y, row) with its row's rank (``#3``) so that no two labels overlap: points
    closer than a label's height share one label (``#3 #11 #12``, ranks ascending), and each label takes
    the first offset of :data:`LABEL_OFFSETS` that overlaps no ring and no label placed before (the least
    overlapping one if none is free). Distances are measured in the laid-out figure's pixels."""
    figure = ax.get_figure()
    figure.draw_without_rendering()
    scale = figure.dpi / 72
    height = 1.25 * LABEL_POINTS * scale
    clusters: list[tuple[Sequence[float], tuple[float, float], list[int]]] = []
    for x, y, row in sorted(points, key=lambda point: point[2]["rank"]):
        at = ax.transData.transform((x, y))
        near = [cluster for cluster in clusters if math.dist(cluster[0], at) < height]
        if near:
            near[0][2].append(row["rank"])
        else:
            clusters.append((at, (x, y), [row["rank"]]))
    marker = MARKER_POINTS * scale
    placed: list[Box] = [  # the rings themselves: a label next to its point, not over another
        (at[0] - marker, at[1] - marker, at[0] + marker, at[1] + marker)
        for at in (ax.transData.transform((x, y)) for x, y, _ in points)
    ]
    for at, xy, ranks in clusters:
        text = " ".join(f"#{rank}" for rank in ranks)
        width = 0.62 * LABEL_POINTS * scale * len(text)
        boxes = [(_box(at, offset, width, height, scale), offset) for offset in LABEL_OFFSETS]
        box, offset = min(boxes, key=lambda item: (_overlap(item[0], placed) > 0, _overlap(item[0], placed)))
        placed.append(box)
        ax.annotate(
            text,
            xy,
            xytext=offset[:2],
            textcoords="offset points",
            ha=offset[2],
            fontsize=LABEL_POINTS,
            color="#333",
        )


def _coefficient(value: Any) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def calibration(
    rows: Sequence[Mapping[str, Any]], coefficients: Mapping[str, Any], title: str, winner: int | None = None
) -> Figure:
    """One panel per calibrated quantity, three to a row: its value (lower is better) against accuracy of
    the confirmed rows; the winner (trial number ``winner``) starred."""
    quantities = [name for name in coefficients if isinstance(coefficients[name], Mapping)]
    confirmed = [row for row in rows if "accuracy" in row or row.get("diverged")]
    figure, axes = _figure(len(quantities), width=3.9, height=3.1, columns=3)
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


@dataclass(frozen=True)
class Run:
    """One confirmation training run: its candidate's ``label`` (``#1 gn:group_size=2``), learning rate,
    seed, epochs, small-batch size (None: the settings' batch), per-epoch ``train_loss`` and
    ``val_accuracy`` (0-1), and ``flag`` ("collapsed", "diverged" or None)."""

    label: str
    lr: float
    seed: int
    epochs: int
    batch_size: int | None
    train_loss: Sequence[float]
    val_accuracy: Sequence[float]
    flag: str | None = None


LR_STYLES = ("-", "--", ":", "-.")
"""Line style of each learning rate, highest first."""


def training_curves(runs: Sequence[Run], title: str) -> Figure:
    """Training loss and validation accuracy per epoch, one line per run (every rung, learning rate, seed
    and small-batch retrain): one colour per candidate (in the order of ``runs``), one line style per
    learning rate (highest solid), small-batch runs thin; a collapsed or diverged run ends in a cross. A
    one-epoch run is a point. Each line's label names its run (``#1 gn:group_size=2 lr 0.1 seed 0``,
    hidden from the legend, which lists the candidates, the learning rates and the cross)."""
    figure, axes = _figure(2, width=5.2)
    loss_ax, accuracy_ax = axes
    labels = list(dict.fromkeys(run.label for run in runs))
    lrs = sorted({run.lr for run in runs}, reverse=True)
    for run in runs:
        color = PALETTE[labels.index(run.label) % len(PALETTE)]
        batch = f" batch {run.batch_size}" if run.batch_size else ""
        style = {
            "color": color,
            "marker": ".",
            "linewidth": 0.8 if run.batch_size else 1.4,
            "linestyle": LR_STYLES[lrs.index(run.lr) % len(LR_STYLES)],
            "label": f"_{run.label} lr {run.lr:g} seed {run.seed}{batch}",
        }
        for ax, values in ((loss_ax, run.train_loss), (accuracy_ax, [100 * a for a in run.val_accuracy])):
            ax.plot(range(1, len(values) + 1), values, **style)
            if run.flag and values:
                ax.plot([len(values)], [values[-1]], marker="x", markersize=8, color=color, linestyle="none")
    loss_ax.set_ylabel("training loss (mean per epoch)")
    _log(loss_ax)
    accuracy_ax.set_ylabel("validation accuracy (%)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles = [
        *(
            Line2D([], [], color=PALETTE[i % len(PALETTE)], marker=".", label=legend_label(label))
            for i, label in enumerate(labels)
        ),
        *(
            Line2D([], [], color="black", linestyle=LR_STYLES[i % len(LR_STYLES)], label=f"lr {lr:g}")
            for i, lr in enumerate(lrs)
        ),
    ]
    if any(run.flag for run in runs):
        handles.append(
            Line2D([], [], color="black", marker="x", linestyle="none", label="collapsed / diverged")
        )
    if any(run.batch_size for run in runs):
        handles.append(Line2D([], [], color="black", linewidth=0.8, label="small-batch retrain"))
    if runs:
        figure.legend(handles=handles, loc="outside right upper", fontsize="small")
    figure.suptitle(f"{title} ({len(runs)} runs)")
    return figure


__all__ = [
    "CURVES",
    "Run",
    "Series",
    "calibration",
    "merge_identical",
    "pareto_front",
    "probe_curves",
    "training_curves",
]
