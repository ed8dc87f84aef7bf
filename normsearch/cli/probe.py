"""``normsearch probe SPEC...``: the init-time probe scores of one or more normalizer configs."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ..data import DatasetUnavailable
from ..norm import as_config
from ..probes import ProbeResult, ProbeRunner, ProbeSettings
from ..settings import SettingsError
from .app import app, fail, stderr, stdout

_DEFAULTS = ProbeSettings()
_HELP = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(ProbeSettings)}
_SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], log: bool = False) -> str:
    """One unicode block per value, scaled from the curve's min to its max (log10 scale if ``log``)."""
    points = [math.log10(max(v, 1e-300)) if log else v for v in values]
    low, high = min(points), max(points)
    span = high - low
    if not span > 1e-12 * max(1.0, abs(high)):
        return _SPARK[0] * len(points)
    return "".join(_SPARK[min(int((p - low) / span * len(_SPARK)), len(_SPARK) - 1)] for p in points)


def _cell(mean: float, std: float, curve: list[float], log: bool) -> Text:
    text = Text(f"{mean:.4g} ± {std:.2g} ")
    text.append(sparkline(curve, log), style="cyan")
    return text


def results_table(results: list[ProbeResult], settings: ProbeSettings) -> Table:
    """Rows of mean ± std per score with a per-depth sparkline of the curve behind it."""
    title = (
        f"init-time probes: {settings.model}-{settings.depth} width {settings.width}"
        f"{' skipinit' if settings.skipinit else ''}, batch {settings.batch_size} {settings.data}"
        f" {settings.resolution}px, {settings.seeds} seed(s) from {settings.seed}"
        f", one SGD step at lr {settings.lr:g} (best: growth near 0, similarity low, grad ratio near 1, step"
        " ratio low)"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("spec")
    table.add_column("activation growth (ln var/block) · variance")
    table.add_column("similarity · per block")
    table.add_column("grad ratio first/last · per conv")
    table.add_column("step loss ratio")
    table.add_column("status")
    table.add_column("s", justify="right")
    for r in results:
        table.add_row(
            r.spec,
            _cell(r.activation_growth, r.activation_growth_std, r.curves["variance"], log=True),
            _cell(r.similarity, r.similarity_std, r.curves["similarity"], log=False),
            _cell(r.grad_ratio, r.grad_ratio_std, r.curves["grad_norm"], log=True),
            f"{r.step_loss_ratio:.4g} ± {r.step_loss_ratio_std:.2g}",
            Text(f"unstable: {r.reason}", style="red") if r.unstable else Text("ok", style="green"),
            f"{r.seconds:.2f}",
        )
    return table


@app.command("probe")
def probe_command(
    specs: Annotated[list[str], typer.Argument(metavar="SPEC...", help="Norm specs, e.g. bn 'gn:groups=8'.")],
    model: str = typer.Option(_DEFAULTS.model, help=_HELP["model"]),
    depth: int = typer.Option(_DEFAULTS.depth, help=_HELP["depth"]),
    width: int = typer.Option(_DEFAULTS.width, help=_HELP["width"]),
    batch_size: int = typer.Option(_DEFAULTS.batch_size, help=_HELP["batch_size"]),
    seeds: int = typer.Option(_DEFAULTS.seeds, help=_HELP["seeds"]),
    data: str = typer.Option(_DEFAULTS.data, help=_HELP["data"]),
    resolution: int = typer.Option(_DEFAULTS.resolution, help=_HELP["resolution"]),
    skipinit: bool = typer.Option(_DEFAULTS.skipinit, "--skipinit", help=_HELP["skipinit"]),
    seed: int = typer.Option(_DEFAULTS.seed, help=_HELP["seed"]),
    lr: float = typer.Option(_DEFAULTS.lr, help=_HELP["lr"]),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document {settings, results}."),
) -> None:
    """Score normalizers at init: activation growth, sample similarity, gradient ratio (Beyond BatchNorm),
    and the loss ratio after one SGD step at --lr."""
    try:
        settings = ProbeSettings(
            model=model, depth=depth, width=width, batch_size=batch_size, seeds=seeds, data=data,
            resolution=resolution, skipinit=skipinit, seed=seed, lr=lr,
        )
    except SettingsError as err:
        fail(f"--{err.path.replace('_', '-')}: {err.message}")
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
        stderr.print(f"[dim]probed {result.spec} ({i}/{len(configs)}) in {result.seconds:.2f} s[/]", highlight=False)
        results.append(result)
    if json_output:
        typer.echo(json.dumps({"settings": dataclasses.asdict(settings), "results": [r.to_dict() for r in results]}))
        return
    stdout.print(results_table(results, settings))
