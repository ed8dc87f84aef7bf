"""``normsearch --version`` and ``normsearch presets``."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from normsearch import PRESETS, __version__, parse_spec
from normsearch.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"normsearch {__version__}"


def test_presets_table_lists_every_preset_with_its_decomposition():
    result = runner.invoke(app, ["presets"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for name in PRESETS:
        row = next((line for line in lines if line.startswith(f"│ {name} ")), None)
        assert row is not None, name
        assert parse_spec(name).partition in row
    assert "Π partition" in result.stdout and "Ψ recovery" in result.stdout


def test_presets_json_round_trips_to_configs():
    result = runner.invoke(app, ["presets", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)["presets"]
    assert list(doc) == list(PRESETS)
    for name, entry in doc.items():
        assert entry["config"]["partition"] == parse_spec(name).partition
        assert entry["title"] == PRESETS[name].title
