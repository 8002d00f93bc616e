"""The call log file's layout: opening it, its tables and forward-only migrations, and how times
and JSON values are stored in it.

The schema version is `PRAGMA user_version`; migrations add, never drop, and run on open. WAL
journaling lets readers in other processes work while the writer writes; a busy timeout rides out
another process's short write lock. Times are ISO-8601 UTC with milliseconds, e.g.
`2024-05-01T09:30:00.250Z`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["BUSY_TIMEOUT_S", "NO_STREAM", "SCHEMA_VERSION", "WHEN", "CallLogError", "dump_json",
           "load_json", "open_connection", "stamp", "utcnow"]  # fmt: skip

logger = logging.getLogger(__name__)

# Outcome of a call the carrier reported ended before any stream started (busy, no answer, ...).
NO_STREAM = "no-stream"
BUSY_TIMEOUT_S = 5.0


class CallLogError(Exception):
    """The call log file cannot be used; the message names TELEBRIDGE_DB and what is wrong."""


# The current columns of `calls` besides `id`. Migration 1 adds any of them that a table made
# before versioning (user_version 0) lacks, so such a file is adopted with its rows.
_CALL_COLUMNS = {
    "carrier": "TEXT NOT NULL DEFAULT ''", "call_id": "TEXT NOT NULL DEFAULT ''",
    "direction": "TEXT", "from_number": "TEXT", "to_number": "TEXT", "flow": "TEXT",
    "started_at": "TEXT", "ended_at": "TEXT", "outcome": "TEXT", "hangup_cause": "TEXT",
    "duration": "REAL", "variables": "TEXT NOT NULL DEFAULT '{}'",
}  # fmt: skip
WHEN = "COALESCE(started_at, ended_at)"  # a call that never streamed sorts by its end


def _v1(conn: sqlite3.Connection) -> None:
    columns = ", ".join(f"{name} {decl}" for name, decl in _CALL_COLUMNS.items())
    conn.execute(f"CREATE TABLE IF NOT EXISTS calls (id INTEGER PRIMARY KEY, {columns})")
    have = {row[1] for row in conn.execute("PRAGMA table_info(calls)")}
    for name, decl in _CALL_COLUMNS.items():
        if name not in have:
            conn.execute(f"ALTER TABLE calls ADD COLUMN {name} {decl}")
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS calls_key ON calls (carrier, call_id)")
    conn.execute(f"CREATE INDEX IF NOT EXISTS calls_when ON calls ({WHEN})")
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


def open_connection(path: Path) -> sqlite3.Connection:
    """A connection to the file at `path`, created or migrated to `SCHEMA_VERSION`.

    Raises `CallLogError` naming TELEBRIDGE_DB when the file cannot be used.
    """
    # Switching a new file to WAL (or recovering one) can answer "database is locked" at
    # once, without waiting on the busy timeout, when another connection (this process or
    # another) opens the same file at that moment: such an answer is retried, for as long
    # as the busy timeout would have waited.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            return _open_once(path)
        except sqlite3.Error as exc:
            busy = getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
            if not busy or time.monotonic() + pause > deadline:
                raise _error(path, exc) from None
            time.sleep(pause)
            pause = min(pause * 2, 0.1)


def _open_once(path: Path) -> sqlite3.Connection:
    conn: sqlite3.Connection | None = None
    try:
        conn = _connect(path)
        _migrate(conn, path)
        return conn
    except BaseException:
        if conn is not None:
            conn.close()
        raise


def _error(path: Path, exc: sqlite3.Error) -> CallLogError:
    if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB":
        return CallLogError(f"TELEBRIDGE_DB: {path} is not an SQLite database; give another path")
    return CallLogError(f"TELEBRIDGE_DB: cannot use {path}: {exc}")


# --- stored values ------------------------------------------------------------------------


def stamp(moment: datetime) -> str:
    """`moment` as the log stores times; naive times are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utcnow() -> datetime:
    return datetime.now(UTC)


def dump_json(value: object) -> str:
    """A JSON column's text; values JSON cannot hold become str."""
    return json.dumps(value, default=str, ensure_ascii=False)


def load_json(text: object) -> dict[str, Any]:
    """A JSON column's object; anything else (NULL, bad text, a list) reads as {}."""
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {}
