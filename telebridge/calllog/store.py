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
import contextlib
import csv
import io
import json
import logging
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from telebridge.settings import Settings

__all__ = ["NO_STREAM", "SCHEMA_VERSION", "CallLog", "CallLogError", "CallRecord", "CallRecorder",
           "format_table", "parse_since", "to_csv", "to_json_lines"]  # fmt: skip

logger = logging.getLogger(__name__)

# Outcome of a call the carrier reported ended before any stream started (busy, no answer, ...).
NO_STREAM = "no-stream"
BUSY_TIMEOUT_S = 5.0
_LOCK_ATTEMPTS = 3  # another process holding the write lock this long is stuck
_MAX_BATCH = 500  # rows per transaction: keeps one commit short when a backlog built up
EventKind = Literal["step", "digits", "vars", "webhook", "note"]


class CallLogError(Exception):
    """The call log file cannot be used; the message names TELEBRIDGE_DB and what is wrong."""


# --- schema -------------------------------------------------------------------------------

# The current columns of `calls` besides `id`. Migration 1 adds any of them that a table made
# before versioning (user_version 0) lacks, so such a file is adopted with its rows.
_CALL_COLUMNS = {
    "carrier": "TEXT NOT NULL DEFAULT ''", "call_id": "TEXT NOT NULL DEFAULT ''",
    "direction": "TEXT", "from_number": "TEXT", "to_number": "TEXT", "flow": "TEXT",
    "started_at": "TEXT", "ended_at": "TEXT", "outcome": "TEXT", "hangup_cause": "TEXT",
    "duration": "REAL", "variables": "TEXT NOT NULL DEFAULT '{}'",
}  # fmt: skip
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
_WriteKind = Literal["start", "finish", "hangup"] | EventKind


@dataclass(frozen=True, slots=True)
class _Write:
    """One queued change to a call: an event row, or a start, finish or hangup of the call."""

    key: _Key
    at: datetime
    kind: _WriteKind
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
        (row, row, at, kind, step, _dump(data)),
    )


def _merge_vars(conn: sqlite3.Connection, row: int, values: dict[str, str]) -> None:
    (text,) = conn.execute("SELECT variables FROM calls WHERE id = ?", (row,)).fetchone()
    stored = _load_json(text)
    stored.update(values)
    conn.execute("UPDATE calls SET variables = ? WHERE id = ?", (_dump(stored), row))


def _apply(conn: sqlite3.Connection, op: _Write) -> None:
    row, at, data = _row(conn, op.key), _stamp(op.at), op.data
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


def _dump(value: object) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _load_json(text: object) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {}


# --- what is read back --------------------------------------------------------------------


@dataclass(slots=True)
class CallRecord:
    """One call as recorded. Times are ISO-8601 UTC strings; `duration` is the carrier's."""

    carrier: str
    call_id: str
    direction: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    flow: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    outcome: str | None = None
    hangup_cause: str | None = None
    duration: float | None = None
    steps: list[str] = field(default_factory=list)  # ids entered, in order, repeats included
    digits: str = ""  # the keys of each gather, joined with ","
    variables: dict[str, str] = field(default_factory=dict)
    webhooks: list[dict[str, Any]] = field(default_factory=list)  # {at, step, ok, detail}
    notes: list[dict[str, Any]] = field(default_factory=list)  # {at, step, kind, data}

    def to_json(self) -> dict[str, Any]:
        """The `telebridge calls --json` object: the fields, with `from` and `to` for numbers."""
        return {_JSON_NAMES.get(k, k): v for k, v in asdict(self).items()}

    @staticmethod
    def csv_header() -> list[str]:
        return [
            "carrier", "call_id", "direction", "from", "to", "flow", "started_at", "ended_at",
            "outcome", "hangup_cause", "duration", "steps", "digits", "variables",
        ]  # fmt: skip

    def to_csv_row(self) -> list[str]:
        """Cells for `csv_header()`: steps joined with " > ", variables as JSON, None as ""."""
        return [
            self.carrier, self.call_id, self.direction or "", self.from_number or "",
            self.to_number or "", self.flow or "", self.started_at or "", self.ended_at or "",
            self.outcome or "", self.hangup_cause or "",
            "" if self.duration is None else f"{self.duration:g}",
            " > ".join(self.steps), self.digits,
            json.dumps(self.variables, ensure_ascii=False, sort_keys=True),
        ]  # fmt: skip


_JSON_NAMES = {"from_number": "from", "to_number": "to"}
_RECORD_FIELDS = ("carrier", "call_id", "direction", "from_number", "to_number", "flow",
                  "started_at", "ended_at", "outcome", "hangup_cause", "duration")  # fmt: skip
