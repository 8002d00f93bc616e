"""What the call log reads back: `CallRecord`, one call with its timeline, and the query that
builds records from the `calls` rows and their `call_events` in one snapshot; `read_timeline`,
one call's events in order with their times.

The keys of successive gathers are joined with "," in `CallRecord.digits` ("1,4321#" is a menu
choice, then a PIN).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from telebridge.calllog.db import Db
from telebridge.calllog.schema import WHEN, load_json

__all__ = ["CallRecord", "read_records", "read_timeline"]


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
    variables = {str(k): str(v) for k, v in load_json(row[-1]).items()}
    fields = dict(zip(_RECORD_FIELDS, row[1:-1], strict=True))
    return CallRecord(**fields, variables=variables)


def _add_to(record: CallRecord, gathered: list[str], event: tuple[Any, ...]) -> None:
    _, kind, step, at, text = event
    data = load_json(text)
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


def read_records(
    db: Db, where: str, params: tuple[Any, ...], limit: int | None
) -> list[CallRecord]:
    """The calls matching `where` (SQL over `calls` with `params`), oldest first; `limit` keeps
    the newest. Calls and their events are read in one snapshot."""
    chosen = (
        f"SELECT {_RECORD_COLUMNS} FROM calls WHERE {where} ORDER BY {WHEN} DESC, id DESC LIMIT ?"
    )
    args = (*params, db.no_limit if limit is None else max(limit, 0))
    with db.snapshot():
        rows = db.rows(chosen, args)
        events = db.rows(
            "SELECT call, kind, step, at, data FROM call_events"
            f" WHERE call IN (SELECT id FROM ({chosen}) AS chosen) ORDER BY call, seq",
            args,
        )
    records = {row[0]: _record(row) for row in reversed(rows)}
    gathered: dict[int, list[str]] = {}
    for event in events:
        _add_to(records[event[0]], gathered.setdefault(event[0], []), event)
    for row_id, keys in gathered.items():
        records[row_id].digits = ",".join(keys)
    return list(records.values())


def read_timeline(db: Db, carrier: str, call_id: str) -> list[dict[str, Any]] | None:
    """One call's events in time order, each `{"at", "kind", "step", ...}`: `started`, `step`,
    `digits`, `vars`, `webhook` and `note` (`note`: its kind, `data`) as recorded, and `ended`
    once it has. None when the call was never recorded. Read in one snapshot."""
    with db.snapshot():
        found_rows = db.rows(
            f"SELECT {_RECORD_COLUMNS} FROM calls WHERE carrier = ? AND call_id = ?",
            (carrier, call_id),
        )
        row = found_rows[0] if found_rows else None
        events = []
        if row is not None:
            events = db.rows(
                "SELECT kind, step, at, data FROM call_events WHERE call = ? ORDER BY seq",
                (row[0],),
            )
    if row is None:
        return None
    record = _record(row)
    found: list[dict[str, Any]] = []
    if record.started_at:
        found.append({"at": record.started_at, "kind": "started", "step": None,
                      "direction": record.direction, "from": record.from_number,
                      "to": record.to_number, "flow": record.flow})  # fmt: skip
    for kind, step, at, text in events:
        data = load_json(text)
        entry: dict[str, Any] = {"at": at, "kind": kind, "step": step}
        if kind == "note":
            entry |= {"note": data.get("kind"), "data": data.get("data", {})}
        else:
            entry |= {k: v for k, v in data.items() if k not in entry}
        found.append(entry)
    if record.ended_at:
        found.append({"at": record.ended_at, "kind": "ended", "step": None,
                      "outcome": record.outcome, "hangup_cause": record.hangup_cause,
                      "duration": record.duration})  # fmt: skip
    # In time order: the carrier's hangup callback (the end) can be stamped before the last
    # notes of the stream; events stamped alike keep the order they were recorded in.
    found.sort(key=lambda entry: entry["at"])
    return found
