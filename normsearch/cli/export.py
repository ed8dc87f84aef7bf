"""``normsearch export``: a leaderboard entry (or any ``--spec``) as a standalone PyTorch module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..candidate import as_candidate
from ..export import Provenance, default_class_name, export_source
from ..norm import NormConfig, as_config
from .app import command, fail, stderr
from .output import REPLACED, STREAMED, write_output


def _pick_row(rows: list[dict[str, Any]], study: str, rank: int | None, trial: int | None) -> dict[str, Any]:
    """The leaderboard row of ``trial``, or of ``rank`` (default 1)."""
    if trial is not None:
        found = [row for row in rows if row.get("trial") == trial]
        if not found:
            fail(f"study {study!r} has no trial {trial} on its leaderboard")
        return found[0]
    rank = 1 if rank is None else rank
    ranked = [row for row in rows if row.get("rank") is not None]
    if not ranked:
        fail(f"study {study!r} has no completed trials to export yet")
    found = [row for row in ranked if row["rank"] == rank]
    if not found:
        fail(f"--rank {rank} is out of range: study {study!r} ranks {len(ranked)} trial(s)")
    return found[0]


def _from_study(
    name: str | None, rank: int | None, trial: int | None, runs_dir: Path, storage: str | None
) -> tuple[NormConfig, Provenance]:
    # Imported here: they pull in Optuna, which ``export --spec`` does not need.
    from ..leaderboard import build_rows
    from ..storage import open_study, study_names

    try:
        study = open_study(name, runs_dir=str(runs_dir), storage=storage)
    except (KeyError, ValueError, OSError) as err:
        fail(str(err).strip().splitlines()[0] if str(err).strip() else f"cannot open study {name!r}")
    if name is None and storage is None:
        others = [other for other, _ in study_names(str(runs_dir)) if other != study.study_name]
        if others:  # as leaderboard and report do: the latest, said so
            stderr.print(
                f"export: study {study.study_name!r}, the latest of {len(others) + 1} under {runs_dir}/ "
                f"(also: {', '.join(others)}; name one as STUDY)",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    rows = build_rows(study, include_failed=trial is not None)
    row = _pick_row(rows, study.study_name, rank, trial)
    try:
        cfg = as_candidate(row["config"]).layer
    except ValueError as err:
        fail(f"study {study.study_name!r}, trial {row['trial']}: stored config is invalid: {err}")
    return cfg, Provenance.of(study, row)


@command("export", epilog="Example: `normsearch export groups --rank 1 -o my_norm.py`")
def export_command(
    study: Annotated[
        str | None,
        typer.Argument(
            metavar="STUDY",
            help="Study (default: the latest in --runs-dir, as for leaderboard and report; the only one in "
            "--storage).",
        ),
    ] = None,
    rank: Annotated[
        int | None, typer.Option("--rank", metavar="N", help="Leaderboard rank to export (default 1).")
    ] = None,
    trial: Annotated[
        int | None, typer.Option("--trial", metavar="N", help="Trial number to export instead of a rank.")
    ] = None,
    spec: Annotated[
        str | None,
        typer.Option("--spec", metavar="SPEC", help="Export this config, no study: e.g. 'gn:groups=8'."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            metavar="FILE",
            help="Write to FILE instead of stdout (replaced atomically, mode kept; a symlink's target, a device "
            "or a pipe is written to, never replaced).",
        ),
    ] = None,
    class_name: Annotated[
        str | None,
        typer.Option(
            "--class-name",
            metavar="NAME",
            help="Name of the exported class (default: from the config, e.g. GroupNorm8).",
        ),
    ] = None,
    compile_: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="Make the class's compile argument default to true: layers that run on normsearch's "
            "functional core run it through torch.compile (eager, the default, is the exact reference).",
        ),
    ] = False,
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", metavar="DIR", help="Folder of the studies' journal files.")
    ] = Path("runs"),
    storage: Annotated[
        str | None,
        typer.Option("--storage", metavar="URL|PATH", help="Optuna storage URL instead of --runs-dir."),
    ] = None,
) -> None:
    """Write a normalizer as one Python file that needs only torch: an nn.Module class (and its conv
    wrapper for weight-based schemes) computing exactly what normsearch computes for that config."""
    if rank is not None and trial is not None:
        fail("give --rank or --trial, not both")
    if rank is not None and rank < 1:
        fail(f"--rank must be at least 1, got {rank}")
    if trial is not None and trial < 0:
        fail(f"--trial must be a trial number (>= 0), got {trial}")
    if spec is not None:
        if study is not None or rank is not None or trial is not None or storage is not None:
            fail("--spec exports a config without a study: drop STUDY, --rank, --trial and --storage")
        try:
            cfg, provenance = as_config(spec), None
        except ValueError as err:
            fail(str(err))
    else:
        cfg, provenance = _from_study(study, rank, trial, runs_dir, storage)
    name = default_class_name(cfg) if class_name is None else class_name
    try:
        source = export_source(cfg, class_name=name, provenance=provenance, compile=compile_)
    except ValueError as err:
        fail(str(err))
    if output is None:
        typer.echo(source, nl=False)
        return
    try:
        done = write_output(output, source)
    except OSError as err:
        fail(f"cannot write {output}: {err.strerror or err}")
    what = {REPLACED: "replaced the existing file ", STREAMED: "sent to "}.get(done, "wrote ")
    stderr.print(f"{what}{output}: class {name}, config {cfg.spec()}", highlight=False)