_RECORD_COLUMNS = ", ".join(("id", *_RECORD_FIELDS, "variables"))  # same names as the columns


def _record(row: tuple[Any, ...]) -> CallRecord:
    """A record without its events, from a row of `_RECORD_COLUMNS`."""
    variables = {str(k): str(v) for k, v in _load_json(row[-1]).items()}
    fields = dict(zip(_RECORD_FIELDS, row[1:-1], strict=True))
    return CallRecord(**fields, variables=variables)


def _add_to(record: CallRecord, gathered: list[str], event: tuple[Any, ...]) -> None:
    _, kind, step, at, text = event
    data = _load_json(text)
    if kind == "step":
        record.steps.append(step)
    elif kind == "digits":
        gathered.append(str(data.get("digits", "")))
    elif kind == "webhook":
        entry = {"at": at, "step": step, "ok": bool(data.get("ok")), "detail": data.get("detail")}
        record.webhooks.append(entry)
    elif kind == "note":
        entry = {"at": at, "step": step, "kind": data.get("kind"), "data": data.get("data", {})}
        record.notes.append(entry)


# --- the log ------------------------------------------------------------------------------


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

    def _event(self, kind: _WriteKind, step: str | None, data: dict[str, Any]) -> None:
        self._log._submit(
            _Write((self.carrier, self.call_id), self._log._clock(), kind, step, data)
        )

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
        self._log._submit(_Write(key, at, "finish", data={"outcome": outcome}))


