"""Start-up: the commands that only print what is known without torch (the version, the help, the presets)
import neither torch nor matplotlib, and the ``--help`` they show without importing the command modules is
the one typer draws with every module imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys
from normsearch.console import run
sys.argv = ["normsearch", *json.loads(sys.argv[1])]
try:
    run()
except SystemExit as exit_:
    code = exit_.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "matplotlib", "torchvision", "timm"})
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def _run(args: list[str], tmp_path: Path) -> tuple[str, dict]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"},
        timeout=120,
    )
    return done.stdout, json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--version"], ["--help"], [], ["presets"], ["presets", "--json"]])
def test_commands_that_need_no_torch_do_not_import_it(args: list[str], tmp_path: Path) -> None:
    out, result = _run(args, tmp_path)
    assert result["heavy"] == [], result
    assert result["code"] in (0, 2) and out  # no arguments: the help (exit 2, as click does)


def test_the_help_lists_every_command_without_importing_them(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from normsearch.cli import load_all
    from normsearch.cli.app import app

    lazy, _ = _run(["--help"], tmp_path)
    load_all()
    eager = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "100"}, prog_name="normsearch")
    assert lazy == eager.stdout
    assert "leaderboard" in lazy and "space" in lazy and "calibrate" in lazy
