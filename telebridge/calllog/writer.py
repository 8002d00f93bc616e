"""The call log's writer: one background thread that owns the write connection and commits
queued changes to calls, in order, one transaction per batch.

Submitting only puts a `Write` on a queue, so recording never blocks the event loop; a record
is in the database within about `LINGER_S` of being queued: the thread, woken by a first
record, lets that long pass before it takes what is queued, so a burst of call starts is one
transaction and one wake-up of the thread per 20 ms, not one per record. A batch that fails is
retried row by row so one bad record loses nothing else. A lost database server (PostgreSQL)
loses nothing either: the writer keeps the batch, retries it with backoff and `degraded` says
why meanwhile; changes go on queueing up to `MAX_WAITING`, beyond which they are dropped with
an error. At `close()` a server still away gets `CLOSE_GRACE_S` to return before what waits is
dropped, loudly.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from telebridge.calllog.changes import EventKind, Write, WriteKind, apply
from telebridge.calllog.db import Db
from telebridge.calllog.schema import BUSY_TIMEOUT_S

__all__ = ["CLOSE_GRACE_S", "LINGER_S", "MAX_WAITING", "EventKind", "WriteKind", "Writer"]

logger = logging.getLogger(__name__)

_MAX_BATCH = 500  # rows per transaction: keeps one commit short when a backlog built up
MAX_WAITING = 200_000  # changes held while the server is away (about 100 MB at worst)
CLOSE_GRACE_S = 10.0
_FIRST_PAUSE_S, _MAX_PAUSE_S = 0.05, 2.0  # between attempts to reach a lost server
LINGER_S = 0.02  # from a first record to the transaction that writes it and what followed it


@dataclass(frozen=True, slots=True)
class _Flush:
    done: threading.Event


_Op = Write | _Flush | None  # None stops the writer


class _Lost(Exception):
    """The database server cannot be reached; the batch was not (or may not have been) written."""


class Writer:
    """The writer thread of one call log, started at once; `close()` writes out and stops it.

    States: running, then closed (`close` once; changes submitted after it are dropped with a
    warning). `where` names the database in log lines (a path, or a URL without its password).
    """

    def __init__(self, db: Db, where: str) -> None:
        self.where = where
        self._db = db
        self._lock = threading.Lock()
        self.closed = False
        self._closed_at = 0.0
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._waiting = 0  # changes queued and not yet written (or dropped)
        self._dropped = 0  # changes dropped in this outage, for the line that ends it
        self._outage: str | None = None  # why the server cannot be reached, while it cannot
        self._outage_since = 0.0
        self._abandoned = False  # closing with the server away: what still waits is dropped
        self._thread = threading.Thread(target=self._loop, name="calllog-writer", daemon=True)
        self._thread.start()

    @property
    def stopped(self) -> bool:
        """The thread has ended: nothing more will be written."""
        return not self._thread.is_alive()

    @property
    def degraded(self) -> str | None:
        """Why records are not reaching the database now, or None when they are."""
        outage = self._outage
        if outage is None:
            return None
        return f"call log: cannot reach {self.where} ({outage}); {self._waiting} records waiting"

    def submit(
        self,
        key: tuple[str, str],
        at: datetime,
        kind: WriteKind,
        step: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Queue one change to the call `key` (carrier, call_id). Never blocks."""
        op = Write(key, at, kind, step, {} if data is None else data)
        with self._lock:
            if self.closed:
                what = f"{op.kind} of call {op.key[1]}"
                logger.warning("call log %s is closed: dropped the %s", self.where, what)
                return
            if self._waiting >= MAX_WAITING:
                self._dropped += 1
                if self._dropped == 1:
                    logger.error(
                        "call log %s: %d records wait for the database; dropping new ones "
                        "until it is back (first dropped: the %s of call %s)",
                        self.where, self._waiting, op.kind, op.key[1],
                    )  # fmt: skip
                return
            self._waiting += 1
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
            self._closed_at = time.monotonic()
            self._queue.put(None)
        self._thread.join(timeout=BUSY_TIMEOUT_S * 4 + CLOSE_GRACE_S)
        if self.stopped:
            self._db.close()
        else:
            logger.error("call log %s: the writer did not finish in time", self.where)
        return True

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            batch: list[_Op] = [self._queue.get()]
            if batch[0] is not None:  # close() writes out at once
                time.sleep(LINGER_S)
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            writes = [op for op in batch if isinstance(op, Write)]
            if writes:
                self._write(writes)
                with self._lock:
                    self._waiting -= len(writes)
            for op in batch:
                if isinstance(op, _Flush):
                    op.done.set()
                stopping = stopping or op is None
        with self._lock:
            dropped = self._dropped
        if self._abandoned and dropped:
            logger.error("call log %s: closed while the database could not be reached: %d "
                         "records were dropped", self.where, dropped)  # fmt: skip

    def _write(self, writes: Sequence[Write]) -> None:
        """Commit `writes` once, however many attempts it takes the server to come back."""
        batch = uuid.uuid4().hex  # the same id on every attempt: a re-sent batch is skipped
        pause = _FIRST_PAUSE_S
        while not self._abandoned:
            try:
                written = self._attempt(writes, batch)
            except _Lost as lost:
                self._lost(str(lost))
                time.sleep(pause)
                pause = min(pause * 2, _MAX_PAUSE_S)
                self._reconnect()
                continue
            self._back()
            if not written:  # keep the good rows: write them one by one
                for op in writes:
                    self._write([op])
            return
        with self._lock:
            self._dropped += len(writes)

    def _attempt(self, writes: Sequence[Write], batch: str) -> bool:
        """One transaction; False when a record among several could not be written (a single
        one is logged and given up). Raises `_Lost`."""
        db = self._db
        try:
            db.begin_write()
        except Exception as exc:
            if db.lost(exc):
                raise _Lost(db.describe(exc)) from exc
            logger.error("call log %s: dropped %d records (%s)", self.where, len(writes), exc)
            return True  # waited out: not a bad record, and not to be tried row by row
        try:
            if db.claim(batch):
                for op in writes:
                    apply(db, op)
            db.commit()
            return True
        except Exception as exc:
            db.rollback()
            if db.lost(exc):
                raise _Lost(db.describe(exc)) from exc
            if len(writes) == 1:
                logger.exception("call log %s: could not record %r", self.where, writes[0])
                return True
            return False

    def _lost(self, why: str) -> None:
        if self._outage is None:
            self._outage_since = time.monotonic()
            logger.warning("call log %s: cannot reach the database (%s): records wait and "
                           "are retried", self.where, why)  # fmt: skip
        self._outage = why
        if self.closed and time.monotonic() - self._closed_at > CLOSE_GRACE_S:
            self._abandoned = True

    def _reconnect(self) -> None:
        try:
            self._db.reconnect()
        except Exception as exc:
            if self._db.lost(exc):
                self._outage = self._db.describe(exc)
            else:
                logger.exception("call log %s: cannot reconnect", self.where)

    def _back(self) -> None:
        if self._outage is None:
            return
        took = time.monotonic() - self._outage_since
        self._outage = None
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            logger.error("call log %s: the database is back after %.0f s; %d records were "
                         "dropped meanwhile", self.where, took, dropped)  # fmt: skip
        else:
            logger.warning("call log %s: the database is back after %.0f s; nothing was lost",
                           self.where, took)  # fmt: skip
