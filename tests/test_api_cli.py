"""A study made through the Python API with an in-memory model and datasets, read by the CLI in another process:
everything stored shows (leaderboard, runs, export, report); only training more, which needs the objects,
is refused in one line that names the fix. ``normsearch.run`` shows the CLI's progress on stderr unless
``progress=False``; a study of the same name probed otherwise is refused naming ``study=``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

import normsearch
from normsearch.confirm.units import companion
from normsearch.data import digits_tensors
from normsearch.search import IncompatibleStudy

SPACE = """
space:
  partition: {choices: [batch, layer, instance]}
probe: {batch_size: 16, seeds: 1}
search: {n_trials: 3, sampler: brute_force, seed: 0, baselines: false}
"""
CONFIRM = {"top_k": 1, "explore": 0, "baselines": False, "epochs": 1, "steps": 2, "lr_factors": [1.0]}
ROOT = Path(__file__).resolve().parents[1]


def _net(norm_layer, num_classes: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        norm_layer(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, num_classes),
    )


def in_memory_net(norm_layer, num_classes: int) -> torch.nn.Module:
    """A builder another process cannot import by name: a closure, registered as ``python:…``."""
    return _net(norm_layer, num_classes)


in_memory_net.__qualname__ = "api.<locals>.net"  # as defined in a notebook or a function


def _data() -> tuple[TensorDataset, TensorDataset]:
    return tuple(TensorDataset(*(t[:64] for t in digits_tensors(split))) for split in ("train", "val"))


CLI_SCRIPT = """
import contextlib, io, json, sys
from normsearch.cli.app import main

results = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    results.append([args, code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def cli(runs: Path, *commands: list[str]) -> list[subprocess.CompletedProcess]:
    """The ``normsearch`` commands run one after another in one fresh Python process (no model or data
    registered in it, as in a user's next shell command), from the folder holding ``runs``."""
    done = subprocess.run(
        [sys.executable, "-c", CLI_SCRIPT, json.dumps(commands)],
        cwd=runs.parent,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        timeout=240,
    )
    return [subprocess.CompletedProcess(*result) for result in json.loads(done.stdout)]


@pytest.fixture(scope="module")
def api_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, normsearch.Study, str]:
    """The study of an in-memory model and data, made with the default progress; its stderr."""
    home = tmp_path_factory.mktemp("api")
    (home / "tiny.yaml").write_text(SPACE)
    capture = home / "stderr.txt"
    with capture.open("w") as err:
        saved, sys.stderr = sys.stderr, err
        try:
            torch.set_num_threads(1)
            study = normsearch.run(
                home / "tiny.yaml", model=in_memory_net, data=_data(), runs_dir=home / "runs", confirm=CONFIRM
            )
        finally:
            sys.stderr = saved
    return home / "runs", study, capture.read_text()


def test_run_shows_the_cli_progress_on_stderr_by_default(api_study) -> None:
    _, study, stderr = api_study
    assert f"{study.name}: 3 complete in " in stderr  # the search's summary line (normsearch run's)
    assert re.search(r"confirm tiny: \d candidate\(s\) on python:data-", stderr)  # the confirmation's
    assert "accuracy" in stderr


def test_run_with_progress_false_prints_nothing(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    (tmp_path / "tiny.yaml").write_text(SPACE)
    normsearch.run(
        tmp_path / "tiny.yaml", model=_net, n_trials=1, runs_dir=tmp_path, confirm=False, progress=False
    )
    assert capfd.readouterr() == ("", "")


def test_the_cli_reads_an_api_study_in_another_process(api_study) -> None:
    runs, study, _ = api_study
    board, listing, export, report, confirm = cli(
        runs,
        ["leaderboard", "--json"],
        ["runs"],
        ["export", "-o", "winner.py"],
        ["report", "-o", "report"],
        ["confirm", "tiny"],
    )
    assert board.returncode == 0, board.stderr
    assert [row["config"] for row in json.loads(board.stdout)["rows"]] == [
        row["config"] for row in study.leaderboard()
    ]
    assert listing.returncode == 0 and "tiny" in listing.stdout, listing.stderr
    assert export.returncode == 0, export.stderr
    assert f"config {study.winner.spec()}" in export.stderr + export.stdout
    assert report.returncode == 0 and (runs.parent / "report" / "index.html").is_file(), report.stderr
    # training more needs the data: one line naming it and the fix, exit 2
    assert confirm.returncode == 2
    assert confirm.stderr.strip().splitlines() == [
        confirm.stderr.strip().splitlines()[0]
    ] and confirm.stderr.startswith("error: dataset 'python:data-")
    assert "normsearch.run() in another process" in confirm.stderr and "FILE.py:FUNC" in confirm.stderr


def test_training_an_api_model_elsewhere_is_refused_before_any_run(tmp_path: Path) -> None:
    """With a named dataset the data loads; the in-memory model is named before a training run is queued."""
    (tmp_path / "tiny.yaml").write_text(SPACE)
    runs = tmp_path / "runs"
    study = normsearch.run(
        tmp_path / "tiny.yaml", model=in_memory_net, runs_dir=runs, confirm=False, progress=False
    )
    (confirm,) = cli(runs, ["confirm", "tiny", "--top-k", "1", "--steps", "1"])
    assert confirm.returncode == 2
    assert confirm.stderr.startswith("error: model 'python:api.<locals>.net' was given to normsearch.run()")
    assert len(confirm.stderr.strip().splitlines()) == 1
    again = normsearch.Study.open("tiny", runs_dir=runs).optuna
    assert again.get_trials() == study.optuna.get_trials()
    assert companion(again, create=False) is None  # no training run was queued


def test_a_study_probed_otherwise_is_refused_naming_the_study_argument(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(SPACE)
    options = {"n_trials": 1, "runs_dir": tmp_path, "confirm": False, "progress": False}
    normsearch.run(tmp_path / "tiny.yaml", model=_net, **options)
    with pytest.raises(IncompatibleStudy, match=r"probe.model: .*normsearch.run\(study=NAME\)"):
        normsearch.run(tmp_path / "tiny.yaml", model="cnn", **options)
