"""``normsearch probe SPEC...``: the init-time probe scores of one or more normalizer configs."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ..data import DatasetUnavailable
from ..norm import as_config
from ..probes import ProbeResult, ProbeRunner, ProbeSettings
from ..settings import SettingsError
from ..sources import network_label
from .app import command, emit, fail, output_width, setting_option, stderr, stdout
from .tables import Column, fit_table, number

_DEFAULTS = ProbeSettings()
_SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], log: bool = False) -> str:
    """One unicode block per value, scaled from the curve's min to its max (log10 scale if ``log``)."""
    points = [math.log10(max(v, 1e-300)) if log else v for v in values]
    low, high = min(points), max(points)
    span = high - low
    if not span > 1e-12 * max(1.0, abs(high)):
        return _SPARK[0] * len(points)
    return "".join(_SPARK[min(int((p - low) / span * len(_SPARK)), len(_SPARK) - 1)] for p in points)


def _spark(name: str, log: bool) -> Callable[[ProbeResult], Text]:
    return lambda r: Text(sparkline(r.curves[name], log), style="cyan")


def _mean(name: str) -> Callable[[ProbeResult], str]:
    return lambda r: number(getattr(r, name))


def _std(name: str) -> Callable[[ProbeResult], str]:
    return lambda r: "± " + number(getattr(r, f"{name}_std"))


def results_table(results: list[ProbeResult], settings: ProbeSettings, *, width: int | None = None) -> Table:
    """Mean per score, then (as width allows) its per-depth sparkline and ± std over seeds; status; the
    spec last, wrapped, never cut. Unstable results' reasons go under the table (:func:`reasons`)."""
    title = (
        f"init-time probes: {network_label(settings.model, settings.depth, settings.width)}"
        f"{' skipinit' if settings.skipinit else ''}, batch {settings.batch_size} {settings.data}"
        f" {settings.resolution}px, {settings.seeds} seed(s) from {settings.seed}"
        f", one SGD step at lr {settings.lr:g}"
    )
    columns = []
    for name, header, curve, log in (
        ("activation_growth", "growth", "variance", True),
        ("similarity", "similarity", "similarity", False),
        ("grad_ratio", "grad\nratio", "grad_norm", True),
        ("step_loss_ratio", "step\nratio", None, False),
    ):
        columns += [Column(header, _mean(name)), Column("", _std(name), 3)]
        if curve is not None:
            columns.append(Column("", _spark(curve, log), 2, "left"))
    columns += [
        Column(
            "status",
            lambda r: Text("unstable", style="red") if r.unstable else Text("ok", style="green"),
            justify="left",
        ),
        Column("s", lambda r: f"{r.seconds:.2f}", 4),
        Column("spec", lambda r: r.spec, justify="left"),
    ]
    return fit_table(
        columns,
        results,
        width=width,
        wrapped="spec",
        title=title,
        title_justify="left",
        caption="best: growth near 0, similarity low, grad ratio near 1, step ratio low (curves over depth: ▁ low … "
        "█ high)",
        caption_justify="left",
    )


def reasons(results: list[ProbeResult]) -> list[str]:
    """'SPEC: unstable: reason' for each unstable result."""
    return [f"{r.spec}: unstable: {r.reason}" for r in results if r.unstable]


PLOT_FORMATS = ("png", "svg", "pdf")


def check_plot_path(path: Path) -> None:
    """Exit 2 with one line unless ``path`` names a PNG/SVG/PDF file in an existing folder."""
    if path.suffix.lower().lstrip(".") not in PLOT_FORMATS:
        fail(f"--plot: {path}: unknown image type {path.suffix or '(none)'!r}; allowed: .png, .svg, .pdf")
    if not path.parent.is_dir():
        fail(f"--plot: folder {path.parent} does not exist")
    if path.is_dir():
        fail(f"--plot: {path} is a folder")


def draw_curves(results: list[ProbeResult], settings: ProbeSettings, path: Path) -> None:
    """The per-depth curves of ``results`` (one line per spec) saved to ``path``."""
    from ..report.figures import Series, probe_curves  # matplotlib loads only with --plot

    title = f"init-time probes: {network_label(settings.model, settings.depth, settings.width)}, {settings.seeds} seed(s)"
    figure = probe_curves([Series(r.spec, r.curves) for r in results], title)
    try:
        figure.savefig(path, dpi=110)
    except OSError as err:
        fail(f"--plot: cannot write {path}: {err.strerror or err}")
    stderr.print(f"wrote {path}", highlight=False, markup=False)


@command("probe", epilog="Example: `normsearch probe bn ln gn:group_size=4 --seeds 3 --plot curves.png`")
def probe_command(
    specs: Annotated[list[str], typer.Argument(metavar="SPEC...", help="Norm specs, e.g. bn 'gn:groups=8'.")],
    model: str = setting_option(ProbeSettings, "model", default=_DEFAULTS.model),
    depth: int = setting_option(ProbeSettings, "depth", default=_DEFAULTS.depth),
    width: int = setting_option(ProbeSettings, "width", default=_DEFAULTS.width),
    batch_size: int = setting_option(ProbeSettings, "batch_size", default=_DEFAULTS.batch_size),
    seeds: int = setting_option(ProbeSettings, "seeds", default=_DEFAULTS.seeds),
    data: str = setting_option(ProbeSettings, "data", default=_DEFAULTS.data),
    resolution: int | None = setting_option(ProbeSettings, "resolution", default=None),
    skipinit: bool = setting_option(ProbeSettings, "skipinit", default=_DEFAULTS.skipinit),
    seed: int = setting_option(ProbeSettings, "seed", default=_DEFAULTS.seed),
    lr: float = setting_option(ProbeSettings, "lr", default=_DEFAULTS.lr),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document {settings, results}."),
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE",
            help="Also draw the probe curves over depth into FILE (.png, .svg, .pdf).",
        ),
    ] = None,
) -> None:
    """Score normalizers at init: activation growth, sample similarity, gradient ratio (Beyond BatchNorm),
    and the loss ratio after one SGD step at --lr."""
    try:
        settings = ProbeSettings(
            model=model,
            depth=depth,
            width=width,
            batch_size=batch_size,
            seeds=seeds,
            data=data,
            resolution=resolution,
            skipinit=skipinit,
            seed=seed,
            lr=lr,
        )
    except SettingsError as err:
        fail(f"--{err.path.replace('_', '-')}: {err.message}")
    note = settings.resolution_note()
    if note is not None:
        stderr.print(f"warning: {note}", highlight=False, soft_wrap=True)
    if plot is not None:
        check_plot_path(plot)
    configs = []
    for spec in specs:
        try:
            configs.append(as_config(spec))
        except ValueError as err:
            fail(str(err))
    runner = ProbeRunner(settings)
    results = []
    for i, cfg in enumerate(configs, 1):
        try:
            result = runner.run(cfg)
        except (ValueError, DatasetUnavailable) as err:
            fail(str(err))
        stderr.print(
            Text(f"probed {result.spec} ({i}/{len(configs)}) in {result.seconds:.2f} s", style="dim"),
            highlight=False,
        )
        results.append(result)
    if plot is not None:
        draw_curves(results, settings, plot)
    if json_output:
        typer.echo(
            json.dumps({"settings": dataclasses.asdict(settings), "results": [r.to_dict() for r in results]})
        )
        return
    emit(results_table(results, settings, width=output_width()))
    for line in reasons(results):
        stdout.print(line, highlight=False, markup=False, soft_wrap=True)
