"""``normsearch presets``: the named layers and their Π / Φ / Ψ decomposition."""

from __future__ import annotations

import json

import typer
from rich import box

from ..norm import PRESETS, parse_spec
from ..norm.config import config_dict
from .app import command, emit, output_width
from .tables import Column, fit_table


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


@command(epilog="Example: `normsearch presets --json`")
def presets(
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """List the named layers with their Π (partition), Φ (statistics), Ψ (recovery) and weight scheme."""
    configs = {name: parse_spec(name) for name in PRESETS}
    if json_output:
        doc = {
            name: {"title": p.title, "reference": p.reference, "config": config_dict(configs[name])}
            for name, p in PRESETS.items()
        }
        typer.echo(json.dumps({"presets": doc}, indent=2))
        return
    columns = [
        Column("name", lambda r: r["name"], justify="left"),
        Column("layer", lambda r: r["preset"].title, justify="left", wraps=True),
        Column("Π partition", lambda r: _pi(r["cfg"]), justify="left", wraps=True),
        Column("Φ statistics", lambda r: _phi(r["cfg"]), justify="left", wraps=True),
        Column("Ψ recovery", lambda r: _psi(r["cfg"]), 1, "left", wraps=True),
        Column("weight", lambda r: r["cfg"].weight, 2, "left"),
        Column("reference", lambda r: r["preset"].reference, 3, "left", wraps=True),
    ]
    rows = [{"name": name, "preset": preset, "cfg": configs[name]} for name, preset in PRESETS.items()]
    emit(
        fit_table(
            columns,
            rows,
            width=output_width(),
            title="normsearch presets",
            title_justify="left",
            box=box.SQUARE,
            padding=(0, 1),
            show_edge=True,
        )
    )
