"""Issue 22, "Bad input and faults, tried by a hostile user": each case as the issue reproduced it, asserting the
exit code, the single ``error:`` line, and that nothing stored was touched."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from normsearch.storage import JOURNAL
from tests.test_robustness import TINY, cli, one_error_line, search_tiny, tmpfs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--n-trials", "0"], "error: --n-trials: must be >= 1, got 0"),
        (["run", "--n-trials", "abc"], "error: --n-trials: must be an integer, got abc"),
        (["leaderboard", "--top", "0"], "error: --top: must be >= 1, got 0"),
        (["confirm", "--threads", "0"], "error: --threads: must be >= 1, got 0"),
        (["confirm", "--threads", "100000"], f"error: --threads: must be <= {os.cpu_count()}, got 100000"),
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
        "threads-100000",
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


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs dir with one healthy study ``tiny`` (2 probed trials) and beside it: a plain Optuna study, another
    program's JSON lines, a pointer to a PostgreSQL server that is down, a ``journal.log`` that is a folder."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "tiny.yaml").write_text(TINY)
    assert search_tiny(root / "runs", 2, cwd=root).returncode == 0
    runs = root / "runs"
    (runs / "foreign").mkdir()
    storage = JournalStorage(JournalFileBackend(str(runs / "foreign" / JOURNAL)))
    plain = optuna.create_study(study_name="foreign", storage=storage)
    plain.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    (runs / "jsonl").mkdir()
    (runs / "jsonl" / JOURNAL).write_text('{"event": "start", "t": 1}\n{"event": "stop"}\n')
    (runs / "down").mkdir()
    with socket.socket() as free:  # a port nothing listens on: the server is down
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    (runs / "down" / "storage.txt").write_text(f"postgresql://u@127.0.0.1:{port}/db\n")
    (runs / "folder" / JOURNAL).mkdir(parents=True)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["leaderboard", "foreign"],
            "study 'foreign' was not written by normsearch (it has none of its settings)",
        ),
        (["export", "foreign"], "study 'foreign' was not written by normsearch"),
        (["report", "foreign", "-o", "out"], "study 'foreign' was not written by normsearch"),
        (
            ["run", "--space", "tiny.yaml", "--study", "foreign", "--no-confirm"],
            "study 'foreign' (runs/foreign/journal.log) was not made by normsearch run (its objectives: minimize)",
        ),
        (["leaderboard", "jsonl"], "runs/jsonl/journal.log: line 1 is JSON but not an Optuna journal record"),
        (["export", "jsonl"], "line 1 is JSON but not an Optuna journal record"),
        (["report", "jsonl", "-o", "out"], "line 1 is JSON but not an Optuna journal record"),
        (["run", "--space", "tiny.yaml", "--study", "jsonl", "--no-confirm"], "not an Optuna journal record"),
        (
            ["leaderboard", "down"],
            "runs/down/storage.txt → postgresql://u@127.0.0.1:",  # the file, then the cause
        ),
        (
            ["run", "--space", "tiny.yaml", "--study", "folder", "--no-confirm"],
            "runs/folder/journal.log: is a directory, where study 'folder' keeps its journal file",
        ),
        (["runs", "--runs-dir", "missing"], "--runs-dir missing: no such directory"),
    ],
    ids=[
        "leaderboard-optuna",
        "export-optuna",
        "report-optuna",
        "run-optuna",
        "leaderboard-jsonl",
        "export-jsonl",
        "report-jsonl",
        "run-jsonl",
        "leaderboard-down",
        "run-folder",
        "runs-missing",
    ],
)
def test_studies_another_program_wrote_or_that_cannot_open_are_one_line_and_left_as_they_are(
    runs_dir: Path, args: list[str], message: str
) -> None:
    """A plain Optuna journal ended in ``unexpected KeyError`` (export, report) or ``ValueError`` (run, which
    appended a record to it); another program's JSON lines in ``unexpected KeyError: 'op_code'``; a pointer to a
    server that is down in "invalid data in the commit, e.g. exceeding max length", naming no file; a
    ``journal.log`` folder was blamed on a ``--storage`` nobody gave; ``runs --runs-dir MISSING`` exited 0."""
    before = _files(runs_dir)
    line = one_error_line(cli(*args, cwd=runs_dir))
    assert message in line, line
    assert "unexpected" not in line and "invalid data in the commit" not in line
    if args[0] == "leaderboard" and args[1] == "down":
        assert "cannot connect" in line and "Connection refused" in line
    assert _files(runs_dir) == before  # nothing appended, nothing created
    assert not (runs_dir / "out").exists()


def test_runs_skips_each_study_it_cannot_read_and_lists_the_healthy_one(runs_dir: Path) -> None:
    """With a pointer to a server that is down, ``runs`` aborted and hid every study."""
    result = cli("runs", "--json", cwd=runs_dir)
    assert result.returncode == 0, result.stderr
    assert [entry["study"] for entry in json.loads(result.stdout)["runs"]] == ["tiny"]
    skipped = sorted(line.split(":")[0] for line in result.stderr.splitlines())
    assert skipped == [f"skipped runs/{name}" for name in ("down", "foreign", "jsonl")], result.stderr


def test_an_image_folder_with_one_class_is_refused_before_any_trial(tmp_path: Path) -> None:
    """It ran, marked every candidate unstable, and still named a winner at "100.0 %"."""
    from PIL import Image

    (tmp_path / "one" / "cat").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "one" / "cat" / f"{i}.png")
    (tmp_path / "tiny.yaml").write_text(TINY)
    line = one_error_line(
        cli(
            "run",
            "--space",
            "tiny.yaml",
            "--data",
            "imagefolder:one",
            "--n-trials",
            "2",
            "--no-confirm",
            cwd=tmp_path,
        )
    )
    assert line == (
        "error: --data: dataset 'imagefolder:one': one holds one class folder (cat): a classifier needs at "
        "least 2, one folder of images per class"
    )
    assert not (tmp_path / "runs").exists()


MODELS = """
import torch.nn as nn


