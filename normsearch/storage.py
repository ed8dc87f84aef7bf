"""Where studies live: ``<runs_dir>/<study>/``, with an Optuna storage that Optuna's own tools open as is.

Default storage: a journal file ``<runs_dir>/<study>/journal.log`` (``JournalStorage`` with a
``JournalFileBackend``; safe for several local processes). ``--storage`` takes any SQLAlchemy URL that Optuna
supports (``sqlite:///x.db``, ``postgresql://…``, ``mysql+pymysql://…``; anything with ``://``) or a path to a
journal file elsewhere; once it opened, the study directory holds ``storage.txt`` pointing at it (not
written for a URL with a password, which must then be given again with ``--storage``).

A storage that cannot be opened (unknown database, missing driver, unreachable server, bad credentials, a
directory, a missing file when reading) raises :class:`StorageError`: one line naming the URL, its password
masked, and the fix. ``postgresql://`` without a driver takes psycopg (3) if installed, else psycopg2.
Several processes may create the schema of a fresh database at once (the losers' duplicate-key errors are
retried).

Stale trials: a trial records the process that runs it (user attr ``worker`` = ``host:pid``). A RUNNING
trial whose process is gone (same host, pid not alive) was left by a killed run; :func:`fail_stale_trials`
marks it FAIL with ``fail_reason`` and ``interrupted`` = true, so resuming never waits on it and the trial
budget does not count it. RDB storages also get Optuna's heartbeat, which covers other hosts: a RUNNING trial
whose process stopped beating for 2 × ``heartbeat`` seconds is failed by the next worker that starts a trial
(:func:`fail_silent_trials`), with ``fail_reason`` "interrupted: worker host:pid stopped sending heartbeats"
and ``interrupted`` = true (:class:`HeartbeatStorage`), and a copy with the same parameters and user attrs is
enqueued (Optuna's ``RetryHeartbeatStaleTrialCallback``, less the failed run's own attrs: :class:`RetryStale`),
so it is retried. Work that runs outside ``Study.optimize`` beats with :func:`heartbeat_thread`. On PostgreSQL
a worker frozen inside a transaction loses its session after the grace period, so its row locks never block
the others (:func:`_engine_kwargs`).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import os
import random
import re
import socket
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeatThread, get_heartbeat_thread
from optuna.storages.journal import JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState

from .journal import SafeJournalFileBackend
from .records import TrialRecord, check_schema, write

JOURNAL = "journal.log"
POINTER = "storage.txt"
LOCK_SUFFIX = ".lock"
"""Optuna's journal lock is ``<journal>`` + this (``JournalFileSymlinkLock``)."""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
HEARTBEAT_S = 60
"""Heartbeat of RDB storages: a RUNNING trial silent for 2 × this is failed by Optuna and retried."""
IDLE_IN_TRANSACTION_S = 10
"""PostgreSQL ends a session idle inside a transaction for 2 × heartbeat, and never sooner than this."""
LOCK_GRACE_S = 30
"""A journal lock left by a killed process is broken after it has been held this long (Optuna's default)."""
UNOWNED_GRACE_S = 60
"""A RUNNING trial that no worker has put its name on (user attr ``worker``) is stale after this long: a
process popped it and died at once. Younger ones are being started by another process right now."""
COMPANION_SUFFIX = ".confirm"
"""Study S's confirmation work units live in the study S + this (normsearch.confirm.units), on S's storage;
listings of a storage's studies leave such companions out."""
SCHEMA_TRIES = 8
"""Attempts at opening an RDB storage while other processes create its schema."""
DRIVERS = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "pg8000": "pg8000",
    "MySQLdb": "mysqlclient",
    "pymysql": "pymysql",
    "mysql": "mysql-connector-python",
    "oracledb": "oracledb",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}
"""The pip package that provides each DB-API module SQLAlchemy imports (shown in the missing-driver error)."""


class StorageError(ValueError):
    """A storage that cannot be opened; the message names it (password masked) and says how to fix it."""


class StaleLock(StorageError):
    """A journal lock that Optuna can never break: a dangling link, left by a killed process."""


