"""A private, live PostgreSQL server for the tests and benchmarks: ``initdb`` + ``pg_ctl`` in a temporary folder.

The server binaries come from the ``pgserver`` wheel (the test extra installs it, so ``pip install -e
".[test]"`` is all a newcomer needs), or from ``$NORMSEARCH_PG_BIN`` / the ``pg_ctl`` on PATH. PostgreSQL
refuses to run as root: under root (CI) the cluster belongs to the user ``nobody`` and the binaries are copied
where that user can run them. ``pytest-postgresql`` is not used because it cannot start the server as
another user.

Roles: ``normsearch`` (no password, trusted on 127.0.0.1: the URLs the tests give to normsearch) and the
superuser ``postgres`` with password :data:`PASSWORD` (scram-sha-256), for the bad-credentials test.
Nothing here skips: a missing binary raises, so a CI without the server fails loudly.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

PASSWORD = "s3cret"
USER = "normsearch"


def _binaries() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    if os.environ.get("NORMSEARCH_PG_BIN"):
        return Path(os.environ["NORMSEARCH_PG_BIN"])
    spec = importlib.util.find_spec("pgserver")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (folder / "pg_ctl").is_file():
            return folder
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError(
        "no PostgreSQL server binaries: pip install -e '.[test]' (pgserver) or set NORMSEARCH_PG_BIN"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One server on 127.0.0.1:``port``; :meth:`database` makes a fresh empty database (a fresh schema)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="normsearch-pg-"))
        self.port = _free_port()
        self._as = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        bin_dir = _binaries()
        wheel_libs = bin_dir.parents[2] / "pgserver.libs"  # the wheel's RPATH: $ORIGIN/../../../pgserver.libs
        if (
            self._as is not None and wheel_libs.is_dir()
        ):  # nobody may not reach the venv (under /root): a copy
            install = self.root / "install"
            for part in ("bin", "lib", "share"):
                shutil.copytree(
                    bin_dir.parent / part, install / "pgserver" / "pginstall" / part, symlinks=True
                )
            shutil.copytree(wheel_libs, install / "pgserver.libs")
            bin_dir = install / "pgserver" / "pginstall" / "bin"
        self.bin = bin_dir
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.socket_dir.mkdir()
        if self._as is not None:
            os.chown(self.socket_dir, self._as.pw_uid, self._as.pw_gid)
        self._start()

    def _run(self, *args: str) -> None:
        kwargs = {}
        if self._as is not None:
            kwargs = {"user": self._as.pw_uid, "group": self._as.pw_gid, "extra_groups": []}
        result = subprocess.run(
            args, check=False, capture_output=True, text=True, cwd=self.root, timeout=120, **kwargs
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({result.returncode}): {result.stderr or result.stdout}"
            )

    def _start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as is not None:
            os.chown(pwfile, self._as.pw_uid, self._as.pw_gid)
            os.chown(self.root, self._as.pw_uid, self._as.pw_gid)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--no-locale",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        )
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            f"local all all trust\nhost all {USER} 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.socket_dir} "
            "-c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        self._sql(f"CREATE ROLE {USER} LOGIN CREATEDB")

    def _sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(statement)

    def database(self, driver: str = "psycopg") -> str:
        """A new empty database owned by ``normsearch``; its URL (``postgresql+DRIVER://…``)."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._sql(f"CREATE DATABASE {name} OWNER {USER}")
        return self.url(name, driver)

    def url(self, name: str, driver: str = "psycopg", user: str = USER, password: str | None = None) -> str:
        scheme = "postgresql" if driver == "" else f"postgresql+{driver}"
        credentials = user if password is None else f"{user}:{password}"
        return f"{scheme}://{credentials}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