def not_a_module(norm_layer, num_classes):
    return "a network"


def no_norm_slot(norm_layer, num_classes):
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
"""


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("not_a_module", "model 'm.py:not_a_module': the builder returned str, not an nn.Module"),
        ("no_norm_slot", "model 'm.py:no_norm_slot' has no normalization layer built by the norm_layer"),
    ],
)
def test_a_model_no_candidate_can_be_probed_on_is_one_line_before_the_first_trial(
    tmp_path: Path, function: str, message: str
) -> None:
    """Given with ``--model``, such a builder failed every trial and the run exited 0."""
    (tmp_path / "m.py").write_text(MODELS)
    (tmp_path / "tiny.yaml").write_text(TINY)
    args = ["run", "--space", "tiny.yaml", "--model", f"m.py:{function}", "--n-trials", "2", "--no-confirm"]
    line = one_error_line(cli(*args, cwd=tmp_path))
    assert message in line and line.endswith("every candidate would fail on it, so none was probed"), line
    assert not (tmp_path / "runs").exists()


HOLDER = """
import json, os, socket, sys, time
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

study = optuna.load_study(study_name="tiny", storage=JournalStorage(JournalFileBackend(sys.argv[1])))
best = min((t for t in study.get_trials() if t.state.name == "COMPLETE"), key=lambda t: t.user_attrs["score"])
trial = study.ask()
trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
trial.set_user_attr("config", "gn:group_size=4,eps=0.000123")
trial.set_user_attr("baseline", False)
print("running", flush=True)
time.sleep(float(sys.argv[2]))
for key in ("probe", "seconds", "score", "rejected"):
    trial.set_user_attr(key, best.user_attrs[key])
study._storage.set_trial_system_attr(trial._trial_id, "constraints", best.system_attrs["constraints"])
study.tell(trial, best.values)
"""


@pytest.mark.slow
def test_confirmation_waits_for_the_trials_other_processes_are_running(tmp_path: Path) -> None:
    """Two ``run`` processes with confirmation on one journal study: the one that finished first confirmed while
    the other's last trial still ran, so what it trained depended on timing. Here the other process holds the
    study's last trial RUNNING for a few seconds and then scores it the best; the confirming process waits for
    it, and trains it among the top-k."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    assert search_tiny(tmp_path / "runs", 3, cwd=tmp_path).returncode == 0
    journal = tmp_path / "runs" / "tiny" / JOURNAL
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(journal), "6"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "running"
        result = cli("run", "--space", "tiny.yaml", "--n-trials", "4", cwd=tmp_path)  # the budget is taken
        assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 0, result.stderr
    board = json.loads(cli("leaderboard", "tiny", "--json", cwd=tmp_path).stdout)
    trained = {row["config"] for row in board["rows"] if row.get("accuracy") is not None}
    assert "gn:group_size=4,eps=0.000123" in trained, trained


def test_a_full_disk_under_report_names_the_file_it_was_writing(runs_dir: Path) -> None:
    """PIL writes the figure to an open file: its ENOSPC names no file, and the line named none either."""
    with tmpfs(runs_dir / "fs", "64k") as fs:
        line = one_error_line(cli("report", "tiny", "-o", str(fs / "report"), cwd=runs_dir))
    assert (
        line.startswith(f"error: {fs / 'report'}/") and ": No space left on device: free some space" in line
    ), line
