"""`CallLog`, the durable call log in an embedded SQLite file or a PostgreSQL database, and
`CallRecorder`, which records one call's steps, keys, variables and end as it goes.

Recording never blocks the event loop. `CallLog.start_call()` returns a `CallRecorder` whose
methods only stamp the time and hand a row to the writer thread (calllog/writer.py), so a crash
of the server loses nothing already recorded. `flush()` waits until the queue is written;
`close()` flushes and stops the thread. Reads (`get`, `list_calls`, `timeline`) wait for this
log's own pending writes, then read through a second connection (PostgreSQL: a short one per
read): they touch the disk or the network, so async code calls them via `asyncio.to_thread`.

The database is shared: the server writes while `telebridge calls` and the campaign runner read from
other processes. A call is one `calls` row, unique per (carrier, call_id), plus its ordered
`call_events`.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from telebridge.calllog.db import Db
from telebridge.calllog.records import CallRecord, read_records, read_timeline
from telebridge.calllog.schema import (
    BUSY_TIMEOUT_S,
    WHEN,
    CallLogError,
    open_connection,
    stamp,
    utcnow,
)
from telebridge.calllog.sqlite import SqliteDb
from telebridge.calllog.writer import EventKind, Writer
from telebridge.settings import POSTGRES_SCHEMES

if TYPE_CHECKING:
    from telebridge.settings import Settings

__all__ = ["CallLog", "CallRecorder"]

_T = TypeVar("_T")


class CallRecorder:
    """Records one call as it goes. Every method only queues a row: safe on the event loop.

    Satisfies the flow runner's `FlowRecorder`. States: recording, then finished (`finish`
    once); events after `finish` are still written, a second `finish` raises.
    """

    def __init__(self, log: CallLog, carrier: str, call_id: str) -> None:
        self.carrier = carrier
        self.call_id = call_id
        self.state: Literal["recording", "finished"] = "recording"
        self._log = log
        self._step: str | None = None  # the step entered last, for vars and notes

    def _event(self, kind: EventKind, step: str | None, data: dict[str, Any]) -> None:
        self._log._writer.submit((self.carrier, self.call_id), self._log._clock(), kind, step, data)

    def step_entered(self, step: str) -> None:
        self._step = step
        self._event("step", step, {})

    def digits_collected(self, step: str, digits: str) -> None:
        self._event("digits", step, {"digits": digits})

    def vars_set(self, values: dict[str, str]) -> None:
        self._event("vars", self._step, {"values": dict(values)})

    def webhook_result(self, step: str, ok: bool, detail: str) -> None:
        self._event("webhook", step, {"ok": ok, "detail": detail})

    def note(self, kind: str, **data: object) -> None:
        """Anything else worth keeping (a transfer, a TTS failure); non-JSON values become str."""
        self._event("note", self._step, {"kind": kind, "data": data})

    def finish(self, outcome: str) -> None:
        """The stream's end as the bridge saw it (the flow's outcome, "caller hung up", ...)."""
        if self.state == "finished":
            raise RuntimeError(f"call {self.call_id}: finish() called twice")
        self.state = "finished"
        key, at = (self.carrier, self.call_id), self._log._clock()
        self._log._writer.submit(key, at, "finish", data={"outcome": outcome})


class CallLog:
    """The call log at `target`: an SQLite file at a path, or a PostgreSQL database at a
    `postgresql://` URL (text). Opening creates or migrates it. Close it when done.

    `degraded` says why records are not reaching a PostgreSQL database that went away (they
    wait and are written when it is back), or is None.
    """

    def __init__(self, target: str | Path, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._clock = clock
        self._read_lock = threading.Lock()
        self._url: str | None = None
        self._reader: Db | None = None  # SQLite's; PostgreSQL reads through short connections
        writer_db: Db
        if isinstance(target, str) and target.startswith(POSTGRES_SCHEMES):
            try:  # only here: SQLite users never load psycopg
                from telebridge.calllog import postgres
            except ImportError:
                raise CallLogError(
                    "TELEBRIDGE_DB: a PostgreSQL call log needs psycopg: "
                    "pip install 'telebridge[cluster]'"
                ) from None
            self.path: Path | None = None
            self._url = target
            pg = postgres.open_db(target, migrate=True)
            self.where, writer_db = pg.where, pg
        else:
            self.path = path = Path(target)
            self.where = str(path)
            writer_db, self._reader = _open_sqlite(path)
        self._variable_is = writer_db.variable_is
        self._writer = Writer(writer_db, self.where)
        atexit.register(self.close)  # a forgotten close() still writes everything out

    @classmethod
    def from_settings(cls, settings: Settings) -> CallLog:
        return cls(settings.telebridge_db)

    def __enter__(self) -> CallLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- writing (never blocks) --------------------------------------------------------

    def start_call(
        self,
        *,
        carrier: str,
        call_id: str,
        direction: str,
        from_number: str,
        to_number: str,
        flow: str,
        variables: dict[str, str] | None = None,
    ) -> CallRecorder:
        """A stream started; the same carrier + call_id again (a reconnect) continues the row."""
        data: dict[str, Any] = {"direction": direction, "from": from_number, "to": to_number}
        data |= {"flow": flow, "variables": dict(variables or {})}
        self._writer.submit((carrier, call_id), self._clock(), "start", data=data)
        return CallRecorder(self, carrier, call_id)

    def record_hangup(
        self,
        carrier: str,
        call_id: str,
        cause: str | None,
        duration: float | None = None,
        *,
        direction: str | None = None,
        from_number: str | None = None,
        to_number: str | None = None,
        variables: dict[str, str] | None = None,
    ) -> None:
        """The carrier reports the call ended: before or after the stream, or with none at all.

        A call with no stream gets a row and the outcome `NO_STREAM`; the numbers given fill
        the row's empty fields.
        """
        data: dict[str, Any] = {"cause": cause, "duration": duration, "direction": direction}
        data |= {"from": from_number, "to": to_number, "variables": dict(variables or {})}
        self._writer.submit((carrier, call_id), self._clock(), "hangup", data=data)

    @property
    def degraded(self) -> str | None:
        """Why records are waiting instead of being written (one line), or None."""
        return self._writer.degraded

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is committed; False on timeout. Blocks."""
        return self._writer.flush(timeout)

    def close(self) -> None:
        """Write out everything queued, stop the writer and close the file. Idempotent."""
        if not self._writer.close():
            return
        atexit.unregister(self.close)
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()

    # --- reading (blocks: use asyncio.to_thread from async code) -----------------------

    def get(self, carrier: str, call_id: str) -> CallRecord | None:
        """One call, or None if it was never recorded."""
        found = self._read("carrier = ? AND call_id = ?", (carrier, call_id), 1)
        return found[0] if found else None

    def timeline(self, carrier: str, call_id: str) -> list[dict[str, Any]] | None:
        """One call's events in time order (records.read_timeline), or None."""
        return self._reading(lambda db: read_timeline(db, carrier, call_id))

    def list_calls(
        self,
        since: datetime | None = None,
        limit: int | None = None,
        *,
        until: datetime | None = None,
        carrier: str | None = None,
        flow: str | None = None,
        outcome: str | None = None,
    ) -> list[CallRecord]:
        """Calls started at or after `since` and before `until` (naive: UTC), oldest first;
        `limit` keeps the newest. `carrier` and `flow` must match, `outcome` is a prefix.

        A call that never streamed counts from its end.
        """
        where, params = ["TRUE"], []
        for clause, value in (
            (f"{WHEN} >= ?", since and stamp(since)),
            (f"{WHEN} < ?", until and stamp(until)),
            ("carrier = ?", carrier),
            ("flow = ?", flow),
            # A prefix: LIKE's own wildcards in it are matched literally.
            ("outcome LIKE ? ESCAPE '\\'", None if outcome is None else _like_prefix(outcome)),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        return self._read(" AND ".join(where), tuple(params), limit)

    def find_by_variable(
        self, name: str, value: str, *, carrier: str | None = None, since: datetime | None = None
    ) -> list[CallRecord]:
        """Calls whose variables hold `name` = `value` (e.g. a campaign's attempt id), oldest
        first. `since` (naive: UTC) skips calls started, or ended unstreamed, before then, which
        keeps the lookup to recent calls; without it every call's variables are read.
        """
        where, params = self._variable_is(name)
        params = [*params, value]
        if carrier is not None:
            where, params = f"carrier = ? AND {where}", [carrier, *params]
        if since is not None:
            where, params = f"{WHEN} >= ? AND {where}", [stamp(since), *params]
        return self._read(where, tuple(params), None)

    def _read(self, where: str, params: tuple[Any, ...], limit: int | None) -> list[CallRecord]:
        return self._reading(lambda db: read_records(db, where, params, limit))

    def _reading(self, read: Callable[[Db], _T]) -> _T:
        """`read` on a connection that sees this process's own writes; raises `CallLogError`
        (one line) when the database cannot be reached."""
        if self._writer.degraded is None:
            self.flush(BUSY_TIMEOUT_S)  # read this process's own writes
        with self._read_lock:
            if self._writer.closed and self._writer.stopped:
                raise RuntimeError(f"the call log {self.where} is closed")
            if self._reader is not None:
                return read(self._reader)
        assert self._url is not None
        from telebridge.calllog import postgres

        with postgres.reading(self._url) as db:
            return read(db)


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _open_sqlite(path: Path) -> tuple[SqliteDb, SqliteDb]:
    """The writer's and the reader's connections to the file at `path`."""
    if path.is_dir():
        raise CallLogError(f"TELEBRIDGE_DB: {path} is a directory, not a database file")
    if not path.parent.is_dir():
        raise CallLogError(f"TELEBRIDGE_DB: cannot create {path}: no folder {path.parent}")
    writer_conn = open_connection(path)
    try:
        reader_conn = open_connection(path)
    except BaseException:
        writer_conn.close()
        raise
    return SqliteDb(writer_conn, path), SqliteDb(reader_conn, path)
