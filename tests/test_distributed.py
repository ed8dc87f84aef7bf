"""Studies shared by several processes on a live PostgreSQL server (tests/pg_server.py), and the storage
errors: URLs as users type them, one ``error:`` line with the fix and nothing written for any that cannot
open, concurrent starts on a fresh schema, exact budgets without duplicate probes, heartbeat takeover of a
frozen worker's trial, ``--storage`` on the reading commands."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from normsearch.cli import app
from normsearch.search import counts_toward_budget

runner = CliRunner()
PROBE = "probe: {depth: 8, width: 8, batch_size: 16, seeds: 1, resolution: 8}\n"
SPACE = (  # 10 configs: with a budget above that, repeats are certain, and each must be probed once
    "space:\n"
    "  partition: {choices: [batch, layer, instance, group]}\n"
    "  group_size: {when: {partition: group}, choices: [2, 4]}\n"
    "  center: {choices: [true, false]}\n" + PROBE
)
ENDLESS = SPACE.replace(PROBE, "  eps: {low: 1.0e-6, high: 1.0e-2, log: true}\n" + PROBE)
CLI = [sys.executable, "-c", "from normsearch.cli import app; app()"]


def _load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def _counted(study: optuna.Study) -> int:
    return sum(counts_toward_budget(t) for t in study.get_trials())


def _probed(study: optuna.Study) -> list[str]:
    """The config of each trial that ran the probes itself (not a reuse of another trial's result)."""
    return [
        t.user_attrs["config"]
        for t in study.get_trials()
        if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
    ]


def _error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.slow
def test_concurrent_starts_on_a_fresh_schema_meet_the_budget_exactly_and_probe_each_config_once(
    tmp_path: Path, pg_url: str
) -> None:
    """Three processes started at once on an empty database: each creates the schema and the study (one
    wins), none crashes, the budget is met exactly, and no config is probed twice although all ten configs
    of the space are drawn again and again."""
    (tmp_path / "s.yaml").write_text(SPACE)
    command = [
        *CLI,
        "run",
        "--no-confirm",
        "--space",
        "s.yaml",
        "--study",
        "s",
        "--n-trials",
        "12",
        "--storage",
        pg_url,
    ]
    processes = [
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=240) for p in processes]
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        assert "budget not used up" not in err and "Traceback" not in err
    study = _load(pg_url, "s")
    assert _counted(study) == 12
    assert len({t.user_attrs["worker"] for t in study.get_trials()}) >= 2  # they really shared the work
    probed = _probed(study)
    assert len(probed) == len(set(probed)), Counter(probed).most_common(3)
    assert [t.number for t in study.get_trials() if t.state == TrialState.RUNNING] == []
    baselines = Counter(
        t.user_attrs.get("baseline_name") for t in study.get_trials() if t.user_attrs.get("baseline")
    )
    assert set(baselines.values()) == {1}  # each baseline enqueued once, not once per process


@pytest.mark.slow
def test_six_processes_opening_a_fresh_database_at_the_same_instant_all_succeed(pg_url: str) -> None:
    """Optuna's own RDBStorage lost 15 of 18 such starts (3 rounds of 6) to duplicate-key errors creating its
    tables; :func:`make_storage` retries them."""
    start = time.time() + 3
    code = (  # `import normsearch` does not import torch, so six processes start at once
        "import sys, time; from normsearch.storage import make_storage; "
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); make_storage(sys.argv[1])"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code, pg_url, str(start)], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 6, errors
    assert optuna.get_all_study_summaries(pg_url) == []  # the schema is there, and whole


@pytest.mark.slow
def test_two_workers_on_one_journal_probe_no_config_twice(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("s.yaml").write_text(SPACE)
    result = runner.invoke(
        app, ["run", "--no-confirm", "--space", "s.yaml", "--n-trials", "16", "--workers", "2"]
    )
    assert result.exit_code == 0, result.stderr
    study = optuna.load_study(
        study_name="s",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "runs" / "s" / "journal.log"))
        ),
    )
    assert _counted(study) == 16
    probed = _probed(study)
    assert len(probed) == len(set(probed))


