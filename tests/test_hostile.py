"""Issue 22, "Bad input and faults, tried by a hostile user": each case as the issue reproduced it, asserting the
exit code, the single ``error:`` line, and that nothing stored was touched."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.test_robustness import cli, one_error_line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--n-trials", "0"], "error: --n-trials: must be >= 1, got 0"),
        (["run", "--n-trials", "abc"], "error: --n-trials: must be an integer, got abc"),
        (["leaderboard", "--top", "0"], "error: --top: must be >= 1, got 0"),
        (["confirm", "--threads", "0"], "error: --threads: must be >= 1, got 0"),
        (["run", "--bogus"], "error: No such option: --bogus; see `normsearch run --help`"),
        (["nosuch"], "error: No such command 'nosuch'; see `normsearch --help`"),
        (["space", "show"], "error: Missing argument 'FILE'; see `normsearch space show --help`"),
        (["run", "--space"], "error: Option '--space' requires an argument"),
    ],
    ids=[
        "n-trials-0",
        "n-trials-abc",
        "top-0",
        "threads-0",
        "unknown-option",
        "unknown-command",
        "missing-arg",
        "no-value",
    ],
)
def test_usage_errors_are_one_error_line_in_every_command(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """typer drew a five-line box with no ``error:`` line for these."""
    result = cli(*args, cwd=tmp_path)
    assert one_error_line(result) == message
    assert result.stderr.strip() == message and result.stdout == ""
    assert not (tmp_path / "runs").exists()


def test_a_bare_group_still_shows_its_help(tmp_path: Path) -> None:
    result = cli("space", cwd=tmp_path)
    assert "Usage: normsearch space" in result.stdout + result.stderr and "error:" not in result.stderr


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "space:\n  partition: \x07batch\n",
            "line 2, column 14: invalid YAML: character #x0007 is not allowed",
        ),
        (  # 413 bytes that expand to 9**9 values
            "space:\n  partition: batch\nprobe:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
            + "".join(f"  {c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")),
            "line 8, column 14: holds more than 20000 values, each alias counted as the value it names",
        ),
        ("a: &a [*a]\n", "line 1, column 8: alias *a inside its own anchor"),
        (
            "space:\n  groups: {choices: [" + ", ".join(["1"] * 10_000_000) + "]}\n",  # 30 MB
            "holds more than 65536 characters, the most a space file may hold",
        ),
    ],
    ids=["control-character", "alias-bomb", "recursive-alias", "30-MB-list"],
)
def test_yaml_that_cannot_be_read_or_would_take_memory_or_minutes_is_one_line(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    """The control character gave two lines (the second ``in "<unicode string>", position 9``); the alias bomb
    grew ``space validate`` past 4.6 GB; a 50 MB list ran for over 10 minutes."""
    (tmp_path / "bad.yaml").write_text(yaml_text)
    started = time.monotonic()
    result = cli("space", "validate", "bad.yaml", cwd=tmp_path)
    line = one_error_line(result)
    assert line.startswith("error: bad.yaml: ") and message in line
    assert result.stderr.strip() == line
    assert time.monotonic() - started < 20


def test_interrupting_a_command_that_stores_nothing_does_not_say_to_run_it_again(tmp_path: Path) -> None:
    """``probe`` keeps no work: after Ctrl-C, "completed work is stored: run the same command again" was wrong."""
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        result = cli(
            "probe", "bn", "ln", "gn", "--depth", "200", "--width", "32", "--seeds", "50", cwd=tmp_path
        )
    finally:
        timer.cancel()
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines() == ["error: interrupted"]
