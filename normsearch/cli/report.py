"""``normsearch report [STUDY] -o DIR``: the study as an HTML page with its figures (PNG and SVG)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import command, fail, open_study_or_fail, stderr


def output_folder(path: Path, option: str = "-o") -> Path:
    """``path`` as a folder to write into (created with its parents); exit 2 with one line if it cannot be."""
    if path.exists() and not path.is_dir():
        fail(f"{option}: {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        fail(f"{option}: cannot create folder {path}: {err.strerror or err}")
    probe = path / ".normsearch-write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        fail(f"{option}: cannot write into {path}: {err.strerror or err}")
    return path


@command("report", epilog="Example: `normsearch report groups -o report/` (then open report/index.html)")
def report_command(
    study_name: Annotated[
        str | None, typer.Argument(metavar="STUDY", help="Study (default: the latest).")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="DIR",
            help="Folder for index.html and the figures (default: RUNS_DIR/STUDY/report).",
        ),
    ] = None,
    top: Annotated[
        int,
        typer.Option(
            "--top",
            min=0,
            metavar="N",
            help="Best other candidates whose probe curves are drawn next to the winner and the baselines.",
        ),
    ] = 5,
    runs_dir: Annotated[str, typer.Option("--runs-dir", metavar="DIR", help="Where studies live.")] = "runs",
    storage: Annotated[
        str | None,
        typer.Option("--storage", metavar="URL|PATH", help="Optuna storage URL or journal file path."),
    ] = None,
) -> None:
    """Write a study's report: one self-contained HTML page (figures embedded, opens offline) plus each
    figure as PNG and SVG: probe curves over depth, the Pareto front, the calibration, the training curves,
    and the winner's config, numbers and exported code."""
    from ..report import write_report  # matplotlib loads only for this command

    study = open_study_or_fail(study_name, runs_dir, storage)
    folder = output_folder(output if output is not None else Path(runs_dir) / study.study_name / "report")
    report = write_report(
        study,
        folder,
        top=top,
        progress=lambda message: stderr.print(
            f"report {study.study_name}: {message}", highlight=False, markup=False
        ),
    )
    stderr.print(
        f"wrote {report.html} ({len(report.files)} figures, PNG and SVG)", highlight=False, markup=False
    )
