"""The call log's writer: one background thread that owns the write connection and commits
queued changes to calls, in order, one transaction per batch.

Submitting only puts a `_Write` on a queue, so recording never blocks the event loop; a record
is on disk within milliseconds of being queued. A batch that fails is retried row by row so one
bad record loses nothing else; a write lock held elsewhere is waited out a few times.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from telebridge.calllog.schema import BUSY_TIMEOUT_S, NO_STREAM, dump_json, load_json, stamp

__all__ = ["EventKind", "WriteKind", "Writer"]

logger = logging.getLogger(__name__)

_LOCK_ATTEMPTS = 3  # another process holding the write lock this long is stuck
_MAX_BATCH = 500  # rows per transaction: keeps one commit short when a backlog built up
EventKind = Literal["step", "digits", "vars", "webhook", "note"]
WriteKind = Literal["start", "finish", "hangup"] | EventKind
_Key = tuple[str, str]  # (carrier, call_id)


@dataclass(frozen=True, slots=True)
class _Write:
    """One queued change to a call: an event row, or a start, finish or hangup of the call."""

    key: _Key
    at: datetime
    kind: WriteKind
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Flush:
    done: threading.Event


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
    conn: sqlite3.Connection, row: int, at: str, kind: str, step: str | None, data: object
) -> None:
    conn.execute(
        "INSERT INTO call_events (call, seq, at, kind, step, data) VALUES"
        " (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM call_events WHERE call = ?), ?, ?, ?, ?)",
        (row, row, at, kind, step, dump_json(data)),
    )


def _merge_vars(conn: sqlite3.Connection, row: int, values: dict[str, str]) -> None:
    (text,) = conn.execute("SELECT variables FROM calls WHERE id = ?", (row,)).fetchone()
    stored = load_json(text)
    stored.update(values)
    conn.execute("UPDATE calls SET variables = ? WHERE id = ?", (dump_json(stored), row))


def _apply(conn: sqlite3.Connection, op: _Write) -> None:
    row, at, data = _row(conn, op.key), stamp(op.at), op.data
    if op.kind == "start":
        restarted = conn.execute("SELECT started_at FROM calls WHERE id = ?", (row,)).fetchone()[0]
        # A reconnect continues the row. The call is live again unless the carrier already
        # reported its end; a row made by that report alone loses its "no-stream" outcome.
        conn.execute(
            "UPDATE calls SET direction = COALESCE(NULLIF(?, ''), direction),"
            " from_number = COALESCE(NULLIF(?, ''), from_number),"
            " to_number = COALESCE(NULLIF(?, ''), to_number), flow = COALESCE(NULLIF(?, ''), flow),"
            " started_at = COALESCE(started_at, ?),"
            " ended_at = CASE WHEN hangup_cause IS NULL THEN NULL ELSE ended_at END,"
            " outcome = CASE WHEN hangup_cause IS NULL OR outcome = ? THEN NULL ELSE outcome END"
            " WHERE id = ?",
            (data["direction"], data["from"], data["to"], data["flow"], at, NO_STREAM, row),
        )
        _merge_vars(conn, row, data["variables"])
        if restarted is not None:
            _add_event(conn, row, at, "note", None, {"kind": "reconnected", "data": {}})
    elif op.kind == "finish":
        conn.execute(
            "UPDATE calls SET outcome = ?, ended_at = COALESCE(ended_at, ?) WHERE id = ?",
            (data["outcome"], at, row),
        )
    elif op.kind == "hangup":
        conn.execute(
            "UPDATE calls SET hangup_cause = COALESCE(hangup_cause, ?),"
            " duration = COALESCE(?, duration), ended_at = COALESCE(ended_at, ?),"
            " outcome = COALESCE(outcome, CASE WHEN started_at IS NULL THEN ? END),"
            " direction = COALESCE(direction, ?), from_number = COALESCE(from_number, ?),"
            " to_number = COALESCE(to_number, ?) WHERE id = ?",
            (data["cause"], data["duration"], at, NO_STREAM, data["direction"], data["from"],
             data["to"], row),
        )  # fmt: skip
        if data.get("variables"):
            _merge_vars(conn, row, data["variables"])
    else:
        if op.kind == "vars":
            _merge_vars(conn, row, data["values"])
        _add_event(conn, row, at, op.kind, op.step, data)


class Writer:
    """The writer thread of one call log, started at once; `close()` writes out and stops it.

    States: running, then closed (`close` once; changes submitted after it are dropped with a
    warning).
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.Lock()
        self.closed = False
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="calllog-writer", daemon=True)
        self._thread.start()

    @property
    def stopped(self) -> bool:
        """The thread has ended: nothing more will be written."""
        return not self._thread.is_alive()

    def submit(
        self,
        key: tuple[str, str],
        at: datetime,
        kind: WriteKind,
        step: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Queue one change to the call `key` (carrier, call_id). Never blocks."""
        op = _Write(key, at, kind, step, {} if data is None else data)
        with self._lock:
            if self.closed:
                what = f"{op.kind} of call {op.key[1]}"
                logger.warning("call log %s is closed: dropped the %s", self.path, what)
                return
            self._queue.put(op)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is committed; False on timeout. Blocks."""
        done = threading.Event()
        with self._lock:
            if self.closed:
                return self.stopped
            self._queue.put(_Flush(done))
        return done.wait(timeout)

    def close(self) -> bool:
        """Write out everything queued, stop the thread and close the connection. False, doing
        nothing, when already closed."""
        with self._lock:
            if self.closed:
                return False
            self.closed = True
            self._queue.put(None)
        self._thread.join(timeout=BUSY_TIMEOUT_S * 4)
        if self.stopped:
            self._conn.close()
        else:
            logger.error("call log %s: the writer did not finish in time", self.path)
        return True

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            batch: list[_Op] = [self._queue.get()]
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._commit([op for op in batch if isinstance(op, _Write)])
            for op in batch:
                if isinstance(op, _Flush):
                    op.done.set()
                stopping = stopping or op is None

    def _commit(self, writes: Sequence[_Write]) -> None:
        if not writes:
            return
        conn = self._conn
        for attempt in range(_LOCK_ATTEMPTS):  # each attempt waits out the busy timeout
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.Error as exc:
                logger.warning("call log %s: cannot write (%s), attempt %d", self.path, exc,
                               attempt + 1)  # fmt: skip
        else:
            logger.error("call log %s: dropped %d records", self.path, len(writes))
            return
        try:
            for op in writes:
                _apply(conn, op)
            conn.execute("COMMIT")
        except Exception:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if len(writes) > 1:  # keep the good rows: write them one by one
                for op in writes:
                    self._commit([op])
            else:
                logger.exception("call log %s: could not record %r", self.path, writes[0])
