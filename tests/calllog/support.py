"""Shared helpers of the call log tests: a settable clock, a sample call, polling and
reading the database through a plain connection (SQLite or PostgreSQL)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
CALL: dict[str, Any] = {
    "carrier": "plivo",
    "call_id": "c-1",
    "direction": "inbound",
    "from_number": "+15550001111",
    "to_number": "+15550002222",
    "flow": "demo",
}
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])


class Clock:
    """A settable clock for the log, so times in assertions are exact."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def count(target: Path | str, sql: str) -> int:
    """Read through a separate plain connection, as another process would."""
    if isinstance(target, str):
        import psycopg

        with psycopg.connect(target) as pg:
            found = pg.execute(sql).fetchone()
            assert found is not None
            return int(found[0])
    conn = sqlite3.connect(target)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()
