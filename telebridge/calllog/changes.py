"""What one queued change to a call does to the tables: `Write` (a start, finish or hangup of a
call, or one event of its timeline) and `apply`, its SQL, the same on both backends.

`apply` runs inside the writer's transaction (calllog/writer.py), on the call's row as `Db.call_row`
holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from telebridge.calllog.db import Db
from telebridge.calllog.schema import NO_STREAM, dump_json, load_json, stamp

__all__ = ["EventKind", "Write", "WriteKind", "apply"]

EventKind = Literal["step", "digits", "vars", "webhook", "note"]
WriteKind = Literal["start", "finish", "hangup"] | EventKind
Key = tuple[str, str]  # (carrier, call_id)


@dataclass(frozen=True, slots=True)
class Write:
    """One queued change to a call: an event row, or a start, finish or hangup of the call."""

    key: Key
    at: datetime
    kind: WriteKind
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def _add_event(db: Db, row: int, at: str, kind: str, step: str | None, data: object) -> None:
    db.rows(
        "INSERT INTO call_events (call, seq, at, kind, step, data) VALUES"
        " (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM call_events WHERE call = ?), ?, ?, ?, ?)",
        (row, row, at, kind, step, dump_json(data)),
    )


def _merge_vars(db: Db, row: int, values: dict[str, str]) -> None:
    ((text,),) = db.rows("SELECT variables FROM calls WHERE id = ?", (row,))
    stored = load_json(text)
    stored.update(values)
    db.rows("UPDATE calls SET variables = ? WHERE id = ?", (dump_json(stored), row))


def apply(db: Db, op: Write) -> None:
    row, at, data = db.call_row(*op.key), stamp(op.at), op.data
    if op.kind == "start":
        ((restarted,),) = db.rows("SELECT started_at FROM calls WHERE id = ?", (row,))
        # A reconnect continues the row. The call is live again unless the carrier already
        # reported its end; a row made by that report alone loses its "no-stream" outcome.
        db.rows(
            "UPDATE calls SET direction = COALESCE(NULLIF(?, ''), direction),"
            " from_number = COALESCE(NULLIF(?, ''), from_number),"
            " to_number = COALESCE(NULLIF(?, ''), to_number), flow = COALESCE(NULLIF(?, ''), flow),"
            " started_at = COALESCE(started_at, ?),"
            " ended_at = CASE WHEN hangup_cause IS NULL THEN NULL ELSE ended_at END,"
            " outcome = CASE WHEN hangup_cause IS NULL OR outcome = ? THEN NULL ELSE outcome END"
            " WHERE id = ?",
            (data["direction"], data["from"], data["to"], data["flow"], at, NO_STREAM, row),
        )
        _merge_vars(db, row, data["variables"])
        if restarted is not None:
            _add_event(db, row, at, "note", None, {"kind": "reconnected", "data": {}})
    elif op.kind == "finish":
        db.rows(
            "UPDATE calls SET outcome = ?, ended_at = COALESCE(ended_at, ?) WHERE id = ?",
            (data["outcome"], at, row),
        )
    elif op.kind == "hangup":
        db.rows(
            "UPDATE calls SET hangup_cause = COALESCE(hangup_cause, ?),"
            " duration = COALESCE(?, duration), ended_at = COALESCE(ended_at, ?),"
            " outcome = COALESCE(outcome, CASE WHEN started_at IS NULL THEN ? END),"
            " direction = COALESCE(direction, ?), from_number = COALESCE(from_number, ?),"
            " to_number = COALESCE(to_number, ?) WHERE id = ?",
            (data["cause"], data["duration"], at, NO_STREAM, data["direction"], data["from"],
             data["to"], row),
        )  # fmt: skip
        if data.get("variables"):
            _merge_vars(db, row, data["variables"])
    else:
        if op.kind == "vars":
            _merge_vars(db, row, data["values"])
        _add_event(db, row, at, op.kind, op.step, data)
