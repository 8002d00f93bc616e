"""The call log's output for the CLI (`telebridge calls`): JSON lines, CSV and an aligned table,
and `parse_since`, which reads the `--since` option."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from telebridge.calllog.records import CallRecord
from telebridge.calllog.schema import utcnow

__all__ = ["format_table", "parse_since", "to_csv", "to_json_lines"]


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
        return (now or utcnow()).astimezone(UTC) - age
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
