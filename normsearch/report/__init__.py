"""``normsearch report``: a study as one self-contained HTML page plus its figures as PNG and SVG.

:func:`write_report` reads the study (leaderboard rows, the probe records' per-depth curves, confirmation
records, calibration), draws the figures of :mod:`.figures`, saves each as ``NAME.png`` and ``NAME.svg`` in
the output folder, and writes ``index.html`` (:mod:`.page`), which embeds the PNGs as data URIs (it opens
offline, alone) and links the files, and ``winner.py``, the winner's exported module. A figure whose data
the study lacks (no confirmation yet: no calibration, no training curves) is left out and the page says why.

The winner is the row flagged ``winner``, else rank 1. Probe curves drawn: the winner, every baseline, and
the ``top`` best other stable candidates (identical curves as one line); training curves: every run of the
current confirmation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from matplotlib.figure import Figure
from optuna.trial import TrialState

from ..candidate import as_candidate
from ..confirm.calibration import QUANTITIES, calibrate
from ..confirm.results import arm_at
from ..confirm.units import companion, unit_trials
from ..export import Provenance, default_class_name, export_source
from ..leaderboard import build_rows, document
from . import figures
from .page import page

FORMATS = ("png", "svg")


@dataclass
class Report:
    """What :func:`write_report` made: figure name → {format: path}, the page, the winner's code, notes on
    figures left out, and the ``Figure`` objects (for inspection before they are closed)."""

    directory: Path
    files: dict[str, dict[str, Path]] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    html: Path | None = None
    code: Path | None = None


def winner(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row flagged ``winner``, else the first ranked stable row, else None."""
    flagged = [row for row in rows if row.get("winner")]
    stable = [row for row in rows if row.get("state") == "COMPLETE"]
    return (flagged or stable or [None])[0]


def _probe_records(study: optuna.Study) -> dict[int, dict[str, Any]]:
    return {
        t.number: t.user_attrs.get("probe", {})
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }


def _curve_series(
    rows: list[dict[str, Any]], best: dict[str, Any] | None, probes: dict[int, dict[str, Any]], top: int
) -> list[figures.Series]:
    """The winner, every baseline and the ``top`` best other stable rows, each labelled ``#rank spec``
    (the config's spec string, as everywhere in the report)."""
    chosen: list[tuple[dict[str, Any], str]] = [(best, "winner")] if best else []
    chosen += [(row, "baseline") for row in rows if row.get("baseline") and row is not best]
    others = [
        row for row in rows if row.get("state") == "COMPLETE" and not row.get("baseline") and row is not best
    ]
    chosen += [(row, "candidate") for row in others[:top]]
    series = []
    for row, role in chosen:
        curves = probes.get(row["trial"], {}).get("curves")
        if curves:
            label = f"#{row['rank']} {row['config']}" + (" (winner)" if role == "winner" else "")
            series.append(figures.Series(label, curves, role))
    return series


def _runs(study: optuna.Study, rows: list[dict[str, Any]]) -> list[figures.Run]:
    """Every training run of the study's current confirmation (each unit: rung, learning rate, seed, small
    batch), by rank, then learning rate (highest first), epochs and seed; a study confirmed before the work
    units gives the runs its records kept."""
    rank = {row["config"]: row["rank"] for row in rows}
    queue = companion(study, create=False)
    if queue is not None and "training" in queue.user_attrs:
        units = [t.user_attrs for t in unit_trials(queue, queue.user_attrs["training"])]
        found = [
            (unit["config"], unit["lr"], unit["epochs"], unit["seed"], unit.get("batch_size"), unit["run"])
            for unit in units
        ]
    else:
        found = [
            (row["config"], row.get("lr"), row.get("budget"), run.get("seed", 0), None, run)
            for row in rows
            if isinstance(row.get("confirm"), dict)
            for run in row["confirm"].get("seeds", [])
            if isinstance(run.get("train_loss"), list)
        ]
    found.sort(key=lambda f: (rank.get(f[0], len(rank) + 1), -(f[1] or 0.0), f[2] or 0, f[3], f[4] or 0))
    return [
        figures.Run(
            label=f"#{rank.get(config, '?')} {config}",
            lr=lr or 0.0,
            seed=seed,
            epochs=epochs or len(run["train_loss"]),
            batch_size=batch,
            train_loss=run["train_loss"],
            val_accuracy=run.get("val_accuracy") or [],
            flag="diverged" if run.get("diverged") else "collapsed" if run.get("collapsed") else None,
        )
        for config, lr, epochs, seed, batch, run in found
    ]


