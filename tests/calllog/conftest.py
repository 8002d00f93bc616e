"""Fixtures of the call log tests: a database on each backend (an SQLite path, a fresh
PostgreSQL database), a settable clock and an open log.

Tests taking `log` or `target` run on both backends; `SQLITE_ONLY` (tests/calllog/support.py)
keeps one to SQLite, and `db` is always an SQLite file's path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from telebridge.calllog import CallLog
from tests.calllog.support import Clock


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "calls.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def target(backend: str, request: pytest.FixtureRequest) -> Path | str:
    """Where the log lives: the `db` path, or the URL of a fresh PostgreSQL database."""
    if backend == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return Path(request.getfixturevalue("db"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(target: Path | str, clock: Clock) -> Iterator[CallLog]:
    call_log = CallLog(target, clock=clock)
    yield call_log
    call_log.close()
