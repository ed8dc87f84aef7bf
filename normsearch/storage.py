"""Where studies live: ``<runs_dir>/<study>/``, with an Optuna storage that Optuna's own tools open as is.

Default storage: a journal file ``<runs_dir>/<study>/journal.log`` (``JournalStorage`` with a
``JournalFileBackend``; safe for several local processes). ``--storage`` takes any Optuna storage URL
(``sqlite:///x.db``, ``postgresql://…``; anything with ``://``) or a path to a journal file elsewhere; the
study directory then holds ``storage.txt`` pointing at it (not written for a URL with a password, which
must then be given again with ``--storage``).

Stale trials: a trial records the process that runs it (user attr ``worker`` = ``host:pid``). A RUNNING
trial whose process is gone (same host, pid not alive) was left by a killed run; :func:`fail_stale_trials`
marks it FAIL with ``fail_reason`` and ``interrupted`` = true, so resuming never waits on it and the trial
budget does not count it. RDB storages also get Optuna's heartbeat, which covers other hosts.
"""

from __future__ import annotations

import os
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState

from .journal import SafeJournalFileBackend

JOURNAL = "journal.log"
POINTER = "storage.txt"
LOCK_SUFFIX = ".lock"
"""Optuna's journal lock is ``<journal>`` + this (``JournalFileSymlinkLock``)."""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
HEARTBEAT_S = 60
"""Heartbeat of RDB storages: a RUNNING trial silent for 2 × this is failed by Optuna."""
LOCK_GRACE_S = 30
"""A journal lock left by a killed process is broken after it has been held this long (Optuna's default)."""


def worker_id() -> str:
    """``host:pid`` of this process (recorded on every trial it runs)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def check_name(name: str) -> str:
    """A study name must be a safe directory name; raises ValueError otherwise."""
    if not NAME.fullmatch(name):
        raise ValueError(f"study name {name[:60]!r}{'...' if len(name) > 60 else ''}: use 1 to 100 letters, digits, "
                         "'.', '_' or '-' (not starting with . _ -)")
    return name


def is_url(storage: str) -> bool:
    """Whether ``--storage`` names a database URL rather than a journal file path."""
    return "://" in storage


class StaleLock(ValueError):
    """A journal lock that Optuna can never break: a dangling link, left by a killed process."""


def make_storage(spec: str) -> BaseStorage:
    """The Optuna storage for a URL (RDB, with heartbeat) or a journal file path.

    A journal path is made absolute first. Optuna's lock is a symlink ``<journal>.lock`` → the journal path
    as given, and it breaks a lock left by a killed process by stat-ing that link: with a relative path the
    link dangles, the stat fails, and the next writer spins forever instead of breaking the lock after
    :data:`LOCK_GRACE_S`. Such a dangling link (left by a killed writer that used a relative path) raises
    :class:`StaleLock`, which says to delete it, rather than leaving the caller to spin on it.
    """
    if is_url(spec):
        with warnings.catch_warnings():  # heartbeat_interval is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(spec, heartbeat_interval=HEARTBEAT_S)
    path = str(Path(spec).expanduser().resolve())
    lock = Path(path + LOCK_SUFFIX)
    if lock.is_symlink() and not lock.exists():
        raise StaleLock(
            f"{lock}: a lock left by a killed process (a dangling link that Optuna cannot break); "
            "delete it if no other process is writing this study"
        )
    return JournalStorage(SafeJournalFileBackend(path, JournalFileSymlinkLock(path, LOCK_GRACE_S)))


@dataclass(frozen=True)
class StudyLocation:
    """A study's name, its directory, and its storage (URL or journal path)."""

    name: str
    directory: Path
    storage: str

    def open(self) -> BaseStorage:
        return make_storage(self.storage)


def locate(name: str, runs_dir: str | Path = "runs", storage: str | None = None) -> StudyLocation:
    """Where study ``name`` lives: ``storage`` if given, else its directory's journal or storage.txt.

    For a new study without ``storage`` this is the default journal path (nothing is created here).
    """
    directory = Path(runs_dir) / check_name(name)
    if storage is not None:
        return StudyLocation(name, directory, storage)
    pointer = directory / POINTER
    if pointer.is_file() and not (directory / JOURNAL).exists():
        return StudyLocation(name, directory, pointer.read_text(encoding="utf-8").strip())
    return StudyLocation(name, directory, str(directory / JOURNAL))


def _remember(location: StudyLocation) -> None:
    """Create the study directory; for a storage elsewhere, write the pointer to it (never a password)."""
    location.directory.mkdir(parents=True, exist_ok=True)
    default = location.directory / JOURNAL
    if Path(location.storage) == default:
        return
    if is_url(location.storage) and urlsplit(location.storage).password:
        return
    target = location.storage if is_url(location.storage) else str(Path(location.storage).resolve())
    (location.directory / POINTER).write_text(target + "\n", encoding="utf-8")


def create_or_load(location: StudyLocation, directions: list[str]) -> tuple[optuna.Study, bool]:
    """The study at ``location``, created with ``directions`` if new. Returns (study, created)."""
    _remember(location)
    storage = location.open()
    created = location.name not in {s.study_name for s in optuna.get_all_study_summaries(storage)}
    study = optuna.create_study(
        study_name=location.name, storage=storage, directions=directions, load_if_exists=True
    )
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


def open_study(name: str | None, runs_dir: str | Path = "runs", storage: str | None = None) -> optuna.Study:
    """Load an existing study; ``name`` None picks the most recently modified one under ``runs_dir``.

    Raises ValueError naming the known studies if it does not exist.
    """
    if name is None:
        names = study_names(runs_dir)
        if not names:
            raise ValueError(f"no studies under {runs_dir}/: run `normsearch run --space FILE` first")
        name = names[0][0]
    location = locate(name, runs_dir, storage)
    if not is_url(location.storage) and not Path(location.storage).is_file():
        known = ", ".join(n for n, _ in study_names(runs_dir)) or "none"
        raise ValueError(f"no study {name!r} under {runs_dir}/ (studies there: {known})")
    try:
        return optuna.load_study(study_name=name, storage=location.open())
    except KeyError:
        raise ValueError(f"storage {location.storage} holds no study {name!r}") from None


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
    worker = trial.user_attrs.get("worker")
    if not isinstance(worker, str) or ":" not in worker:
        return True  # popped but never started by a normsearch worker
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
        reason = f"interrupted: process {trial.user_attrs.get('worker', '?')} stopped while running it"
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            failed.append(trial.number)
    return failed


__all__ = [
    "JOURNAL",
    "StaleLock",
    "StudyLocation",
    "check_name",
    "create_or_load",
    "fail_stale_trials",
    "is_stale",
    "locate",
    "make_storage",
    "open_study",
    "study_names",
    "worker_id",
]
