"""`SqliteDb`, the call log's `Db` over one connection to the embedded SQLite file
(calllog/schema.py opens and migrates it).

Writers take SQLite's one write lock (`BEGIN IMMEDIATE`), so a call's row needs no lock of its own;
the file is local, so a connection is never lost and a commit's answer never goes missing.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from telebridge.calllog.db import Row

__all__ = ["SqliteDb"]

logger = logging.getLogger("telebridge.calllog.writer")

_LOCK_ATTEMPTS = 3  # another process holding the write lock this long is stuck


class SqliteDb:
    """A `Db` over `conn`, an autocommit-mode connection to the file at `path`."""

    no_limit = -1

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    def begin_write(self) -> None:
        for attempt in range(_LOCK_ATTEMPTS):  # each attempt waits out the busy timeout
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.Error as exc:
                logger.warning("call log %s: cannot write (%s), attempt %d", self.path, exc,
                               attempt + 1)  # fmt: skip
                if attempt + 1 == _LOCK_ATTEMPTS:
                    raise

    def claim(self, batch: str) -> bool:
        return True  # a local commit either happened or raised: nothing is sent twice

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("ROLLBACK")

    def call_row(self, carrier: str, call_id: str) -> int:
        key = (carrier, call_id)
        found = self.conn.execute(
            "SELECT id FROM calls WHERE carrier = ? AND call_id = ?", key
        ).fetchone()
        if found is not None:
            return int(found[0])
        cursor = self.conn.execute("INSERT INTO calls (carrier, call_id) VALUES (?, ?)", key)
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def variable_is(self, name: str) -> tuple[str, list[Any]]:
        return "json_extract(variables, ?) = ?", ['$."' + name.replace('"', "") + '"']

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def lost(self, exc: BaseException) -> bool:
        return False

    def describe(self, exc: BaseException) -> str:
        return str(exc)

    def reconnect(self) -> None:
        raise RuntimeError("an SQLite file is never lost")

    def close(self) -> None:
        self.conn.close()
