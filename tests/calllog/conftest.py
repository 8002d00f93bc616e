"""Fixtures of the call log tests: a database path, a settable clock and an open log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from telebridge.calllog import CallLog
from tests.calllog.support import Clock


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "calls.db"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(db: Path, clock: Clock) -> Iterator[CallLog]:
    call_log = CallLog(db, clock=clock)
    yield call_log
    call_log.close()
