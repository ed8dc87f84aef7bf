"""Issue 22, "Bad input and faults, tried by a hostile user": each case as the issue reproduced it, asserting the
exit code, the single ``error:`` line, and that nothing stored was touched."""

from __future__ import annotations

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