class CallLog:
    """The call log at `path`; opening creates or migrates it. Close it when done."""

    def __init__(self, path: str | Path, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.path = Path(path)
        self._clock = clock
        if self.path.is_dir():
            raise CallLogError(f"TELEBRIDGE_DB: {self.path} is a directory, not a database file")
        if not self.path.parent.is_dir():
            raise CallLogError(
                f"TELEBRIDGE_DB: cannot create {self.path}: no folder {self.path.parent}"
            )
        self._writer_conn = self._open()
        try:
            self._reader_conn = self._open()
        except BaseException:
            self._writer_conn.close()
            raise
        self._read_lock = threading.Lock()
        self._submit_lock = threading.Lock()
        self._closed = False
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_loop, name="calllog-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # a forgotten close() still writes everything out

    @classmethod
    def from_settings(cls, settings: Settings) -> CallLog:
        return cls(settings.telebridge_db)

    def _open(self) -> sqlite3.Connection:
        # Switching a new file to WAL (or recovering one) can answer "database is locked" at
        # once, without waiting on the busy timeout, when another connection (this process or
        # another) opens the same file at that moment: such an answer is retried, for as long
        # as the busy timeout would have waited.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        pause = 0.005
        while True:
            try:
                return self._open_once()
            except sqlite3.Error as exc:
                busy = getattr(exc, "sqlite_errorname", "").startswith(
                    ("SQLITE_BUSY", "SQLITE_LOCKED")
                )
                if not busy or time.monotonic() + pause > deadline:
                    raise self._error(exc) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.1)

    def _open_once(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = None
        try:
            conn = _connect(self.path)
            _migrate(conn, self.path)
            return conn
        except BaseException:
            if conn is not None:
                conn.close()
            raise

    def _error(self, exc: sqlite3.Error) -> CallLogError:
        if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB":
            return CallLogError(
                f"TELEBRIDGE_DB: {self.path} is not an SQLite database; give another path"
            )
        return CallLogError(f"TELEBRIDGE_DB: cannot use {self.path}: {exc}")

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
        self._submit(_Write((carrier, call_id), self._clock(), "start", data=data))
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
        self._submit(_Write((carrier, call_id), self._clock(), "hangup", data=data))

    def _submit(self, op: _Op) -> None:
        with self._submit_lock:
            if self._closed:
                what = f"{op.kind} of call {op.key[1]}" if isinstance(op, _Write) else "a flush"
                logger.warning("call log %s is closed: dropped the %s", self.path, what)
                return
            self._queue.put(op)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is committed; False on timeout. Blocks."""
        done = threading.Event()
        with self._submit_lock:
            if self._closed:
                return not self._thread.is_alive()
            self._queue.put(_Flush(done))
        return done.wait(timeout)

    def close(self) -> None:
        """Write out everything queued, stop the writer and close the file. Idempotent."""
        with self._submit_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        atexit.unregister(self.close)
        self._thread.join(timeout=BUSY_TIMEOUT_S * 4)
        if self._thread.is_alive():
            logger.error("call log %s: the writer did not finish in time", self.path)
        else:
            self._writer_conn.close()
        with self._read_lock:
            self._reader_conn.close()

    def _write_loop(self) -> None:
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
        conn = self._writer_conn
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

    # --- reading (blocks: use asyncio.to_thread from async code) -----------------------

    def get(self, carrier: str, call_id: str) -> CallRecord | None:
        """One call, or None if it was never recorded."""
        found = self._read("carrier = ? AND call_id = ?", (carrier, call_id), 1)
        return found[0] if found else None

    def list_calls(
        self, since: datetime | None = None, limit: int | None = None
    ) -> list[CallRecord]:
        """Calls started at or after `since` (naive: UTC), oldest first; `limit` keeps the newest.

        A call that never streamed counts from its end.
        """
        if since is None:
            return self._read("1", (), limit)
        return self._read(f"{_WHEN} >= ?", (_stamp(since),), limit)

    def find_by_variable(
        self, name: str, value: str, *, carrier: str | None = None, since: datetime | None = None
    ) -> list[CallRecord]:
        """Calls whose variables hold `name` = `value` (e.g. a campaign's attempt id), oldest
        first. `since` (naive: UTC) skips calls started, or ended unstreamed, before then, which
        keeps the lookup to recent calls; without it every call's variables are read.
        """
        path = '$."' + name.replace('"', "") + '"'
        where, params = "json_extract(variables, ?) = ?", [path, value]
        if carrier is not None:
            where, params = f"carrier = ? AND {where}", [carrier, *params]
        if since is not None:
            where, params = f"{_WHEN} >= ? AND {where}", [_stamp(since), *params]
        return self._read(where, tuple(params), None)

    def _read(self, where: str, params: tuple[Any, ...], limit: int | None) -> list[CallRecord]:
        self.flush(BUSY_TIMEOUT_S)  # read this process's own writes
        chosen = (
            f"SELECT {_RECORD_COLUMNS} FROM calls WHERE {where}"
            f" ORDER BY {_WHEN} DESC, id DESC LIMIT ?"
        )
        args = (*params, -1 if limit is None else max(limit, 0))
        with self._read_lock:
            if self._closed and not self._thread.is_alive():
                raise RuntimeError(f"the call log {self.path} is closed")
            conn = self._reader_conn
            conn.execute("BEGIN")  # one snapshot for calls and their events
            try:
                rows = conn.execute(chosen, args).fetchall()
                events = conn.execute(
                    "SELECT call, kind, step, at, data FROM call_events"
                    f" WHERE call IN (SELECT id FROM ({chosen})) ORDER BY call, seq",
                    args,
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        records = {row[0]: _record(row) for row in reversed(rows)}
        gathered: dict[int, list[str]] = {}
        for event in events:
            _add_to(records[event[0]], gathered.setdefault(event[0], []), event)
        for row_id, keys in gathered.items():
            records[row_id].digits = ",".join(keys)
        return list(records.values())


# --- output for the CLI -------------------------------------------------------------------


def to_json_lines(records: Iterable[CallRecord]) -> str:
    """One JSON object per line (the `telebridge calls --json` format)."""
    return "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records)


def to_csv(records: Iterable[CallRecord]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CallRecord.csv_header())
    writer.writerows(r.to_csv_row() for r in records)
    return out.getvalue()


_TABLE_HEADER = ("started (UTC)", "carrier", "call id", "from", "to", "flow", "outcome",
                 "digits", "steps")  # fmt: skip


def _cells(r: CallRecord) -> tuple[str, ...]:
    when = (r.started_at or r.ended_at or "-")[:19].replace("T", " ")
    return (when, r.carrier, r.call_id, r.from_number or "-", r.to_number or "-", r.flow or "-",
            r.outcome or "-", r.digits or "-", " > ".join(r.steps) or "-")  # fmt: skip


def format_table(records: Sequence[CallRecord]) -> str:
    """An aligned plain-text table, one call per line (steps last, as they run long)."""
    if not records:
        return "no calls recorded\n"
    rows = [_TABLE_HEADER, *map(_cells, records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_TABLE_HEADER) - 1)]
    lines = ("  ".join([*map(str.ljust, row[:-1], widths), row[-1]]) for row in rows)
    return "".join(line.rstrip() + "\n" for line in lines)


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """An aware UTC time from a date or time (`2024-05-01`, `2024-05-01T09:30`, with or without
    an offset: none means UTC, as the log shows times) or an age (`45s`, `30m`, `2h`, `7d`, `1w`).
    """
    cleaned = text.strip()
    if match := _AGE.fullmatch(cleaned.lower()):
        age = timedelta(seconds=float(match[1]) * _UNIT_S[match[2]])
        return (now or _utcnow()).astimezone(UTC) - age
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a time: give a date or time like 2024-05-01 or "
            "2024-05-01T09:30 (UTC), or an age like 30m, 2h, 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
