"""Tests for the call log's CLI output (JSON lines, CSV, table) and parse_since."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from telebridge.calllog import (
    NO_STREAM,
    CallRecord,
    format_table,
    parse_since,
    to_csv,
    to_json_lines,
)

# --- output -------------------------------------------------------------------------------


def sample() -> list[CallRecord]:
    return [
        CallRecord(
            "plivo", "c-1", "inbound", "+15550001111", "+15550002222", "demo",
            "2024-05-01T09:00:00.000Z", "2024-05-01T09:00:42.500Z", "hangup",
            "NORMAL_CLEARING", 42.0, steps=["menu", "hours", "goodbye"], digits="1",
            variables={"caller": "+15550001111", "note": 'say "hi", then go'},
        ),
        CallRecord("vonage", "v-22", from_number="+1", to_number="+2",
                   ended_at="2024-05-01T10:00:00.000Z", outcome=NO_STREAM),
    ]  # fmt: skip


def test_json_lines_carry_the_contract_keys() -> None:
    lines = to_json_lines(sample()).splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    contract = {"carrier", "call_id", "from", "to", "flow", "steps", "digits", "started_at",
                "ended_at", "outcome"}  # fmt: skip
    assert contract <= first.keys()
    assert first["from"] == "+15550001111" and first["to"] == "+15550002222"
    assert first["steps"] == ["menu", "hours", "goodbye"]
    assert (first["digits"], first["outcome"], first["duration"]) == ("1", "hangup", 42.0)
    assert (second["started_at"], second["flow"], second["steps"]) == (None, None, [])
    assert to_json_lines([]) == ""


def test_csv_round_trips_through_a_csv_reader() -> None:
    rows = list(csv.reader(io.StringIO(to_csv(sample()))))
    assert rows[0] == CallRecord.csv_header()
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["from"] == "+15550001111"
    assert first["steps"] == "menu > hours > goodbye"
    assert first["duration"] == "42"
    assert json.loads(first["variables"])["note"] == 'say "hi", then go'
    second = dict(zip(rows[0], rows[2], strict=True))
    assert (second["started_at"], second["duration"], second["outcome"]) == ("", "", NO_STREAM)
    assert len(rows) == 3


def test_the_table_is_aligned() -> None:
    lines = format_table(sample()).splitlines()
    assert len(lines) == 3
    assert lines[0].split()[:3] == ["started", "(UTC)", "carrier"]
    assert lines[1].startswith("2024-05-01 09:00:00  plivo")
    assert lines[2].startswith("2024-05-01 10:00:00  vonage")
    for column in ("carrier", "from", "outcome", "steps"):
        at = lines[0].index(column)
        assert lines[1][at - 1] == " " and lines[1][at] != " "
        assert lines[2][at - 1] == " " and lines[2][at] != " "
    assert lines[1].endswith("menu > hours > goodbye")
    assert "no-stream" in lines[2]
    assert format_table([]) == "no calls recorded\n"


# --- parse_since --------------------------------------------------------------------------

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - timedelta(hours=2)),
        ("30m", NOW - timedelta(minutes=30)),
        ("7d", NOW - timedelta(days=7)),
        ("45s", NOW - timedelta(seconds=45)),
        ("1w", NOW - timedelta(weeks=1)),
        (" 1.5h ", NOW - timedelta(minutes=90)),
        ("2H", NOW - timedelta(hours=2)),
        ("2024-04-30", datetime(2024, 4, 30, tzinfo=UTC)),
        ("2024-04-30T08:15", datetime(2024, 4, 30, 8, 15, tzinfo=UTC)),
        ("2024-04-30 08:15:30", datetime(2024, 4, 30, 8, 15, 30, tzinfo=UTC)),
        ("2024-04-30T08:15:00Z", datetime(2024, 4, 30, 8, 15, tzinfo=UTC)),
        ("2024-04-30T10:15:00+02:00", datetime(2024, 4, 30, 8, 15, tzinfo=UTC)),
    ],
)
def test_parse_since_reads_times_and_ages(text: str, expected: datetime) -> None:
    parsed = parse_since(text, now=NOW)
    assert parsed == expected
    assert parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["", "yesterday", "2 hours", "-2h", "2024-13-01", "h", "10y"])
def test_parse_since_explains_what_it_accepts(text: str) -> None:
    with pytest.raises(ValueError, match=r"cannot read .* as a time: .*30m, 2h, 7d"):
        parse_since(text, now=NOW)


def test_parse_since_defaults_to_the_current_time() -> None:
    before = datetime.now(UTC)
    parsed = parse_since("1h")
    assert before - timedelta(hours=1) <= parsed <= datetime.now(UTC) - timedelta(hours=1)
