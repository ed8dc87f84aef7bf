"""``normsearch presets``: the named layers and their Π / Φ / Ψ decomposition."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from ..norm import PRESETS, parse_spec
from ..norm.config import config_dict
from .app import app, stdout


def _pi(cfg) -> str:
    grouping = f" (G={cfg.groups})" if cfg.groups else f" (C/G={cfg.group_size})" if cfg.group_size else ""
    return cfg.partition + grouping


def _phi(cfg) -> str:
    if not cfg.normalizes_activations:
        return "-"
    parts = ["center" if cfg.center else "no center", f"÷{cfg.scale}" if cfg.scale != "none" else "no scale"]
    if cfg.running:
        parts.append(f"running (m={cfg.momentum:g})")
    return ", ".join(parts)


def _psi(cfg) -> str:
    parts = {"full": ["γ, β"], "gain": ["γ"], "none": []}[cfg.affine]
    if cfg.act != "none":
        parts.append(cfg.act)
    return ", ".join(parts) or "-"


@app.command()
def presets(json_output: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """List the named layers with their Π (partition), Φ (statistics), Ψ (recovery) and weight scheme."""
    configs = {name: parse_spec(name) for name in PRESETS}
    if json_output:
        doc = {name: {"title": p.title, "reference": p.reference, "config": config_dict(configs[name])}
               for name, p in PRESETS.items()}
        typer.echo(json.dumps({"presets": doc}, indent=2))
        return
    table = Table(title="normsearch presets", title_justify="left")
    for column in ("name", "layer", "Π partition", "Φ statistics", "Ψ recovery", "weight", "reference"):
        table.add_column(column)
    for name, preset in PRESETS.items():
        cfg = configs[name]
        table.add_row(name, preset.title, _pi(cfg), _phi(cfg), _psi(cfg), cfg.weight, preset.reference)
    stdout.print(table)
