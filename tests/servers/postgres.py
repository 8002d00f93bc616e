"""A private PostgreSQL for the tests: one server per session, a fresh database per test.

The server comes from Debian's `postgresql` package (`/usr/lib/postgresql/<version>/bin`). The
tests run as root, which PostgreSQL refuses, so the cluster belongs to the `postgres` user and its
tools run through `runuser`. It listens on 127.0.0.1 only, on a free port, with trust
authentication and `fsync=off` (nothing here must survive a power cut). Without the binaries the
tests fail, naming the package: a missing PostgreSQL is a broken machine, not a reason to skip.

tests/conftest.py loads this module as a plugin, so every test may ask for `postgres_server` or
`pg_url`; the server starts only for a session that has such a test.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "pg_url", "postgres_server"]

_USER = "postgres"


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if not found:
        pytest.fail(
            "PostgreSQL is not installed: install the Debian package `postgresql` "
            "(apt-get install postgresql); .ci/run does this",
            pytrace=False,
        )
    return Path(found[-1]).parent


def _version(initdb: str) -> int:
    return int(Path(initdb).parts[-3]) if Path(initdb).parts[-3].isdigit() else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One private cluster in a temporary folder; `stop()` and `start()` for fault tests."""

    def __init__(self) -> None:
        self.bin = _binaries()
        self.port = _free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="telebridge-pg-"))
        self.data = self.folder / "data"
        self.logfile = self.folder / "server.log"
        self.running = False
        account = pwd.getpwnam(_USER)
        os.chown(self.folder, account.pw_uid, account.pw_gid)
        self._as_postgres(
            "initdb", "-D", str(self.data), "-U", _USER, "-A", "trust", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        # Trust on the loopback address only: no Unix socket, no other host.
        (self.data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")

    def _as_postgres(self, tool: str, *args: str) -> None:
        command = ["runuser", "-u", _USER, "--", str(self.bin / tool), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            pytest.fail(f"{tool} failed: {result.stdout}{result.stderr}{log}", pytrace=False)

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        user = _USER if password is None else f"{_USER}:{password}"
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -c unix_socket_directories='' -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w", "start"
        )
        self.running = True

    def stop(self) -> None:
        """A fast shutdown: sessions are ended at once, as when the database server goes away."""
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.running = False

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self) -> None:
        if self.running:
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh database on the session's server, running again after the test."""
    url = postgres_server.create_database()
    yield url
    if not postgres_server.running:  # a fault test that failed before restarting it
        postgres_server.start()
    postgres_server.drop_database(url)
