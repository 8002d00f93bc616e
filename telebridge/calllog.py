"""The durable call log: each call's steps, keys, variables and end, in an embedded SQLite file.

Recording never blocks the event loop. `CallLog.start_call()` returns a `CallRecorder` whose
methods only stamp the time and put a row on a queue. One background thread owns the write
connection and commits, in order, whatever is queued as soon as it arrives (one transaction per
batch), so a record is on disk within milliseconds and a crash of the server loses nothing
already recorded. `flush()` waits until the queue is written; `close()` flushes and stops the
thread. Reads (`get`, `list_calls`) wait for this log's own pending writes, then read through a
second connection: they touch the disk, so async code calls them via `asyncio.to_thread`.

The file is shared: the server writes while `telebridge calls` and the campaign runner read from
other processes. WAL journaling lets readers and the writer work at once; a busy timeout rides
out another process's short write lock. The schema version is `PRAGMA user_version`; forward-only
migrations (they add, never drop) run on open.

A call is one `calls` row, unique per (carrier, call_id), plus its ordered `call_events`. Times
are ISO-8601 UTC with milliseconds, e.g. `2024-05-01T09:30:00.250Z`. The keys of successive
gathers are joined with "," in `CallRecord.digits` ("1,4321#" is a menu choice, then a PIN).
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import logging
import queue
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from telebridge.settings import Settings

__all__ = [
    "NO_STREAM",
    "SCHEMA_VERSION",
    "CallLog",
    "CallLogError",
    "CallRecord",
    "CallRecorder",
    "format_table",
    "parse_since",
    "to_csv",
    "to_json_lines",
]

logger = logging.getLogger(__name__)

# Outcome of a call the carrier reported ended before any stream started (busy, no answer, ...).
NO_STREAM = "no-stream"
BUSY_TIMEOUT_S = 5.0
_MAX_BATCH = 500  # rows per transaction: keeps one commit short when a backlog built up
EventKind = Literal["step", "digits", "vars", "webhook", "note"]


class CallLogError(Exception):
    """The call log file cannot be used; the message names TELEBRIDGE_DB and what is wrong."""


# --- schema -------------------------------------------------------------------------------

# The current columns of `calls` besides `id`. Migration 1 adds any of them that a table made
# before versioning (user_version 0) lacks, so such a file is adopted with its rows.
_CALL_COLUMNS = {
    "carrier": "TEXT NOT NULL DEFAULT ''",
    "call_id": "TEXT NOT NULL DEFAULT ''",
    "direction": "TEXT",
    "from_number": "TEXT",
    "to_number": "TEXT",
    "flow": "TEXT",
    "started_at": "TEXT",
    "ended_at": "TEXT",
    "outcome": "TEXT",
    "hangup_cause": "TEXT",
    "duration": "REAL",
    "variables": "TEXT NOT NULL DEFAULT '{}'",
}
_WHEN = "COALESCE(started_at, ended_at)"  # a call that never streamed sorts by its end


def _v1(conn: sqlite3.Connection) -> None:
    columns = ", ".join(f"{name} {decl}" for name, decl in _CALL_COLUMNS.items())
    conn.execute(f"CREATE TABLE IF NOT EXISTS calls (id INTEGER PRIMARY KEY, {columns})")
    have = {row[1] for row in conn.execute("PRAGMA table_info(calls)")}
    for name, decl in _CALL_COLUMNS.items():
        if name not in have:
            conn.execute(f"ALTER TABLE calls ADD COLUMN {name} {decl}")
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS calls_key ON calls (carrier, call_id)")
    conn.execute(f"CREATE INDEX IF NOT EXISTS calls_when ON calls ({_WHEN})")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS call_events ("
        " call INTEGER NOT NULL REFERENCES calls (id), seq INTEGER NOT NULL,"
        " at TEXT NOT NULL, kind TEXT NOT NULL, step TEXT, data TEXT NOT NULL DEFAULT '{}',"
        " PRIMARY KEY (call, seq))"
    )


# Append only: entry N takes a file from user_version N to N + 1.
_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1,)
SCHEMA_VERSION = len(_MIGRATIONS)


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit mode: transactions are begun explicitly. The connection moves to the writer
    # thread after the migrations, which is why it may be used from another thread.
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable across app crashes
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode = WAL")  # persistent: set once per file
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return  # the common case takes no write lock
    conn.execute("BEGIN IMMEDIATE")  # another process may be migrating the same file
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise CallLogError(
                f"TELEBRIDGE_DB: {path} was written by a newer telebridge "
                f"(schema {version}, this one knows {SCHEMA_VERSION}); upgrade telebridge"
            )
        for number in range(version, SCHEMA_VERSION):
            _MIGRATIONS[number](conn)
            conn.execute(f"PRAGMA user_version = {number + 1}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if version < SCHEMA_VERSION:
        logger.info("call log %s: schema %d -> %d", path, version, SCHEMA_VERSION)


def _stamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive times are taken as UTC
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- queued writes ------------------------------------------------------------------------

_Key = tuple[str, str]  # (carrier, call_id)


@dataclass(frozen=True, slots=True)
class _Start:
    key: _Key
    at: datetime
    direction: str
    from_number: str
    to_number: str
    flow: str
    variables: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Event:
    key: _Key
    at: datetime
    kind: EventKind
    step: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Finish:
    key: _Key
    at: datetime
    outcome: str


@dataclass(frozen=True, slots=True)
class _Hangup:
    key: _Key
    at: datetime
    cause: str | None
    duration: float | None
    direction: str | None
    from_number: str | None
    to_number: str | None


@dataclass(frozen=True, slots=True)
class _Flush:
    done: threading.Event


_Write = _Start | _Event | _Finish | _Hangup
_Op = _Write | _Flush | None  # None stops the writer


def _row(conn: sqlite3.Connection, key: _Key) -> int:
    """The row id of a call, creating a bare row for a call not seen yet."""
    found = conn.execute("SELECT id FROM calls WHERE carrier = ? AND call_id = ?", key).fetchone()
    if found is not None:
        return int(found[0])
    cursor = conn.execute("INSERT INTO calls (carrier, call_id) VALUES (?, ?)", key)
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _add_event(
    conn: sqlite3.Connection, row: int, at: datetime, kind: str, step: str | None, data: object
) -> None:
    conn.execute(
        "INSERT INTO call_events (call, seq, at, kind, step, data) VALUES"
        " (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM call_events WHERE call = ?), ?, ?, ?, ?)",
        (row, row, _stamp(at), kind, step, json.dumps(data, default=str, ensure_ascii=False)),
    )


def _merge_vars(conn: sqlite3.Connection, row: int, values: dict[str, str]) -> None:
    stored = _load_json(conn.execute("SELECT variables FROM calls WHERE id = ?", (row,)).fetchone()[0])
    stored.update(values)
    conn.execute(
        "UPDATE calls SET variables = ? WHERE id = ?",
        (json.dumps(stored, default=str, ensure_ascii=False), row),
    )


def _apply(conn: sqlite3.Connection, op: _Write) -> None:
    row = _row(conn, op.key)
    if isinstance(op, _Start):
        restarted = conn.execute("SELECT started_at FROM calls WHERE id = ?", (row,)).fetchone()[0]
        # A reconnect continues the row. The call is live again unless the carrier already
        # reported its end; a row made by that report alone loses its "no-stream" outcome.
        conn.execute(
            "UPDATE calls SET direction = ?, from_number = ?, to_number = ?, flow = ?,"
            " started_at = COALESCE(started_at, ?),"
            " ended_at = CASE WHEN hangup_cause IS NULL THEN NULL ELSE ended_at END,"
            " outcome = CASE WHEN hangup_cause IS NULL OR outcome = ? THEN NULL ELSE outcome END"
            " WHERE id = ?",
            (op.direction, op.from_number, op.to_number, op.flow, _stamp(op.at), NO_STREAM, row),
        )
        _merge_vars(conn, row, op.variables)
        if restarted is not None:
            _add_event(conn, row, op.at, "note", None, {"kind": "reconnected", "data": {}})
    elif isinstance(op, _Event):
        if op.kind == "vars":
            _merge_vars(conn, row, op.data["values"])
        _add_event(conn, row, op.at, op.kind, op.step, op.data)
    elif isinstance(op, _Finish):
        conn.execute(
            "UPDATE calls SET outcome = ?, ended_at = COALESCE(ended_at, ?) WHERE id = ?",
            (op.outcome, _stamp(op.at), row),
        )
    else:
        conn.execute(
            "UPDATE calls SET hangup_cause = ?, duration = ?, ended_at = COALESCE(ended_at, ?),"
            " outcome = COALESCE(outcome, CASE WHEN started_at IS NULL THEN ? END),"
            " direction = COALESCE(direction, ?), from_number = COALESCE(from_number, ?),"
            " to_number = COALESCE(to_number, ?) WHERE id = ?",
            (op.cause, op.duration, _stamp(op.at), NO_STREAM, op.direction, op.from_number,
             op.to_number, row),
        )  # fmt: skip


def _load_json(text: object) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {}
