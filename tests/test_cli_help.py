"""The CLI's help renders cleanly (reflowed paragraphs, no raw markup, metavars, choices in full, an example
per command, completion on) and `run` / `space list|show|validate` speak JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from normsearch.cli import app
from normsearch.confirm.settings import AUGMENTS
from normsearch.space import load_space

runner = CliRunner()


def _commands() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):  # a group (typer's own click): its modules import on lookup
            for name in command.list_commands(None):
                walk(command.get_command(None, name), [*path, name])
        else:
            paths.append(path)

    walk(root, [])
    return paths


COMMANDS = _commands()


def test_every_command_is_found() -> None:
    assert {"run", "report", "leaderboard", "probe", "confirm", "export"} <= {p[0] for p in COMMANDS}
    assert ["space", "show"] in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("width", [80, 100])
def test_help_is_clean_with_an_example_and_metavars(path: list[str], width: int) -> None:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "``" not in out and "…" not in out and "[[" not in out
    assert "Example:" in out
    for line in out.splitlines():  # option rows, --help included (typer draws an argument's type itself)
        if re.match(r"\s*│\s*(\*\s*)?-", line):
            assert not re.search(r"<(bool|str|int|float|path)>", line), line


def test_paragraphs_reflow_instead_of_keeping_source_line_breaks() -> None:
    out = runner.invoke(app, ["export", "--help"], env={"COLUMNS": "300"}).stdout
    assert "nn.Module class (and its conv wrapper for weight-based schemes) computing exactly" in out
    out = runner.invoke(app, ["confirm", "--help"], env={"COLUMNS": "300"}).stdout
    assert "overridden by the flags. Runs already stored for the same training settings are reused" in out


def test_choices_are_listed_in_full_at_80_columns() -> None:
    out = runner.invoke(app, ["confirm", "--help"], env={"COLUMNS": "80"}).stdout
    text = " ".join(out.replace("│", " ").split())  # the help column's wrapped lines joined
    assert (
        "--augment AUGMENT flip: random horizontal flips; auto: flip for CIFAR, else none; one of: "
        + ", ".join(AUGMENTS)
        in text
    )


def test_shell_completion_is_offered() -> None:
    out = runner.invoke(app, ["--help"], env={"COLUMNS": "100"}).stdout
    assert "--install-completion" in out and "--show-completion" in out
    assert "<bool>" not in out  # typer's own flags get no type column either


def test_space_commands_json() -> None:
    listed = json.loads(runner.invoke(app, ["space", "list", "--json"]).stdout)
    names = [entry["name"] for entry in listed["spaces"]]
    assert {"groups", "classic", "full"} <= set(names)
    groups = next(entry for entry in listed["spaces"] if entry["name"] == "groups")
    assert groups["size"] == {"finite": True, "points": 84, "valid": 84, "text": "84 valid configs"}
    shown = json.loads(runner.invoke(app, ["space", "show", "classic", "--json"]).stdout)
    assert shown["name"] == "classic" and shown["size"]["valid"] == 13
    assert shown["params"][0]["option"] == "preset" and set(shown["baselines_inside"]) >= {
        "bn",
        "ln",
        "in",
        "gn",
    }
    assert shown["probe"]["depth"] == load_space("classic").probe.depth and "top_k" in shown["confirm"]
    full = json.loads(runner.invoke(app, ["space", "validate", "full", "--json"]).stdout)
    assert full["valid"] is True and full["size"]["finite"] is False and full["size"]["points"] is None
    bad = runner.invoke(app, ["space", "validate", "nosuch.yaml", "--json"])
    assert bad.exit_code == 2 and bad.stdout == "" and bad.stderr.startswith("error:")


@pytest.mark.usefixtures("one_thread")
def test_run_json_is_one_document_on_stdout_with_progress_on_stderr(tmp_path: Path) -> None:
    space = tmp_path / "s.yaml"
    space.write_text(
        "space:\n  preset: {choices: [bn, ln, in]}\n"
        "probe: {depth: 8, width: 8, batch_size: 8, seeds: 1, resolution: 8}\n"
        "search: {n_trials: 3, sampler: brute_force}\n"
    )
    result = runner.invoke(
        app,
        [
            "run",
            "--space",
            str(space),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--no-confirm",
            "--json",
            "--top",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # exactly one document: json.loads refuses trailing text
    assert doc["study"] == "s" and len(doc["rows"]) == 2 and doc["trials"]["complete"] == 3
    assert "baselines enqueued" in result.stderr and "complete" in result.stderr
