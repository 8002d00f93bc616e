"""Tests for opening the call log file: the schema, migrations and paths that cannot be used."""

from __future__ import annotations

import gc
import re
import sqlite3
import threading
from pathlib import Path

import pytest

from telebridge.calllog import CallLog, CallLogError
from telebridge.calllog.schema import SCHEMA_VERSION
from telebridge.settings import load_settings
from tests.calllog.support import CALL, Clock, count

# --- schema -------------------------------------------------------------------------------


def test_open_creates_the_schema_in_wal_mode_and_reopening_changes_nothing(db: Path) -> None:
    CallLog(db).close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        schema_before = conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()
    with CallLog(db) as again:
        again.start_call(**CALL).finish("hangup")
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == (
            schema_before
        )
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_two_logs_opening_a_new_database_at_once_both_succeed(target: Path | str) -> None:
    logs: list[CallLog] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            logs.append(CallLog(target))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for opened in logs:
        opened.close()
    assert errors == []
    assert len(logs) == 4


# The layout of an early prototype that never set user_version: no direction, hangup cause,
# duration or variables, and no events table.
PROTOTYPE = """
CREATE TABLE calls (id INTEGER PRIMARY KEY, carrier TEXT NOT NULL, call_id TEXT NOT NULL,
    from_number TEXT, to_number TEXT, flow TEXT, started_at TEXT, ended_at TEXT, outcome TEXT);
CREATE UNIQUE INDEX calls_key ON calls (carrier, call_id);
INSERT INTO calls VALUES (1, 'plivo', 'old-1', '+15550001111', '+15550002222', 'demo',
    '2024-04-01T10:00:00.000Z', '2024-04-01T10:01:00.000Z', 'hangup');
INSERT INTO calls VALUES (2, 'vonage', 'old-2', '+15550003333', '+15550004444', 'menu',
    '2024-04-02T10:00:00.000Z', NULL, NULL);
"""


def test_an_unversioned_prototype_file_is_migrated_without_losing_rows(
    db: Path, clock: Clock
) -> None:
    conn = sqlite3.connect(db)
    conn.executescript(PROTOTYPE)
    conn.close()
    with CallLog(db, clock=clock) as log:
        old = log.get("plivo", "old-1")
        assert old is not None
        assert (old.from_number, old.flow, old.outcome) == ("+15550001111", "demo", "hangup")
        assert (old.started_at, old.ended_at) == (
            "2024-04-01T10:00:00.000Z",
            "2024-04-01T10:01:00.000Z",
        )
        assert (old.steps, old.variables, old.hangup_cause, old.duration) == ([], {}, None, None)
        # The migrated file takes new records, also for a call it already held.
        log.record_hangup("vonage", "old-2", "completed", 61)
        log.start_call(**CALL).step_entered("menu")
        records = log.list_calls()
    assert [(r.call_id, r.steps) for r in records] == [
        ("old-1", []),
        ("old-2", []),
        ("c-1", ["menu"]),
    ]
    assert records[1].hangup_cause == "completed"
    assert records[1].duration == 61
    assert count(db, "PRAGMA user_version") == SCHEMA_VERSION
    assert count(db, "SELECT COUNT(*) FROM calls") == 3


def test_a_file_from_a_newer_telebridge_is_refused(db: Path) -> None:
    CallLog(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    assert re.match(r"TELEBRIDGE_DB: .*newer telebridge", refused(db))


# --- bad paths ----------------------------------------------------------------------------


def refused(path: Path) -> str:
    """The error opening `path`; then a collection, so a connection left open warns (3.13)."""
    with pytest.raises(CallLogError) as caught:
        CallLog(path)
    message = str(caught.value)
    del caught
    gc.collect()
    return message


def test_a_directory_is_refused_with_one_line_naming_the_setting(tmp_path: Path) -> None:
    message = refused(tmp_path)
    assert message.startswith("TELEBRIDGE_DB: ")
    assert "directory" in message
    assert "\n" not in message


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 50)
    message = refused(path)
    assert message.startswith("TELEBRIDGE_DB: ")
    assert "not an SQLite database" in message
    assert "\n" not in message
    assert path.read_text().startswith("these are my notes")  # left alone


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path / "nowhere" / "calls.db")
    assert re.match(r"TELEBRIDGE_DB: cannot create .*no folder", message)
    assert not (tmp_path / "nowhere").exists()


def test_from_settings_uses_telebridge_db(db: Path) -> None:
    with CallLog.from_settings(load_settings(telebridge_db=db)) as log:
        assert log.path == db
    assert db.exists()
