"""Issue 14: nothing lost, nothing leaked. One test per numbered case of the issue, with its reproduction:
each asserts the exit code, the single ``error:`` line, and that every completed trial and confirmation record
is still readable afterwards (by Optuna's own journal reader where a journal is involved).

The full-disk tests mount a small tmpfs (root only: CI runs as root; elsewhere they are skipped, and as root a
mount that fails is a test failure)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import TrialState

from normsearch.cli.app import main
from normsearch.journal import JournalDamaged
from normsearch.storage import make_storage

CREATE_TRIAL = JournalOperation.CREATE_TRIAL
CLI = [sys.executable, "-c", "from normsearch.console import run; run()"]
PROBE = "probe: {depth: 8, width: 8, batch_size: 16, seeds: 1, resolution: 8}\n"
TINY = (
    "space:\n"
    "  partition: {choices: [batch, layer, instance, group]}\n"
    "  group_size: {when: {partition: group}, choices: [2, 4]}\n"
    "  eps: {low: 1.0e-6, high: 1.0e-2, log: true}\n"
    + PROBE
    + "confirm: {top_k: 2, baselines: false, depth: 8, width: 8, epochs: 1, steps: 2, batch_size: 32, device: cpu}\n"
)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The ``normsearch`` console script's entry point (:func:`main`, its top-level handler included), run in
    this process for speed, with stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    handler = signal.getsignal(signal.SIGTERM)
    cwd_before = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(cwd_before)
        signal.signal(signal.SIGTERM, handler)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def search_tiny(runs_dir: Path, n_trials: int | str, *, cwd: Path) -> subprocess.CompletedProcess:
    """``normsearch run --space tiny.yaml --runs-dir RUNS_DIR --n-trials N --no-confirm`` in this process."""
    return cli(
        "run",
        "--space",
        "tiny.yaml",
        "--runs-dir",
        str(runs_dir),
        "--n-trials",
        str(n_trials),
        "--no-confirm",
        cwd=cwd,
    )


def cli_process(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """The entry point in a fresh process (for signals and start-up)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "200"}
    return subprocess.run(
        [*CLI, *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def one_error_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """Assert exit ``code`` and that stderr ends in exactly one ``error:`` line and has no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Should not reach" not in result.stderr
    return errors[0]


def optuna_trials(journal: Path, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    """The study's trials as Optuna's own journal reader sees them (no normsearch code involved)."""
    storage = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def complete(trials: list[optuna.trial.FrozenTrial]) -> dict[int, dict]:
    return {t.number: t.user_attrs["probe"] for t in trials if t.state == TrialState.COMPLETE}


@contextlib.contextmanager
def tmpfs(directory: Path, size: str):
    """A tmpfs of ``size`` mounted at ``directory`` for the block; unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root (CI runs as root)")
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


def resize(directory: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(directory)], check=True)


# ------------------------------------------------------------------------------------------------------
# 1. A journal ending in a partial line: the next write must not land on it


def _journal_with_trials(path: Path, n: int = 3) -> None:
    study = optuna.create_study(study_name="tiny", storage=make_storage(str(path)))
    for i in range(n):
        study.add_trial(optuna.trial.create_trial(value=float(i), user_attrs={"probe": {"i": i}}))


def test_1_a_partial_last_line_is_cut_before_the_next_write_and_every_record_kept(tmp_path: Path) -> None:
    journal = tmp_path / "journal.log"
    _journal_with_trials(journal)
    with journal.open("ab") as handle:
        handle.write(b'{"op_code":5,"worker_id":"x","trial_id":')  # a writer killed mid-line
    storage = make_storage(str(journal))
    assert journal.read_bytes().endswith(b"\n")  # cut on open, under the lock
    study = optuna.load_study(study_name="tiny", storage=storage)
    study.add_trial(optuna.trial.create_trial(value=9.0, user_attrs={"probe": {"i": 9}}))
    assert [t.value for t in optuna_trials(journal)] == [0.0, 1.0, 2.0, 9.0]


def test_1_a_record_glued_onto_a_partial_line_is_salvaged(tmp_path: Path) -> None:
    """A journal damaged the old way (Optuna's writer appended onto the partial line) is readable again."""
    journal = tmp_path / "journal.log"
    _journal_with_trials(journal)
    created = [
        line for line in journal.read_bytes().splitlines() if json.loads(line)["op_code"] == CREATE_TRIAL
    ]
    with journal.open(
        "ab"
    ) as handle:  # a partial line, then two records the old way: the first glued onto it
        handle.write(b'{"op_code":5,"worker_id":"x","trial_id":' + created[0] + b"\n" + created[1] + b"\n")
    with pytest.raises(ValueError):  # Optuna itself can no longer read it
        optuna_trials(journal)
    study = optuna.load_study(study_name="tiny", storage=make_storage(str(journal)))
    assert [t.value for t in study.get_trials()] == [0.0, 1.0, 2.0, 0.0, 1.0]
    assert [t.value for t in optuna_trials(journal)] == [0.0, 1.0, 2.0, 0.0, 1.0]  # repaired on disk


def test_8_a_line_that_is_no_record_names_the_file_and_line(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    journal = runs / "tiny" / "journal.log"
    journal.parent.mkdir(parents=True)
    _journal_with_trials(journal)
    lines = journal.read_bytes().split(b"\n")
    lines.insert(2, b"this is not json")
    journal.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalDamaged, match="line 3"):
        optuna.load_study(study_name="tiny", storage=make_storage(str(journal)))
    line = one_error_line(cli("leaderboard", "tiny", "--runs-dir", str(runs), cwd=tmp_path))
    assert str(journal) in line and "line 3" in line


@pytest.mark.slow
def test_1_a_full_disk_mid_search_stops_with_one_line_and_the_study_resumes(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY)
    with tmpfs(tmp_path / "fs", "120k") as fs:
        full = search_tiny(fs, "400", cwd=tmp_path)
        line = one_error_line(full)
        journal = fs / "tiny" / "journal.log"
        assert str(journal) in line and "No space left on device" in line
        assert journal.read_bytes().endswith(b"\n")  # the failed append was rolled back
        before = complete(optuna_trials(journal))
        assert len(before) >= 5
        resize(fs, "20m")
        budget = len(optuna_trials(journal)) + 5
        resumed = search_tiny(fs, str(budget), cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        after = optuna_trials(journal)
        assert {n: p for n, p in complete(after).items() if n in before} == before  # nothing lost
        assert len(complete(after)) >= len(before) + 5


def _fill(fs: Path, journal: Path, slack: int) -> None:
    """Pad the journal with one study attribute to ``slack`` bytes short of its last page, then fill the disk."""
    study = optuna.load_study(study_name="tiny", storage=JournalStorage(JournalFileBackend(str(journal))))
    page = os.statvfs(fs).f_frsize
    size = journal.stat().st_size
    study.set_user_attr("padding", "")
    overhead = journal.stat().st_size - size
    end = journal.stat().st_size + overhead
    study.set_user_attr("padding", "x" * ((-end - slack) % page))
    assert journal.stat().st_size % page == page - slack
    (fs / "filler").write_bytes(b"\0" * (os.statvfs(fs).f_bavail * page))


@pytest.mark.slow
def test_1_a_full_disk_mid_confirmation_stops_with_one_line_and_confirm_resumes(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY)
    with tmpfs(tmp_path / "fs", "20m") as fs:
        assert search_tiny(fs, "8", cwd=tmp_path).returncode == 0
        journal = fs / "tiny" / "journal.log"
        before = complete(optuna_trials(journal))
        _fill(fs, journal, slack=50)
        line = one_error_line(cli("confirm", "tiny", "--runs-dir", str(fs), cwd=tmp_path))
        assert "No space left on device" in line
        assert complete(optuna_trials(journal)) == before  # every trial still readable by Optuna itself
        (fs / "filler").unlink()
        done = cli("confirm", "tiny", "--runs-dir", str(fs), "--json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        trained = json.loads(done.stdout)["rows"]
        assert len(trained) >= 2
        board = json.loads(cli("leaderboard", "tiny", "--runs-dir", str(fs), "--json", cwd=tmp_path).stdout)
        assert sum(row.get("accuracy") is not None for row in board["rows"]) >= 2
        assert complete(optuna_trials(journal)) == before


@pytest.mark.slow
def test_7_a_read_only_journal_is_one_line_and_still_readable(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY)
    with tmpfs(tmp_path / "fs", "20m") as fs:
        assert search_tiny(fs, "4", cwd=tmp_path).returncode == 0
        journal = fs / "tiny" / "journal.log"
        with journal.open("ab") as handle:
            handle.write(b'{"op_code":5,')  # and a partial line that cannot be cut on a read-only disk
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        line = one_error_line(search_tiny(fs, "8", cwd=tmp_path))
        assert "Read-only file system" in line
        board = cli("leaderboard", "tiny", "--runs-dir", str(fs), "--json", cwd=tmp_path)
        assert board.returncode == 0 and len(json.loads(board.stdout)["rows"]) == 4


# ------------------------------------------------------------------------------------------------------
# 2, 5, 7: every setting validated (finite, limits) before anything is discarded or written


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A searched and confirmed tiny study (2 candidates trained), shared by the read-only tests."""
    root = tmp_path_factory.mktemp("confirmed")
    (root / "tiny.yaml").write_text(TINY)
    result = cli("run", "--space", "tiny.yaml", "--n-trials", "6", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def _records(root: Path) -> tuple[dict[int, dict], dict]:
    """Every completed trial (Optuna's own reader) and the leaderboard's confirmation records."""
    board = json.loads(cli("leaderboard", "tiny", "--json", cwd=root).stdout)
    confirmed = {
        row["trial"]: (row["accuracy"], row["confirm"]) for row in board["rows"] if "accuracy" in row
    }
    return complete(optuna_trials(root / "runs" / "tiny" / "journal.log")), {
        "confirmed": confirmed,
        "calibration": board.get("calibration"),
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--depth", "7"], "--depth: must be 6n+2 for resnet"),
        (["--lr", "nan"], "--lr: must be a finite number, got nan"),
        (["--lr", "inf"], "--lr: must be a finite number, got inf"),
        (["--width", "100000"], "--width: must be <= 1024"),
        (["--depth", "2000"], "--depth: must be <= 1000"),
    ],
)
def test_2_confirm_refuses_bad_values_before_touching_stored_results(
    confirmed: Path, args: list[str], message: str
) -> None:
    before = _records(confirmed)
    assert before[1]["confirmed"] and before[1]["calibration"] is not None
    line = one_error_line(cli("confirm", "tiny", *args, cwd=confirmed))
    assert message in line
    assert _records(confirmed) == before
    line = one_error_line(
        cli("calibrate", "--space", "tiny.yaml", "--runs-dir", "fresh", *args, cwd=confirmed)
    )
    assert message in line and not (confirmed / "fresh").exists()  # nothing written


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("confirm: {depth: 7}\n", "confirm.depth: must be 6n+2 for resnet"),
        ("confirm: {lr: .nan}\n", "confirm.lr: must be a finite number, got nan"),
        (
            "objective: {weights: {activation_growth: .nan}}\n",
            "objective.weights.activation_growth: must be a finite",
        ),
        ("objective: {weights: {similarity: .inf}}\n", "objective.weights.similarity: must be a finite"),
        ("search: {timeout: .nan}\n", "search.timeout: must be a finite number"),
        ("probe: {depth: 2000}\n", "probe.depth: must be <= 1000"),
        ("probe: {resolution: 100000}\n", "probe.resolution: must be <= 1024"),
        ("probe: {depth: 110, width: 256, batch_size: 1024, resolution: 64}\n", "the limit is 16 GiB"),
    ],
)
def test_2_5_7_the_same_rules_in_space_validate_run_and_calibrate(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    (tmp_path / "bad.yaml").write_text("space:\n  partition: {choices: [batch, layer]}\n" + yaml_text)
    for args in (
        ["space", "validate", "bad.yaml"],
        ["run", "--space", "bad.yaml", "--no-confirm"],
        ["calibrate", "--space", "bad.yaml"],
    ):
        line = one_error_line(cli(*args, cwd=tmp_path))
        assert message in line and "bad.yaml" in line, (args, line)
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        (
            "space:\n  groups: {low: 1, high: 50000000}\n",
            "space.groups: holds 50000000 values; a range may hold at most",
        ),
        ("space:\n  eps: {low: 1.0e-9, high: 0.5, step: 1.0e-9}\n", "a range may hold at most 100000"),
        ("space:\n  ? [a, b]\n  : 1\n", "line 2, column 5: invalid YAML: a key must be a plain value"),
        ("space: " + "[" * 30_000 + "]" * 30_000 + "\n", "nested more than 32 levels deep"),
        ("space: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n", "nested more than 32 levels deep"),
    ],
    ids=["int-range", "float-step-range", "complex-key", "nested-lists", "nested-maps"],
)
def test_7_sizes_that_would_exhaust_memory_or_the_stack_are_one_line(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    (tmp_path / "bad.yaml").write_text(yaml_text)
    line = one_error_line(cli("space", "validate", "bad.yaml", cwd=tmp_path))
    assert message in line and line.startswith("error: bad.yaml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["probe", "bn", "--resolution", "100000"], "--resolution: must be <= 1024, got 100000"),
        (["probe", "bn", "--depth", "2000"], "--depth: must be <= 1000, got 2000"),
        (["probe", "bn", "--depth", "998", "--width", "1024", "--resolution", "64"], "the limit is 16 GiB"),
        (["run", "--space", "groups", "--study", ""], "--study: study name '': use 1 to 100 letters"),
        (["run", "--space", "groups", "--study", "a" * 300], "use 1 to 100 letters"),
        (["leaderboard", "a" * 300], "use 1 to 100 letters"),
    ],
    ids=["probe-resolution", "probe-depth", "probe-memory", "empty-study", "long-study", "long-leaderboard"],
)
def test_7_8_limits_and_names_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    line = one_error_line(cli(*args, cwd=tmp_path))
    assert message in line
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------------------
# 3. export -o writes like a careful Unix tool


def test_3_export_output_replaces_files_atomically_follows_links_and_streams_to_devices(
    tmp_path: Path,
) -> None:
    made = cli("export", "--spec", "gn:groups=8", "-o", "new.py", cwd=tmp_path)
    assert made.returncode == 0 and "wrote new.py" in made.stderr
    source = (tmp_path / "new.py").read_text()
    assert "class GroupNorm8(nn.Module)" in source
    assert stat.S_IMODE((tmp_path / "new.py").stat().st_mode) == 0o666 & ~_umask()

    locked = tmp_path / "locked.py"
    locked.write_text("old\n")
    locked.chmod(0o444)
    if os.geteuid() == 0:  # root may replace it: the mode is kept, and the user is told
        replaced = cli("export", "--spec", "gn:groups=8", "-o", "locked.py", cwd=tmp_path)
        assert replaced.returncode == 0 and "replaced the existing file locked.py" in replaced.stderr
        assert locked.read_text() == source and stat.S_IMODE(locked.stat().st_mode) == 0o444
    else:  # as cp does, a file the user may not write is refused
        line = one_error_line(cli("export", "--spec", "gn:groups=8", "-o", "locked.py", cwd=tmp_path))
        assert "locked.py" in line and "read-only" in line and locked.read_text() == "old\n"

    (tmp_path / "target.py").write_text("old\n")
    (tmp_path / "link.py").symlink_to("target.py")
    assert cli("export", "--spec", "gn:groups=8", "-o", "link.py", cwd=tmp_path).returncode == 0
    assert (tmp_path / "link.py").is_symlink() and (tmp_path / "target.py").read_text() == source

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    streamed = cli("export", "--spec", "gn:groups=8", "-o", str(fifo), cwd=tmp_path)
    assert reader.communicate(timeout=30)[0].decode() == source
    assert streamed.returncode == 0 and stat.S_ISFIFO(fifo.stat().st_mode)

    null = os.stat("/dev/null")
    assert cli("export", "--spec", "gn:groups=8", "-o", "/dev/null", cwd=tmp_path).returncode == 0
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev, after.st_mode) == (
        null.st_ino,
        null.st_rdev,
        null.st_mode,
    )

    line = one_error_line(cli("export", "--spec", "gn:groups=8", "-o", str(tmp_path), cwd=tmp_path))
    assert "is a directory" in line
    line = one_error_line(cli("export", "--spec", "gn:groups=8", "-o", "nowhere/x.py", cwd=tmp_path))
    assert "does not exist" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "link.py",
        "locked.py",
        "new.py",
        "pipe",
        "target.py",
    ]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------------------------------
# 6. class names that would shadow what the exported module uses


@pytest.mark.parametrize(
    ("spec", "name", "message"),
    [
        ("gn", "super", "would shadow the Python builtin 'super'"),
        ("evonorm_b0", "max", "would shadow the Python builtin 'max'"),
        ("bn", "len", "would shadow the Python builtin 'len'"),
        ("gn", "torch", "is taken by the exported module"),
        ("evonorm_b0", "group_moments", "is taken by the exported module"),
    ],
)
def test_6_class_names_that_shadow_builtins_or_module_names_are_refused(
    tmp_path: Path, spec: str, name: str, message: str
) -> None:
    line = one_error_line(cli("export", "--spec", spec, "--class-name", name, "-o", "out.py", cwd=tmp_path))
    assert message in line and not (tmp_path / "out.py").exists()


@pytest.mark.parametrize("spec", ["gn", "evonorm_b0", "evonorm_s0", "frn", "pn:act=tlu", "dyt"])
def test_6_every_module_level_name_of_an_export_is_reserved(spec: str) -> None:
    """The refusal list covers what an exported file really binds, so no class name can shadow it."""
    import ast

    from normsearch.export import export_source
    from normsearch.export.names import RESERVED_NAMES

    tree = ast.parse(export_source(spec))
    bound = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign):
            bound.update(t.id for t in node.targets if isinstance(t, ast.Name))
    exported_class = tree.body[-1].name if isinstance(tree.body[-1], ast.ClassDef) else None
    assert bound - {exported_class, "annotations"} <= RESERVED_NAMES, bound - RESERVED_NAMES


def test_6_a_class_named_like_a_local_variable_still_works(tmp_path: Path) -> None:
    import torch

    from normsearch import build_norm
    from normsearch.export import export_source

    for spec in ("evonorm_b0", "gn:groups=4", "frn"):
        namespace: dict = {}
        exec(compile(export_source(spec, class_name="mean"), "<export>", "exec"), namespace)  # noqa: S102
        layer, reference = namespace["mean"](8), build_norm(spec, 8)
        x = torch.randn(4, 8, 5, 5)
        torch.testing.assert_close(layer(x), reference(x))


# ------------------------------------------------------------------------------------------------------
# 7, 8. Signals, orphans, locks, escaping


ENDLESS = TINY.replace("confirm:", "search: {sampler: random}\nconfirm:")


def _wait_for(condition, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _started_trials(journal: Path) -> int:
    return journal.read_bytes().count(b'"op_code":4,') if journal.exists() else 0


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat_line = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
    return " Z " not in stat_line  # a zombie has exited


@pytest.mark.slow
def test_8_sigterm_exits_143_with_the_resume_hint_and_keeps_the_study(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(ENDLESS)
    journal = tmp_path / "runs" / "tiny" / "journal.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [*CLI, "run", "--space", "tiny.yaml", "--n-trials", "500", "--no-confirm"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: _started_trials(journal) >= 8, what="trials")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr
    assert "run the same command again" in stderr and "Traceback" not in stderr
    assert len(complete(optuna_trials(journal))) >= 5


@pytest.mark.slow
def test_8_killing_the_parent_of_workers_leaves_no_orphans(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(ENDLESS)
    journal = tmp_path / "runs" / "tiny" / "journal.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [*CLI, "run", "--space", "tiny.yaml", "--n-trials", "5000", "--no-confirm", "--workers", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    try:
        _wait_for(lambda: _started_trials(journal) >= 12, what="the workers' trials")
        workers = _children(process.pid)  # the spawned workers (and multiprocessing's resource tracker)
        assert len(workers) >= 2
        process.kill()  # SIGKILL: the parent cannot forward anything
        process.wait(timeout=30)
        _wait_for(
            lambda: not any(_alive(pid) for pid in workers), timeout=60, what="the orphaned workers to stop"
        )
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
    assert len(complete(optuna_trials(journal))) >= 10  # their stop left the journal readable


def test_8_a_lock_at_open_is_reported(tmp_path: Path) -> None:
    journal = tmp_path / "journal.log"
    _journal_with_trials(journal)
    os.symlink(journal, str(journal) + ".lock")  # left by a writer killed mid-write
    err = io.StringIO()
    handler = logging.StreamHandler(err)
    logging.getLogger("normsearch").addHandler(handler)
    try:
        make_storage(str(journal))
    finally:
        logging.getLogger("normsearch").removeHandler(handler)
    assert f"{journal}.lock exists" in err.getvalue() and "broken after 30 s" in err.getvalue()


def test_8_stored_markup_and_escapes_reach_the_terminal_escaped(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    journal = runs / "tiny" / "journal.log"
    journal.parent.mkdir(parents=True)
    (tmp_path / "tiny.yaml").write_text(TINY)
    assert cli("run", "--space", "tiny.yaml", "--n-trials", "2", "--no-confirm", cwd=tmp_path).returncode == 0
    study = optuna.load_study(study_name="tiny", storage=make_storage(str(journal)))
    evil = "[bold red]boom[/] \x1b]0;pwned\x07\x1b[2J"
    study.add_trial(
        optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"config": evil, "fail_reason": evil})
    )
    shown = cli("leaderboard", "tiny", "--all", cwd=tmp_path)
    assert shown.returncode == 0
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout
    assert (
        "[bold red]boom[/]" in shown.stdout and "\\x1b]0;pwned" in shown.stdout and "\\x1b[2J" in shown.stdout
    )


def test_7_a_full_stdout_is_one_line(tmp_path: Path) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [*CLI, "presets"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            timeout=120,
        )
    line = one_error_line(result)
    assert "cannot write the output: No space left on device" in line


def test_7_runs_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY)
    (tmp_path / "afile").write_text("")
    line = one_error_line(
        cli("run", "--space", "tiny.yaml", "--runs-dir", "afile", "--no-confirm", cwd=tmp_path)
    )
    assert "afile" in line and "Not a directory" in line


def test_7_an_unexpected_bug_is_one_line_and_its_traceback_only_with_debug(
    tmp_path: Path, monkeypatch
) -> None:
    from normsearch.cli import presets

    def broken(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(presets, "fit_table", broken)
    line = one_error_line(cli("presets", cwd=tmp_path), code=1)
    assert "unexpected TypeError: a bug" in line and "--debug" in line
    with pytest.raises(TypeError, match="a bug"):
        cli("--debug", "presets", cwd=tmp_path)


def test_9_the_cnn_probes_at_a_resolution_where_no_instance_layer_collapses(tmp_path: Path) -> None:
    from normsearch.models import min_resolution
    from normsearch.probes import ProbeSettings

    assert (ProbeSettings().resolution, ProbeSettings(model="cnn", depth=10).resolution) == (16, 32)
    assert min_resolution("cnn", 10) == 32 and min_resolution("resnet", 20) == 8
    args = [
        "probe",
        "in",
        "--model",
        "cnn",
        "--depth",
        "10",
        "--width",
        "4",
        "--batch-size",
        "8",
        "--seeds",
        "1",
        "--json",
    ]
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["settings"]["resolution"] == 32
    assert not doc["results"][0]["unstable"] and doc["results"][0]["similarity"] < 0.99
    collapsed = cli(*args, "--resolution", "16", cwd=tmp_path)  # asked for explicitly: probed, with a warning
    assert (
        "warning: resolution 16: cnn-10 ends on 1×1 maps" in collapsed.stderr
        and "at least 32" in collapsed.stderr
    )
    assert json.loads(collapsed.stdout)["results"][0]["unstable"]


@pytest.mark.slow
def test_1_a_full_disk_under_workers_is_one_line_per_worker(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY)
    with tmpfs(tmp_path / "fs", "120k") as fs:
        full = cli_process(
            "run",
            "--space",
            "tiny.yaml",
            "--runs-dir",
            str(fs),
            "--n-trials",
            "400",
            "--no-confirm",
            "--workers",
            "2",
            cwd=tmp_path,
        )
        assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-3000:]
        errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
        assert 1 <= len(errors) <= 2 and all("No space left on device" in line for line in errors)
        assert len(complete(optuna_trials(fs / "tiny" / "journal.log"))) >= 5


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_7_a_signal_during_start_up_is_one_line(tmp_path: Path, sig: int, code: int) -> None:
    """Start-up imports torch, Optuna and every command (seconds on a busy machine): a signal then, or in the
    probe that follows if start-up was quicker, ends in one line with 130 / 143, never a traceback."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [*CLI, "probe", "bn", "--depth", "998", "--width", "64"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "interrupted" in errors[0] and "Traceback" not in stderr
