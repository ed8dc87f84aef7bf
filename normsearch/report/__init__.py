"""``normsearch report``: a study as one self-contained HTML page plus its figures as PNG and SVG.

:func:`write_report` reads the study (leaderboard rows, the probe records' per-depth curves, confirmation
records, calibration), draws the figures of :mod:`.figures`, saves each as ``NAME.png`` and ``NAME.svg`` in
the output folder, and writes ``index.html`` (:mod:`.page`), which embeds the PNGs as data URIs (it opens
offline, alone) and links the files, and ``winner.py``, the winner's exported module. A figure whose data
the study lacks (no confirmation yet: no calibration, no training curves) is left out and the page says why.

The winner is the row flagged ``winner``, else rank 1. Curves drawn: the winner, every baseline, and the
``top`` best other stable candidates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from matplotlib.figure import Figure
from optuna.trial import TrialState

from ..confirm import store
from ..export import Provenance, default_class_name, export_source
from ..leaderboard import build_rows, document
from ..norm import as_config
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
            name = row.get("baseline_name") if role == "baseline" else None
            label = f"#{row['rank']} {name or row['config']}" + (" (winner)" if role == "winner" else "")
            series.append(figures.Series(label, curves, role))
    return series


def _training(rows: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"#{row['rank']} {row['config']}", row["confirm"])
        for row in rows
        if isinstance(row.get("confirm"), dict) and any(True for _ in figures.runs_of(row["confirm"]))
    ]


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
    stored = store.calibration(study)
    cal = stored if isinstance(stored, dict) else {}
    name = study.study_name
    report = Report(directory)
    drawings: list[tuple[str, str, Callable[[], Figure | None], str]] = [
        (
            "probe_curves",
            "probe curves over depth",
            lambda: (
                figures.probe_curves(
                    _curve_series(rows, best, _probe_records(study), top), f"{name}: probe curves at init"
                )
                if rows
                else None
            ),
            "no completed trials",
        ),
        (
            "pareto_front",
            "Pareto front",
            lambda: (
                figures.pareto_front(rows, f"{name}: objectives", best["trial"] if best else None)
                if rows
                else None
            ),
            "no completed trials",
        ),
        (
            "calibration",
            "calibration",
            lambda: (
                figures.calibration(
                    rows, cal, f"{name}: probe quantities (lower is better) vs trained accuracy"
                )
                if cal
                else None
            ),
            "not confirmed yet (normsearch confirm trains the candidates)",
        ),
        (
            "training_curves",
            "training curves",
            lambda: (
                figures.training_curves(_training(rows), f"{name}: confirmation training")
                if _training(rows)
                else None
            ),
            "no training records (not confirmed yet)",
        ),
    ]
    for index, (key, title, draw, why) in enumerate(drawings, 1):
        progress(f"drawing {title} ({index}/{len(drawings)})")
        figure = draw()
        if figure is None:
            report.missing[key] = why
            continue
        report.figures[key] = figure
        report.files[key] = {}
        for fmt in FORMATS:
            path = directory / f"{key}.{fmt}"
            figure.savefig(path, format=fmt, dpi=110)
            report.files[key][fmt] = path
    code = None
    if best is not None:
        progress("exporting the winner's code")
        cfg = as_config(best["config"])
        code = export_source(
            cfg, class_name=default_class_name(cfg), provenance=Provenance.from_row(name, best)
        )
        report.code = directory / "winner.py"
        report.code.write_text(code, encoding="utf-8")
    progress("writing index.html")
    report.html = directory / "index.html"
    report.html.write_text(page(study, document(study, rows), best, report, code, cal), encoding="utf-8")
    return report


__all__ = ["FORMATS", "Report", "winner", "write_report"]
