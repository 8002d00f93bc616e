"""`Db`, what the writer and the reads need from one connection to the call log's database, so
that one set of queries serves both backends: SQLite (calllog/sqlite.py) and PostgreSQL
(calllog/postgres.py).

Queries are written once, with `?` parameters and SQL both databases read alike; a backend only
says what differs: how a write transaction begins, how a call's row is found and locked, how a
call variable is read from the JSON text, and which errors mean the server is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["Db", "Row"]

Row = tuple[Any, ...]


class Db(Protocol):
    """One open connection, used by one thread at a time."""

    @property
    def no_limit(self) -> int | None:
        """The LIMIT parameter that means none."""
        ...

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run `sql` (with `?` parameters) and return its rows (none for a statement)."""
        ...

    def begin_write(self) -> None:
        """Begin a write transaction, waiting out other writers for a bounded time."""
        ...

    def claim(self, batch: str) -> bool:
        """In the write transaction: False when the batch `batch` was committed before (its
        COMMIT was sent but the answer lost), so it must not be applied twice."""
        ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def call_row(self, carrier: str, call_id: str) -> int:
        """In the write transaction: the id of the call's row, made bare if new, held against
        other writers until the commit."""
        ...

    def variable_is(self, name: str) -> tuple[str, list[Any]]:
        """SQL comparing the call variable `name` with a last `?` parameter (the value), and the
        parameters that come before that one."""
        ...

    def snapshot(self) -> AbstractContextManager[None]:
        """A read transaction: the reads inside it see one state of the database."""
        ...

    def lost(self, exc: BaseException) -> bool:
        """`exc` means the server cannot be reached (retry later), not a bad record."""
        ...

    def describe(self, exc: BaseException) -> str:
        """`exc` in one line for messages, with no secret in it."""
        ...

    def reconnect(self) -> None:
        """Replace a connection that was lost; raises while the server is still away."""
        ...

    def close(self) -> None: ...