def _calibration(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The probes' calibration ({quantity: {spearman, kendall, n}} at its ``budget``; empty before any
    confirmation) and the rows it rests on, with ``accuracy`` / ``diverged`` of their arm at that budget."""
    records = {row["trial"]: row["confirm"] for row in rows if isinstance(row.get("confirm"), dict)}
    cal = calibrate(rows, records) if records else {"budget": None}
    budget = cal["budget"]
    if budget is None:
        return {}, []
    at_budget = []
    for row in rows:
        arm = arm_at(records[row["trial"]], budget) if row["trial"] in records else None
        if arm is not None:
            at_budget.append({**row, "accuracy": arm["accuracy"], "diverged": arm["diverged"]})
    return {"budget": budget, **{name: cal[name] for name in QUANTITIES}}, at_budget


def write_report(
    study: optuna.Study,
    directory: Path,
    *,
    top: int = 5,
    progress: Callable[[str], None] = lambda message: None,
) -> Report:
    """Draw and write the report of ``study`` into ``directory`` (created if missing); see the module
    docstring. ``progress(message)`` is called before each step."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = build_rows(study)
    best = winner(rows)
    cal, calibrated = _calibration(rows)
    name = study.study_name
    report = Report(directory)
    training = _runs(study, rows)
    none_yet = "no completed trials"
    plan: list[tuple[str, str, str | None, Callable[[], Figure]]] = [
        (
            "probe_curves",
            "probe curves over depth",
            None if rows else none_yet,
            lambda: figures.probe_curves(
                _curve_series(rows, best, _probe_records(study), top), f"{name}: probe curves at init"
            ),
        ),
        (
            "pareto_front",
            "Pareto front",
            None if rows else none_yet,
            lambda: figures.pareto_front(rows, f"{name}: objectives", best["trial"] if best else None),
        ),
        (
            "calibration",
            "calibration",
            None if cal else "not confirmed yet (normsearch confirm trains the candidates)",
            lambda: figures.calibration(
                calibrated,
                {key: value for key, value in cal.items() if key != "budget"},
                f"{name}: probe quantities vs trained accuracy at {cal['budget']} epoch(s)",
                best["trial"] if best else None,
            ),
        ),
        (
            "training_curves",
            "training curves",
            None if training else "no training records (not confirmed yet)",
            lambda: figures.training_curves(training, f"{name}: confirmation training"),
        ),
    ]
    for index, (key, title, missing, draw) in enumerate(plan, 1):
        if missing is not None:
            progress(f"no {title}: {missing}")
            report.missing[key] = missing
            continue
        progress(f"drawing {title} ({index}/{len(plan)})")
        figure = report.figures[key] = draw()
        report.files[key] = {}
        for fmt in FORMATS:
            report.files[key][fmt] = directory / f"{key}.{fmt}"
            figure.savefig(report.files[key][fmt], format=fmt, dpi=110)
    code = None
    if best is not None:
        progress("exporting the winner's code")
        cfg = as_candidate(best["config"]).layer
        code = export_source(cfg, class_name=default_class_name(cfg), provenance=Provenance.of(study, best))
        report.code = directory / "winner.py"
        report.code.write_text(code, encoding="utf-8")
    progress("writing index.html")
    report.html = directory / "index.html"
    report.html.write_text(page(study, document(study, rows), best, report, code, cal), encoding="utf-8")
    return report


__all__ = ["FORMATS", "Report", "winner", "write_report"]