@pytest.mark.slow
def test_a_frozen_workers_trial_is_failed_by_the_heartbeat_and_retried_by_another(
    tmp_path: Path, pg_url: str
) -> None:
    """A machine that stops mid-trial (SIGSTOP: its pid lives, its heartbeat stops): another worker fails that
    trial once it is 2 × heartbeat old, runs a copy with the same parameters, and meets the budget."""
    (tmp_path / "s.yaml").write_text(ENDLESS.replace("depth: 8, width: 8", "depth: 20, width: 16"))
    command = [
        *CLI,
        "run",
        "--no-confirm",
        "--space",
        "s.yaml",
        "--study",
        "hb",
        "--n-trials",
        "6",
        "--heartbeat",
        "1",
        "--storage",
        pg_url,
    ]
    frozen = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        victim = None
        while victim is None and time.monotonic() < deadline and frozen.poll() is None:
            try:
                running = [
                    t
                    for t in _load(pg_url, "hb").get_trials(states=(TrialState.RUNNING,))
                    if t.user_attrs.get("worker", "").endswith(f":{frozen.pid}") and "config" in t.user_attrs
                ]
            except KeyError:  # the study does not exist yet
                running = []
            if running:
                frozen.send_signal(signal.SIGSTOP)
                still = _load(pg_url, "hb").trials[running[0].number]
                if still.state == TrialState.RUNNING:
                    victim = still
                else:
                    frozen.send_signal(signal.SIGCONT)
            time.sleep(0.01)
        assert victim is not None, "never caught the worker mid-trial"
        done = subprocess.run(command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr
    finally:
        frozen.kill()
        frozen.wait()
    trials = _load(pg_url, "hb").get_trials()
    failed = trials[victim.number]
    assert failed.state == TrialState.FAIL and not counts_toward_budget(failed)
    assert failed.user_attrs["fail_reason"] == (
        f"interrupted: worker {victim.user_attrs['worker']} stopped sending heartbeats (silent over 2 s)"
    )
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert "fail_reason" not in retries[0].user_attrs and "interrupted" not in retries[0].user_attrs
    shown = runner.invoke(app, ["leaderboard", "hb", "--storage", pg_url, "--all", "--top", "100", "--json"])
    reasons = [
        row.get("reason") for row in json.loads(shown.stdout)["rows"] if row.get("trial") == victim.number
    ]
    assert reasons == [failed.user_attrs["fail_reason"]], reasons
    assert (
        retries[0].user_attrs["config"]
        == victim.user_attrs["config"]  # a baseline's params may not be drawn yet
        and retries[0].user_attrs["worker"] != victim.user_attrs["worker"]
    )
    assert _counted(_load(pg_url, "hb")) == 6


FROZEN_IN_A_TRANSACTION = """
import sys, time
import sqlalchemy
from normsearch.storage import make_storage
storage = make_storage(sys.argv[1], heartbeat=1)
session = storage.scoped_session()
session.execute(sqlalchemy.text("SELECT * FROM trials WHERE trial_id = :id FOR UPDATE"), {"id": int(sys.argv[2])})
print("locked", flush=True)
time.sleep(600)
"""


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_worker_frozen_inside_a_transaction_does_not_block_the_others(pg_url: str) -> None:
    """A worker suspended between two statements of one transaction (e.g. its heartbeat thread's row insert, whose
    foreign key locks the trial's row) holds its row locks for as long as it is frozen. The server ends such a
    session once it idles in its transaction for the grace period (2 × heartbeat, at least
    :data:`~normsearch.storage.IDLE_IN_TRANSACTION_S`), so the other workers can fail the silent trial instead of
    waiting forever. (The frozen worker is stood in for by a process that takes the lock and sleeps: the server
    sees the same idle transaction.)"""
    import threading

    from normsearch.storage import IDLE_IN_TRANSACTION_S, fail_silent_trials, make_storage

    study = optuna.create_study(study_name="locked", storage=make_storage(pg_url, heartbeat=1))
    trial = study.ask()
    study._storage.record_heartbeat(trial._trial_id)
    holder = subprocess.Popen(
        [sys.executable, "-c", FROZEN_IN_A_TRANSACTION, pg_url, str(trial._trial_id)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        time.sleep(2.5)  # the trial is now silent for longer than 2 × heartbeat
        started = time.monotonic()
        checker = threading.Thread(target=fail_silent_trials, args=(study,), daemon=True)
        checker.start()
        checker.join(timeout=IDLE_IN_TRANSACTION_S + 30)
        waited = time.monotonic() - started
        assert not checker.is_alive(), f"still blocked on the frozen worker's lock after {waited:.0f} s"
    finally:
        holder.kill()
        holder.wait()
    assert study._storage.get_trial(trial._trial_id).state == TrialState.FAIL
    print(f"waited {waited:.1f} s for the server to end the frozen session")


def test_urls_as_users_type_them_and_the_reading_commands_take_storage(
    tmp_path: Path, monkeypatch, postgres, pg_url: str
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("s.yaml").write_text(SPACE)
    psycopg2 = pg_url.replace("+psycopg", "+psycopg2")
    result = runner.invoke(
        app, ["run", "--no-confirm", "--space", "s.yaml", "--n-trials", "3", "--storage", psycopg2]
    )
    assert result.exit_code == 0, result.stderr
    assert Path("runs/s/storage.txt").read_text().strip() == psycopg2  # no password: the pointer is kept
    assert _counted(_load(pg_url, "s")) == 3
    for command in (["leaderboard", "--json"], ["runs", "--json"]):  # found through the pointer / listed
        shown = runner.invoke(app, [*command, "--storage", pg_url] if command[0] == "runs" else [*command])
        assert shown.exit_code == 0, shown.stderr
    assert (
        json.loads(runner.invoke(app, ["runs", "--json", "--storage", pg_url]).stdout)["runs"][0]["study"]
        == "s"
    )
    exported = runner.invoke(app, ["export", "--storage", pg_url])  # no study name: the only one
    assert exported.exit_code == 0 and "class " in exported.stdout, exported.stderr
    # a bare postgresql:// with only psycopg2 installed (SQLAlchemy 2.1 maps it to psycopg 3)
    bare = pg_url.replace("postgresql+psycopg://", "postgresql://")
    blocked = "import sys; sys.modules['psycopg'] = None; from normsearch.cli import app; app()"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            blocked,
            "run",
            "--no-confirm",
            "--space",
            "s.yaml",
            "--study",
            "t",
            "--n-trials",
            "2",
            "--storage",
            bare,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert _counted(_load(pg_url, "t")) == 2
    two = runner.invoke(app, ["export", "--storage", pg_url])
    assert "holds 2 studies (s, t): name one" in _error_line(two)


def test_each_storage_that_cannot_open_is_one_error_line_and_nothing_is_written(
    tmp_path: Path, monkeypatch, postgres
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("s.yaml").write_text(SPACE)
    Path("adir").mkdir()
    closed = postgres.url("x").replace(str(postgres.port), "1")  # nothing listens on port 1
    cases = {
        closed: ("cannot connect", "is the server running"),
        postgres.url("postgres", user="postgres", password="wrong"): (
            "password",
            "check the user name and password",
        ),
        postgres.url("nope"): ("does not exist", "create the database first"),
        "mysql://u@127.0.0.1/db": ("'MySQLdb' is not installed", "pip install 'mysqlclient'"),
        "sqlit:///x.db": ("unknown database 'sqlit'", "did you mean sqlite://?"),
        "adir": ("is a directory", "adir/journal.log"),
        "missing/dir/j.log": ("does not exist", "a journal file path"),
    }
    for url, expected in cases.items():
        line = _error_line(runner.invoke(app, ["run", "--no-confirm", "--space", "s.yaml", "--storage", url]))
        assert all(text in line for text in expected), line
        assert "wrong" not in line  # the password is masked
        assert not Path("runs").exists() and not Path("x.db").exists() and list(Path("adir").iterdir()) == []


def test_a_bad_pointer_breaks_only_its_own_study_and_reading_never_creates_a_database(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("s.yaml").write_text(SPACE)
    assert runner.invoke(app, ["run", "--no-confirm", "--space", "s.yaml", "--n-trials", "2"]).exit_code == 0
    assert (
        runner.invoke(
            app,
            [
                "run",
                "--no-confirm",
                "--space",
                "s.yaml",
                "--n-trials",
                "2",
                "--study",
                "db",
                "--storage",
                f"sqlite:///{tmp_path}/db.sqlite",
            ],
        ).exit_code
        == 0
    )
    Path("db.sqlite").unlink()  # the database moved away
    Path("runs/typo").mkdir()
    Path("runs/typo/storage.txt").write_text("sqlit:///x.db\n")
    listed = runner.invoke(app, ["runs", "--json"])
    assert listed.exit_code == 0 and [r["study"] for r in json.loads(listed.stdout)["runs"]] == ["s"]
    assert "runs/typo/storage.txt" in listed.stderr and "runs/db/storage.txt" in listed.stderr
    assert runner.invoke(app, ["leaderboard", "s"]).exit_code == 0
    for name, expected in (("typo", "unknown database 'sqlit'"), ("db", "no such file")):
        line = _error_line(runner.invoke(app, ["leaderboard", name]))
        assert expected in line and f"fix or delete runs/{name}/storage.txt" in line
    assert not Path("db.sqlite").exists() and not Path("x.db").exists()
    assert Path("runs/typo/storage.txt").read_text() == "sqlit:///x.db\n"  # left as it was


def _recipe() -> list[str]:
    """The ``normsearch`` command lines of docs/distributed.md's bash blocks, in order."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "distributed.md").read_text()
    blocks = [block.split("\n", 1)[1] for block in text.split("```")[1::2] if block.startswith("bash")]
    return [line for block in blocks for line in block.splitlines() if line.startswith("normsearch ")]


@pytest.mark.slow
def test_the_distributed_recipe_runs_as_written(tmp_path: Path, monkeypatch, pg_url: str) -> None:
    """Every ``normsearch`` command of the recipe, on a live server (a tiny space in place of groups). The
    ``run`` commands run as shell commands in their own processes, the worker command on two "machines" at
    once; the reading commands run in this process (the same CLI, fewer interpreter start-ups)."""
    monkeypatch.chdir(tmp_path)
    Path("tiny.yaml").write_text(
        SPACE + "search: {n_trials: 12}\nconfirm: {top_k: 1, depth: 8, width: 8, steps: 3, batch_size: 16}\n"
    )
    monkeypatch.setenv("NORMSEARCH_DB", pg_url.replace("+psycopg", ""))  # as typed: postgresql://
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    lines = [line.replace("--space groups", "--space tiny.yaml") for line in _recipe()]
    assert [line.split()[1] for line in lines] == [
        "run",
        "run",
        "runs",
        "leaderboard",
        "confirm",
        "leaderboard",
        "export",
    ]
    outputs = {}
    for line in lines:
        if line.split()[1] == "run":
            shells = [
                subprocess.Popen(line, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(2 if "--workers" in line else 1)
            ]
            for shell in shells:
                _, err = shell.communicate(timeout=300)
                assert shell.returncode == 0, f"{line}: {err}"
            continue
        result = runner.invoke(app, shlex.split(os.path.expandvars(line))[1:])
        assert result.exit_code == 0, f"{line}: {result.stderr}"
        outputs[line] = result.stdout
    study = _load(pg_url, "groups")
    assert _counted(study) == 12
    probed = _probed(study)
    assert len(probed) == len(set(probed))
    assert "groups" in outputs[lines[2]]
    assert "accuracy" in outputs[lines[5]] and "calibration" in outputs[lines[5]]
    assert "class " in Path("my_norm.py").read_text()


def test_every_command_that_reads_a_study_takes_storage(tmp_path: Path, monkeypatch) -> None:
    """``--storage`` on runs, leaderboard, export, confirm and calibrate: a bad one is the same single line."""
    monkeypatch.chdir(tmp_path)
    for command in (["runs"], ["leaderboard"], ["export"], ["confirm"], ["calibrate"]):
        line = _error_line(runner.invoke(app, [*command, "--storage", "sqlit:///x.db"]))
        assert "--storage sqlit:///x.db: unknown database 'sqlit'; did you mean sqlite://?" in line, command
        missing = _error_line(runner.invoke(app, [*command, "--storage", "nowhere/j.log"]))
        assert "nowhere" in missing, command
    assert list(tmp_path.iterdir()) == []  # nothing created by any of them


def test_a_trial_another_process_is_just_starting_is_not_stale_but_an_abandoned_one_is() -> None:
    """A RUNNING trial without a ``worker`` yet is being started by another process right now (a run that
    started then failed it, crashing that worker with "Cannot tell a FAIL trial"); after the grace it is
    one whose process died between popping it and starting it."""
    from datetime import datetime, timedelta

    from optuna.trial import FrozenTrial

    from normsearch.storage import UNOWNED_GRACE_S, is_stale

    def running(age: float, attrs: dict) -> FrozenTrial:
        start = datetime.now() - timedelta(seconds=age)
        return FrozenTrial(
            number=0,
            state=TrialState.RUNNING,
            value=None,
            datetime_start=start,
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs=attrs,
            system_attrs={},
            intermediate_values={},
            trial_id=0,
        )

    assert not is_stale(running(1, {}))
    assert is_stale(running(UNOWNED_GRACE_S + 5, {}))
    assert is_stale(running(1, {"worker": f"{socket.gethostname()}:999999999"}))  # no such pid here
    assert not is_stale(running(1, {"worker": f"{socket.gethostname()}:{os.getpid()}"}))
    assert not is_stale(running(UNOWNED_GRACE_S + 5, {"worker": "another-host:1"}))  # the heartbeat's case


@pytest.mark.slow
def test_two_machines_split_one_confirmation_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """Two ``confirm`` processes at once on one PostgreSQL study: each work unit (candidate × rung × lr × seed)
    is trained once, by one of them, and both finish; ``export --storage`` still finds the only search study
    beside its companion."""
    from normsearch.confirm.units import companion

    (tmp_path / "s.yaml").write_text(
        SPACE + "confirm: {top_k: 1, depth: 8, width: 8, epochs: 1, batch_size: 16}\n"
    )
    searched = runner.invoke(
        app,
        [
            "run",
            "--no-confirm",
            "--space",
            str(tmp_path / "s.yaml"),
            "--n-trials",
            "6",
            "--storage",
            pg_url,
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
    )
    assert searched.exit_code == 0, searched.stderr
    command = [*CLI, "confirm", "s", "--storage", pg_url]
    processes = [
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors
    units = companion(_load(pg_url, "s"), create=False).get_trials()
    done = [t for t in units if t.state == TrialState.COMPLETE]
    keys = [t.user_attrs["key"] for t in done]
    assert done and len(keys) == len(set(keys))
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both trained a share
    assert runner.invoke(app, ["export", "--storage", pg_url]).exit_code == 0


def _running_unit(study: optuna.Study, pid: int) -> optuna.trial.FrozenTrial | None:
    """A unit of the companion study that process ``pid`` is training now, if any."""
    from normsearch.confirm.units import companion

    queue = companion(study, create=False)
    if queue is None:
        return None
    return next(
        (
            t
            for t in queue.get_trials(states=(TrialState.RUNNING,))
            if t.user_attrs.get("worker", "").endswith(f":{pid}")
        ),
        None,
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["postgresql", "journal"])
def test_a_confirmation_worker_that_stops_mid_run_is_taken_over(tmp_path: Path, kind: str, request) -> None:
    """Two ``confirm`` processes on one study; one is stopped while it trains a unit. PostgreSQL: SIGSTOP, as a
    machine that hangs or drops off the network (its pid lives on, its heartbeat stops): the survivor fails the
    unit once it is 2 × heartbeat silent and trains Optuna's retry of it. Journal (one machine): SIGKILL, the
    pid is gone: the survivor fails the unit at once and queues it again. Either way every unit is trained to
    completion exactly once, the stopped one by the survivor, nothing is left queued or running, and the
    leaderboard has every candidate. The hung PostgreSQL worker is then woken up (SIGCONT): it finds its unit
    failed, records nothing more for it, and finishes with the others' results."""
    from normsearch.confirm.units import companion

    url = request.getfixturevalue("pg_url") if kind == "postgresql" else str(tmp_path / "j.log")
    (tmp_path / "s.yaml").write_text(
        SPACE
        + "confirm: {top_k: 2, depth: 8, width: 8, epochs: 1, batch_size: 16, lr_factors: [1], seeds: 2,"
        " max_cost: null}\n"
    )
    searched = runner.invoke(
        app,
        [
            "run",
            "--no-confirm",
            "--space",
            str(tmp_path / "s.yaml"),
            "--n-trials",
            "6",
            "--storage",
            url,
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
    )
    assert searched.exit_code == 0, searched.stderr
    study = _load(url, "s") if kind == "postgresql" else _journal(url, "s")
    command = [*CLI, "confirm", "s", "--storage", url, "--heartbeat", "1"]
    started = time.monotonic()
    stopped, survivor = (
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    )
    try:
        victim, deadline = None, time.monotonic() + 180
        while victim is None and time.monotonic() < deadline and stopped.poll() is None:
            if _running_unit(study, stopped.pid) is not None:
                stopped.send_signal(signal.SIGSTOP)
                victim = _running_unit(study, stopped.pid)  # still training it, now frozen
                if victim is None:
                    stopped.send_signal(signal.SIGCONT)
            time.sleep(0.02)
        assert victim is not None, "never caught the worker mid-run"
        if kind == "journal":
            stopped.kill()
            stopped.wait()  # reaped: a zombie's pid is still alive
        _, err = survivor.communicate(timeout=300)
        assert survivor.returncode == 0, err
        if kind == "postgresql":  # the hung machine wakes up: it finds its unit failed, leaves it, and ends
            stopped.send_signal(signal.SIGCONT)
            _, err = stopped.communicate(timeout=300)
            assert stopped.returncode == 0, err
    finally:
        stopped.kill()
        stopped.wait()
        survivor.kill()
        survivor.wait()
    seconds = time.monotonic() - started
    units = companion(study, create=False).get_trials()
    failed = units[victim.number]
    worker = victim.user_attrs["worker"]
    reason = (
        "stopped sending heartbeats (silent over 2 s)" if kind == "postgresql" else "stopped while running it"
    )
    assert failed.state == TrialState.FAIL and failed.user_attrs["interrupted"] is True
    assert (
        failed.user_attrs["fail_reason"] == f"interrupted: {'worker' if kind == 'postgresql' else 'process'} "
        f"{worker} {reason}"
    ), failed.user_attrs
    done = [t for t in units if t.state == TrialState.COMPLETE]
    keys = [t.user_attrs["key"] for t in done]
    assert len(keys) == len(set(keys)) == len({t.user_attrs["key"] for t in units})  # every unit, once each
    assert not [t.number for t in units if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    retrained = next(t for t in done if t.user_attrs["key"] == victim.user_attrs["key"])
    assert retrained.user_attrs["worker"].endswith(f":{survivor.pid}")
    if kind == "postgresql":  # Optuna's retry of the failed trial, without the failed run's own attrs
        assert retrained.system_attrs["failed_trial"] == victim.number
    board = json.loads(runner.invoke(app, ["leaderboard", "s", "--storage", url, "--json"]).stdout)
    trained = {row["config"] for row in board["rows"] if "accuracy" in row}
    assert trained == {t.user_attrs["config"] for t in done} and len(trained) >= 3
    print(f"{kind}: {len(done)} units, taken over unit {victim.number}, {seconds:.1f} s")


def _journal(path: str, name: str) -> optuna.Study:
    return optuna.load_study(
        study_name=name,
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path)),
    )


STARTER = """
import json, sys, time
from normsearch.search import prepare
from normsearch.space import load_space
from normsearch.storage import locate

space, rounds = load_space(sys.argv[1]), json.loads(sys.argv[2])
for url, start in rounds:
    time.sleep(max(0.0, start - time.time()))
    try:
        prepared = prepare(space, locate("pg", sys.argv[3], url))
        print(json.dumps({"created": prepared.created}), flush=True)
    except ValueError as err:
        print(json.dumps({"error": str(err)}), flush=True)
"""


@pytest.mark.slow
def test_any_number_of_starters_on_a_fresh_study_all_join_it(tmp_path: Path, postgres) -> None:
    """Four processes prepare study ``pg`` on a fresh database at the same instant, in four rounds (a fresh
    database each): in every round one creates the study and the other three join it. The creator stores the
    study's settings one user attr at a time; a joiner that read them half-written refused the study as
    "scored with older objectives (version 1: ?)" (3 of 3 CLI starts lost one)."""
    (tmp_path / "s.yaml").write_text(SPACE)
    starters, start = 4, time.time() + 12  # time for each process to import torch on a loaded machine
    rounds = [(postgres.database(), start + 1.5 * i) for i in range(4)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, str(tmp_path / "s.yaml"), json.dumps(rounds), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(starters)
    ]
    outputs = [p.communicate(timeout=240) for p in processes]
    assert [p.returncode for p in processes] == [0] * starters, [err for _, err in outputs]
    results = [[json.loads(line) for line in out.splitlines()] for out, _ in outputs]
    for number, outcome in enumerate(zip(*results, strict=True)):
        assert [r.get("error") for r in outcome] == [None] * starters, (number, outcome)
        assert sorted(r["created"] for r in outcome) == [False] * (starters - 1) + [True], (number, outcome)


class _Watched(optuna.storages.JournalStorage):
    """A journal storage that, after each study user attr it writes, has a second storage on the same file read
    the study as a starter that joins it does: still waiting for the creator, or accepting the whole record."""

    def __init__(self, path: str, space) -> None:
        super().__init__(optuna.storages.journal.JournalFileBackend(path))
        self.path, self.space, self.accepted = path, space, []

    def set_study_user_attr(self, study_id: int, key: str, value) -> None:
        from normsearch.search import _check_compatible, _wait_for_creator

        super().set_study_user_attr(study_id, key, value)
        joiner = _journal(self.path, "pg")
        if _wait_for_creator(joiner, seconds=0):
            _check_compatible(joiner, self.space)  # raises IncompatibleStudy on a half-written record
            self.accepted.append(key)


def test_a_starter_that_reads_the_study_between_any_two_of_its_creators_writes_joins_it(
    tmp_path: Path,
) -> None:
    """The race behind the live test above, made certain: after every user attr the creator stores, a joiner
    reads the study. It must either wait (not prepared yet) or find every setting; it found ``probe``, took the
    study as prepared and refused it for a missing ``objectives_version``."""
    from normsearch.search import prepare
    from normsearch.space import load_space
    from normsearch.storage import StudyLocation

    (tmp_path / "s.yaml").write_text(SPACE)
    space, path = load_space(tmp_path / "s.yaml"), str(tmp_path / "j.log")
    watched = _Watched(path, space)

    class Location(StudyLocation):
        def open(self, create: bool = True):
            return watched

    assert prepare(space, Location("pg", tmp_path, path)).created
    assert watched.accepted == ["probe"]  # the last write, and the only one after which the study is whole