def worker_id() -> str:
    """``host:pid`` of this process (recorded on every trial it runs)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def check_name(name: str) -> str:
    """A study name must be a safe directory name; raises ValueError otherwise."""
    if not NAME.fullmatch(name):
        raise ValueError(
            f"study name {name[:60]!r}{'...' if len(name) > 60 else ''}: use 1 to 100 letters, digits, "
            "'.', '_' or '-' (not starting with . _ -)"
        )
    return name


def is_url(storage: str) -> bool:
    """Whether ``--storage`` names a database URL rather than a journal file path."""
    return "://" in storage


def masked(storage: str) -> str:
    """``storage`` as it may be shown: a URL's password replaced by ``***``."""
    if not is_url(storage):
        return storage
    from sqlalchemy.engine import make_url

    try:
        return make_url(storage).render_as_string(hide_password=True)
    except (ValueError, ImportError):  # not parseable: keep the scheme and host, drop what may be a secret
        return re.sub(r"//[^@/]*@", "//***@", storage)


def database_url(url: str, where: str = "--storage") -> str:
    """``url`` with a DB-API driver that is installed, or :class:`StorageError` naming the fix.

    A bare ``postgresql://`` means psycopg (3) to SQLAlchemy 2.1; with only psycopg2 installed it becomes
    ``postgresql+psycopg2://``. ``where`` names the origin in messages (``--storage`` or a pointer file).
    """
    import sqlalchemy.dialects
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = masked(url)
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        scheme = url.split("://", 1)[0]
        close = difflib.get_close_matches(scheme.split("+")[0], sqlalchemy.dialects.__all__, n=1)
        hint = f"did you mean {close[0]}://? " if close else ""
        raise StorageError(
            f"{where} {shown}: unknown database {scheme!r}; {hint}Optuna takes sqlite:///FILE, postgresql://, "
            "mysql://, oracle://, mssql:// URLs, or a journal file path"
        ) from None
    except (ArgumentError, ValueError) as err:
        raise StorageError(
            f"{where} {shown}: not a database URL ({err}); write "
            "dialect[+driver]://user:password@host:port/database"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        if parsed.drivername == "postgresql":
            try:
                fallback = parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
                return database_url(fallback, where)
            except StorageError:
                pass
        module = (err.name or "").split(".")[0] or parsed.get_driver_name()
        package = DRIVERS.get(module, module)
        raise StorageError(
            f"{where} {shown}: the database driver {module!r} is not installed: pip install '{package}'"
            + (
                " (or pip install 'normsearch[postgres]')"
                if parsed.get_backend_name() == "postgresql"
                else ""
            )
        ) from None
    return url


def _connect_fix(reason: str) -> str:
    text = reason.lower()
    if "password" in text or "authentication" in text or "access denied" in text:
        return "check the user name and password in the URL"
    if "does not exist" in text or "unknown database" in text:
        return "create the database first (e.g. createdb NAME), or fix its name in the URL"
    if "unable to open database file" in text:
        return "the file's folder must exist and be writable"
    return "is the server running, and are the host and port in the URL right?"


RUN_ATTRS = ("fail_reason", "interrupted", "worker")
"""User attrs of one run of a trial (who ran it, why it stopped), not carried over to its retry."""


class HeartbeatStorage(RDBStorage):
    """Optuna's RDB storage, whose heartbeat-stale trials get a reason before Optuna fails them.

    Optuna's ``fail_stale_trials`` asks :meth:`_get_stale_trial_ids` which RUNNING trials have been silent
    for longer than the grace period (2 × ``heartbeat_interval``), then fails them; a finished trial's attrs
    can no longer be set, so they are set here: ``fail_reason`` = "interrupted: worker host:pid stopped sending
    heartbeats (silent over G s)" and ``interrupted`` = true.
    """

    def record_heartbeat(self, trial_id: int) -> None:
        """Optuna's beat, skipped when the database fails it (the server ended this thread's session, a network
        hiccup): the next beat takes a new connection, where an exception would end the heartbeat thread."""
        with contextlib.suppress(optuna.exceptions.StorageInternalError):
            super().record_heartbeat(trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        for trial_id in stale:
            worker = self.get_trial(trial_id).user_attrs.get("worker", "?")
            with contextlib.suppress(UpdateFinishedTrialError):  # failed by another process meanwhile
                self.set_trial_user_attr(
                    trial_id,
                    "fail_reason",
                    f"interrupted: worker {worker} stopped sending heartbeats (silent over {grace} s)",
                )
                self.set_trial_user_attr(trial_id, "interrupted", True)
        return stale


class RetryStale(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a heartbeat-stale trial (a WAITING copy with its parameters, user and system attrs,
    ``failed_trial`` = its number), without the failed run's :data:`RUN_ATTRS`."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial = copy.copy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in RUN_ATTRS}
        super().__call__(study, trial)


def fail_silent_trials(study: optuna.Study) -> None:
    """Optuna's heartbeat check on ``study``: RUNNING trials silent for longer than the grace period are failed
    (with their reason: :class:`HeartbeatStorage`) and retried (:class:`RetryStale`). A no-op on storages
    without heartbeat (the journal)."""
    with warnings.catch_warnings():  # marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def heartbeat_thread(study: optuna.Study, trial_id: int) -> BaseHeartbeatThread:
    """Optuna's heartbeat thread for a trial run outside ``Study.optimize`` (a context manager: it records a
    beat at once, then every ``heartbeat_interval`` seconds until the block ends); a no-op without heartbeat."""
    return get_heartbeat_thread(trial_id, study._storage)


def _engine_kwargs(url: str, heartbeat: int) -> dict:
    """SQLAlchemy engine options. PostgreSQL: the server ends a session that idles inside a transaction for
    longer than the heartbeat grace period, 2 × ``heartbeat`` s (at least :data:`IDLE_IN_TRANSACTION_S`). A worker
    suspended between two statements of a transaction (a stopped process, a hung machine) would otherwise keep its
    row locks, e.g. the trial row that its heartbeat insert's foreign key locks, and every worker that tries to
    fail its silent trial would wait on it forever. Optuna's transactions last milliseconds."""
    from sqlalchemy.engine import make_url

    if make_url(url).get_backend_name() != "postgresql":
        return {}
    idle_ms = 1000 * max(2 * heartbeat, IDLE_IN_TRANSACTION_S)
    return {"connect_args": {"options": f"-c idle_in_transaction_session_timeout={idle_ms}"}}


def _open_rdb(url: str, where: str, create: bool, heartbeat: int) -> RDBStorage:
    """An RDB storage with heartbeat; retries while another process creates the schema of a fresh database."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

    url = database_url(url, where)
    if url.startswith("sqlite") and not create:
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        if database and database != ":memory:" and not Path(database).is_file():
            raise StorageError(f"{where} {url}: no such file {database}")
    for attempt in range(SCHEMA_TRIES):
        try:
            with warnings.catch_warnings():  # heartbeat_interval is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return HeartbeatStorage(
                    url,
                    engine_kwargs=_engine_kwargs(url, heartbeat),
                    heartbeat_interval=heartbeat,
                    heartbeat_stale_trial_callback=RetryStale(max_retry=3),
                    skip_table_creation=not create,
                )
        except (
            IntegrityError,
            ProgrammingError,
        ) as err:  # a concurrent CREATE TABLE / alembic_version insert
            if not create:
                raise StorageError(
                    f"{where} {masked(url)}: holds no Optuna studies (no Optuna tables)"
                ) from None
            if attempt == SCHEMA_TRIES - 1:
                raise StorageError(
                    f"{where} {masked(url)}: cannot create the Optuna tables: "
                    f"{str(err.orig or err).strip().splitlines()[0]}"
                ) from None
            time.sleep(0.2 + random.random() * 0.5)
        except (OperationalError, optuna.exceptions.StorageInternalError) as err:
            # Optuna wraps a failed first query (no tables to create: reading) in StorageInternalError,
            # whose own text blames "invalid data in the commit": the cause is what went wrong
            cause = err.__cause__ if isinstance(err, optuna.exceptions.StorageInternalError) else err
            if not isinstance(cause, OperationalError):
                raise StorageError(
                    f"{where} {masked(url)}: {str(cause or err).strip().splitlines()[0]}"
                ) from None
            reason = (
                str(cause.orig or cause).strip().splitlines()[0]
                if str(cause.orig or cause).strip()
                else "failed"
            )
            raise StorageError(
                f"{where} {masked(url)}: cannot connect: {reason}; {_connect_fix(reason)}"
            ) from None
        except SQLAlchemyError as err:
            raise StorageError(
                f"{where} {masked(url)}: {type(err).__name__}: {str(err).splitlines()[0]}"
            ) from None
    raise AssertionError("unreachable")


def dangling_lock(lock: Path) -> bool:
    """Whether ``lock`` is a link whose target does not exist. The link is read once: a live writer may
    release (unlink) its lock between two checks, which must not read as a dangling link."""
    try:
        target = os.readlink(lock)
    except OSError:  # no lock, or not a link: nothing to break
        return False
    return not (lock.parent / target).exists()


def make_storage(
    spec: str, *, create: bool = True, heartbeat: int = HEARTBEAT_S, where: str = "--storage"
) -> BaseStorage:
    """The Optuna storage for a URL (RDB, with heartbeat) or a journal file path; :class:`StorageError` if it
    cannot be opened. ``create`` False: reading only, so a missing file or database is an error, not created.

    A journal path is made absolute first. Optuna's lock is a symlink ``<journal>.lock`` → the journal path
    as given, and it breaks a lock left by a killed process by stat-ing that link: with a relative path the
    link dangles, the stat fails, and the next writer spins forever instead of breaking the lock after
    :data:`LOCK_GRACE_S`. Such a dangling link (left by a killed writer that used a relative path) raises
    :class:`StaleLock`, which says to delete it, rather than leaving the caller to spin on it.
    """
    if is_url(spec):
        return _open_rdb(spec, where, create, heartbeat)
    path = Path(spec).expanduser().resolve()
    if path.is_dir():
        raise StorageError(
            f"{where} {spec}: is a directory; give a journal file path (e.g. {spec.rstrip('/')}/"
            f"{JOURNAL}) or a database URL"
        )
    if not path.parent.is_dir():
        raise StorageError(
            f"{where} {spec}: directory {path.parent} does not exist (a journal file path or a database URL)"
        )
    if not create and not path.is_file():
        raise StorageError(f"{where} {spec}: no such journal file")
    lock = Path(str(path) + LOCK_SUFFIX)
    if dangling_lock(lock):
        raise StaleLock(
            f"{lock}: a lock left by a killed process (a dangling link that Optuna cannot break); "
            "delete it if no other process is writing this study"
        )
    return JournalStorage(SafeJournalFileBackend(str(path), JournalFileSymlinkLock(str(path), LOCK_GRACE_S)))


@dataclass(frozen=True)
class StudyLocation:
    """A study's name, its directory, and its storage (URL or journal path).

    ``pointer``: the ``storage.txt`` the storage was read from, if any (named in errors, with the fix).
    ``heartbeat``: seconds between heartbeats on RDB storages.
    """

    name: str
    directory: Path
    storage: str
    pointer: Path | None = None
    heartbeat: int = HEARTBEAT_S

    def open(self, create: bool = True) -> BaseStorage:
        default = (
            Path(self.storage) == self.directory / JOURNAL
        )  # the study's own journal: no --storage given
        if default and Path(self.storage).is_dir():
            raise StorageError(
                f"{self.storage}: is a directory, where study {self.name!r} keeps its journal file: move it "
                "away, or use another --study name or --runs-dir"
            )
        if self.pointer is None:
            return make_storage(self.storage, create=create, heartbeat=self.heartbeat)
        try:
            return make_storage(
                self.storage, create=create, heartbeat=self.heartbeat, where=f"{self.pointer} →"
            )
        except StorageError as err:
            raise StorageError(f"{err} (fix or delete {self.pointer}, or pass --storage)") from None


def locate(
    name: str, runs_dir: str | Path = "runs", storage: str | None = None, heartbeat: int = HEARTBEAT_S
) -> StudyLocation:
    """Where study ``name`` lives: ``storage`` if given, else its directory's journal or storage.txt.

    For a new study without ``storage`` this is the default journal path (nothing is created here).
    """
    directory = Path(runs_dir) / check_name(name)
    if storage is not None:
        return StudyLocation(name, directory, storage, heartbeat=heartbeat)
    pointer = directory / POINTER
    if pointer.is_file() and not (directory / JOURNAL).exists():
        target = pointer.read_text(encoding="utf-8", errors="replace").strip()
        return StudyLocation(name, directory, target, pointer=pointer, heartbeat=heartbeat)
    return StudyLocation(name, directory, str(directory / JOURNAL), heartbeat=heartbeat)


def _remember(location: StudyLocation) -> None:
    """Create the study directory; for a storage elsewhere, write the pointer to it (never a password)."""
    location.directory.mkdir(parents=True, exist_ok=True)
    if Path(location.storage) == location.directory / JOURNAL:
        return
    target = str(Path(location.storage).resolve())
    if is_url(location.storage):
        from sqlalchemy.engine import make_url

        url = make_url(location.storage)
        if url.password:
            return
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            url = url.set(database=str(Path(url.database).resolve()))  # a later command may run elsewhere
        target = url.render_as_string(hide_password=False)
    (location.directory / POINTER).write_text(target + "\n", encoding="utf-8")


def create_or_load(location: StudyLocation, directions: list[str]) -> tuple[optuna.Study, bool]:
    """The study at ``location``, created with ``directions`` if new. Returns (study, created).

    Safe when several processes start at once: exactly one of them creates the study. The study directory
    and the pointer file are written only once the storage opened.
    """
    if Path(location.storage) == location.directory / JOURNAL:
        location.directory.mkdir(parents=True, exist_ok=True)
    storage = location.open()
    try:
        study = optuna.create_study(study_name=location.name, storage=storage, directions=directions)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=location.name, storage=storage)
        created = False
    _remember(location)
    if list(map(str.lower, (d.name for d in study.directions))) != [d.lower() for d in directions]:
        raise ValueError(f"study {location.name!r} exists with other objectives: not a normsearch study?")
    return study, created


def study_names(runs_dir: str | Path = "runs") -> list[tuple[str, float]]:
    """(name, last modified) of each study directory under ``runs_dir``, newest first."""
    root = Path(runs_dir)
    found = []
    for directory in root.iterdir() if root.is_dir() else ():
        for marker in (directory / JOURNAL, directory / POINTER):
            if marker.is_file() and NAME.fullmatch(directory.name):
                found.append((directory.name, marker.stat().st_mtime))
                break
    return sorted(found, key=lambda item: -item[1])


def stored_study_names(storage: str, heartbeat: int = HEARTBEAT_S) -> list[str]:
    """The names of the search studies in ``storage`` (a URL or journal path, which must exist): companions
    (:data:`COMPANION_SUFFIX`) left out."""
    summaries = optuna.get_all_study_summaries(make_storage(storage, create=False, heartbeat=heartbeat))
    return [s.study_name for s in summaries if not s.study_name.endswith(COMPANION_SUFFIX)]


def open_study(
    name: str | None, runs_dir: str | Path = "runs", storage: str | None = None, heartbeat: int = HEARTBEAT_S
) -> optuna.Study:
    """Load an existing study (never creating a file, a database or tables).

    ``name`` None: the only study in ``storage`` if given, else the most recently modified one under
    ``runs_dir``. ``heartbeat``: seconds between heartbeats on RDB storages. Raises ValueError
    (:class:`StorageError` for the storage itself) naming the known studies,
    :class:`~normsearch.records.IncompatibleStudy` for records of a schema this normsearch does not read.
    """
    if name is None and storage is not None:
        names = stored_study_names(storage, heartbeat)
        if len(names) != 1:
            listed = ", ".join(names) if names else "none"
            raise ValueError(f"--storage {masked(storage)} holds {len(names)} studies ({listed}): name one")
        name = names[0]
    if name is None:
        names = [n for n, _ in study_names(runs_dir)]
        if not names:
            raise ValueError(f"no studies under {runs_dir}/: run `normsearch run --space FILE` first")
        name = names[0]
    location = locate(name, runs_dir, storage, heartbeat)
    if storage is None and location.pointer is None and not Path(location.storage).is_file():
        known = ", ".join(n for n, _ in study_names(runs_dir)) or "none"
        raise ValueError(f"no study {name!r} under {runs_dir}/ (studies there: {known})")
    try:
        study = optuna.load_study(study_name=name, storage=location.open(create=False))
    except KeyError:
        raise ValueError(f"storage {masked(location.storage)} holds no study {name!r}") from None
    check_schema(study)
    return study


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def is_stale(trial: FrozenTrial, host: str | None = None) -> bool:
    """Whether a RUNNING trial was left by a process that no longer runs on this host."""
    if trial.state != TrialState.RUNNING:
        return False
    worker = TrialRecord.of(trial).worker
    if (
        not isinstance(worker, str) or ":" not in worker
    ):  # popped, and not (yet) started by a normsearch worker
        started = trial.datetime_start or datetime.now()
        return (datetime.now() - started).total_seconds() > UNOWNED_GRACE_S
    worker_host, _, pid = worker.rpartition(":")
    if worker_host != (host or socket.gethostname()) or not pid.isdigit():
        return False
    return not _pid_alive(int(pid))


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials of dead local processes FAIL (with ``fail_reason``); returns their numbers."""
    storage = study._storage  # the storage object Optuna's own fail_stale_trials also works on
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(trial):
            continue
        reason = f"interrupted: process {TrialRecord.of(trial).worker or '?'} stopped while running it"
        write(partial(storage.set_trial_user_attr, trial._trial_id), fail_reason=reason, interrupted=True)
        if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            failed.append(trial.number)
    return failed


__all__ = [
    "COMPANION_SUFFIX",
    "HEARTBEAT_S",
    "JOURNAL",
    "HeartbeatStorage",
    "RetryStale",
    "StaleLock",
    "StorageError",
    "StudyLocation",
    "check_name",
    "create_or_load",
    "database_url",
    "fail_silent_trials",
    "fail_stale_trials",
    "heartbeat_thread",
    "is_stale",
    "locate",
    "make_storage",
    "masked",
    "open_study",
    "stored_study_names",
    "study_names",
    "worker_id",
]
