"""Tests for the call log: schema and migrations, recording, durability, reads and output."""

from __future__ import annotations

import csv
import gc
import io
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from telebridge.calllog.store import (
    NO_STREAM,
    SCHEMA_VERSION,
    CallLog,
    CallLogError,
    CallRecord,
    format_table,
    parse_since,
    to_csv,
    to_json_lines,
)
from telebridge.flows.loader import parse_flow
from telebridge.flows.runner import FlowRecorder, FlowRunner, SpeechOverrides
from telebridge.settings import load_settings

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
CALL: dict[str, Any] = {
    "carrier": "plivo",
    "call_id": "c-1",
    "direction": "inbound",
    "from_number": "+15550001111",
    "to_number": "+15550002222",
    "flow": "demo",
}


class Clock:
    """A settable clock for the log, so times in assertions are exact."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "calls.db"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(db: Path, clock: Clock) -> Iterator[CallLog]:
    call_log = CallLog(db, clock=clock)
    yield call_log
    call_log.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def count(path: Path, sql: str) -> int:
    """Read through a separate plain connection, as another process would."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


# --- schema -------------------------------------------------------------------------------


def test_open_creates_the_schema_in_wal_mode_and_reopening_changes_nothing(db: Path) -> None:
    CallLog(db).close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        schema_before = conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()
    with CallLog(db) as again:
        again.start_call(**CALL).finish("hangup")
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == (
            schema_before
        )
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_two_logs_opening_a_new_file_at_once_both_succeed(db: Path) -> None:
    logs: list[CallLog] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            logs.append(CallLog(db))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for opened in logs:
        opened.close()
    assert errors == []
    assert len(logs) == 4


# The layout of an early prototype that never set user_version: no direction, hangup cause,
# duration or variables, and no events table.
PROTOTYPE = """
CREATE TABLE calls (id INTEGER PRIMARY KEY, carrier TEXT NOT NULL, call_id TEXT NOT NULL,
    from_number TEXT, to_number TEXT, flow TEXT, started_at TEXT, ended_at TEXT, outcome TEXT);
CREATE UNIQUE INDEX calls_key ON calls (carrier, call_id);
INSERT INTO calls VALUES (1, 'plivo', 'old-1', '+15550001111', '+15550002222', 'demo',
    '2024-04-01T10:00:00.000Z', '2024-04-01T10:01:00.000Z', 'hangup');
INSERT INTO calls VALUES (2, 'vonage', 'old-2', '+15550003333', '+15550004444', 'menu',
    '2024-04-02T10:00:00.000Z', NULL, NULL);
"""


def test_an_unversioned_prototype_file_is_migrated_without_losing_rows(
    db: Path, clock: Clock
) -> None:
    conn = sqlite3.connect(db)
    conn.executescript(PROTOTYPE)
    conn.close()
    with CallLog(db, clock=clock) as log:
        old = log.get("plivo", "old-1")
        assert old is not None
        assert (old.from_number, old.flow, old.outcome) == ("+15550001111", "demo", "hangup")
        assert (old.started_at, old.ended_at) == (
            "2024-04-01T10:00:00.000Z",
            "2024-04-01T10:01:00.000Z",
        )
        assert (old.steps, old.variables, old.hangup_cause, old.duration) == ([], {}, None, None)
        # The migrated file takes new records, also for a call it already held.
        log.record_hangup("vonage", "old-2", "completed", 61)
        log.start_call(**CALL).step_entered("menu")
        records = log.list_calls()
    assert [(r.call_id, r.steps) for r in records] == [
        ("old-1", []),
        ("old-2", []),
        ("c-1", ["menu"]),
    ]
    assert records[1].hangup_cause == "completed"
    assert records[1].duration == 61
    assert count(db, "PRAGMA user_version") == SCHEMA_VERSION
    assert count(db, "SELECT COUNT(*) FROM calls") == 3


def test_a_file_from_a_newer_telebridge_is_refused(db: Path) -> None:
    CallLog(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    assert re.match(r"TELEBRIDGE_DB: .*newer telebridge", refused(db))


# --- bad paths ----------------------------------------------------------------------------


def refused(path: Path) -> str:
    """The error opening `path`; then a collection, so a connection left open warns (3.13)."""
    with pytest.raises(CallLogError) as caught:
        CallLog(path)
    message = str(caught.value)
    del caught
    gc.collect()
    return message


def test_a_directory_is_refused_with_one_line_naming_the_setting(tmp_path: Path) -> None:
    message = refused(tmp_path)
    assert message.startswith("TELEBRIDGE_DB: ")
    assert "directory" in message
    assert "\n" not in message


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 50)
    message = refused(path)
    assert message.startswith("TELEBRIDGE_DB: ")
    assert "not an SQLite database" in message
    assert "\n" not in message
    assert path.read_text().startswith("these are my notes")  # left alone


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path / "nowhere" / "calls.db")
    assert re.match(r"TELEBRIDGE_DB: cannot create .*no folder", message)
    assert not (tmp_path / "nowhere").exists()


def test_from_settings_uses_telebridge_db(db: Path) -> None:
    with CallLog.from_settings(load_settings(telebridge_db=db)) as log:
        assert log.path == db
    assert db.exists()


# --- recording ----------------------------------------------------------------------------

BANK = """\
start: welcome
steps:
  welcome:
    set: {greeting: "Hello {{caller}}"}
    say: "{{greeting}}. Press 1 for your balance."
    gather: {max_digits: 1, timeout: 0.01}
    routes: {"1": pin}
    default: goodbye
  pin:
    say: "Enter your PIN, then hash."
    gather: {max_digits: 8, timeout: 0.01, finish_on_key: "#"}
    next: goodbye
  goodbye:
    say: "Goodbye."
    hangup: true
"""


class ScriptedPort:
    """The least call a FlowRunner needs: keys are pressed as scripted, audio plays at once."""

    def __init__(self, keys: str) -> None:
        self.keys = list(keys)
        self.hung_up = False

    async def say(self, text: str, *, barge_in: bool, overrides: SpeechOverrides) -> None:
        pass

    async def play(self, pcm: bytes, sample_rate: int, *, barge_in: bool) -> None:
        pass

    async def pause(self, seconds: float) -> None:
        pass

    async def wait_played(self) -> bool:
        return True

    def take_digits(self) -> str:
        return ""

    async def next_digit(self, timeout: float) -> str | None:  # noqa: ASYNC109
        return self.keys.pop(0) if self.keys else None

    async def transfer(self, to: str, timeout: float) -> bool:  # noqa: ASYNC109
        return False

    async def hangup(self, reason: str) -> None:
        self.hung_up = True


async def test_a_call_run_by_the_flow_runner_is_recorded_and_read_back(
    log: CallLog, clock: Clock
) -> None:
    flow, problems = parse_flow(BANK, "bank")
    assert flow is not None, problems
    variables = {"caller": "+15550001111", "account": "A-7"}
    recorder = log.start_call(**CALL | {"flow": "bank"}, variables=variables)
    as_protocol: FlowRecorder = recorder  # the runner's protocol, checked by mypy
    port = ScriptedPort("1" + "4321#")
    outcome = await FlowRunner(flow, port, variables=variables, recorder=as_protocol).run()
    assert outcome == "hangup"
    recorder.webhook_result("pin", False, "https://crm.example.com/ivr: HTTP 500")
    recorder.webhook_result("pin", True, "HTTP 200")
    recorder.note("tts", first_chunk_ms=120, voice="emily")
    clock.advance(42.5)
    recorder.finish(outcome)

    record = log.get("plivo", "c-1")
    assert record is not None
    assert record.steps == ["welcome", "pin", "goodbye"]
    assert record.digits == "1,4321"  # one entry per gather; the finish key is not a digit
    assert record.variables == {
        "caller": "+15550001111",
        "account": "A-7",
        "greeting": "Hello +15550001111",
    }
    assert [(w["step"], w["ok"], w["detail"]) for w in record.webhooks] == [
        ("pin", False, "https://crm.example.com/ivr: HTTP 500"),
        ("pin", True, "HTTP 200"),
    ]
    assert record.notes == [
        {
            "at": "2024-05-01T09:00:00.000Z",
            "step": "goodbye",
            "kind": "tts",
            "data": {"first_chunk_ms": 120, "voice": "emily"},
        }
    ]
    assert record.outcome == "hangup"
    assert (record.started_at, record.ended_at) == (
        "2024-05-01T09:00:00.000Z",
        "2024-05-01T09:00:42.500Z",
    )
    assert (record.direction, record.from_number, record.to_number, record.flow) == (
        "inbound",
        "+15550001111",
        "+15550002222",
        "bank",
    )
    assert (record.hangup_cause, record.duration) == (None, None)


def test_events_keep_their_order_and_repeats(log: CallLog) -> None:
    recorder = log.start_call(**CALL)
    for step in ["menu", "menu", "hours", "menu", "goodbye"]:
        recorder.step_entered(step)
    recorder.digits_collected("menu", "2")
    recorder.digits_collected("menu", "")
    recorder.digits_collected("menu", "1")
    record = log.get("plivo", "c-1")
    assert record is not None
    assert record.steps == ["menu", "menu", "hours", "menu", "goodbye"]
    assert record.digits == "2,,1"
    assert record.outcome is None and record.ended_at is None  # still going


def test_hangup_after_finish_keeps_the_outcome_and_adds_the_cause(
    log: CallLog, clock: Clock
) -> None:
    log.start_call(**CALL).finish("hangup")
    clock.advance(3)
    log.record_hangup("plivo", "c-1", "NORMAL_CLEARING", 12)
    record = log.get("plivo", "c-1")
    assert record is not None
    assert (record.outcome, record.hangup_cause, record.duration) == (
        "hangup",
        "NORMAL_CLEARING",
        12,
    )
    assert record.ended_at == "2024-05-01T09:00:00.000Z"  # the first end seen


def test_hangup_before_finish_sets_the_end_and_finish_the_outcome(
    log: CallLog, clock: Clock
) -> None:
    recorder = log.start_call(**CALL)
    clock.advance(5)
    log.record_hangup("plivo", "c-1", "ORIGINATOR_CANCEL", 5)
    during = log.get("plivo", "c-1")
    assert during is not None
    assert (during.outcome, during.ended_at) == (None, "2024-05-01T09:00:05.000Z")
    clock.advance(1)
    recorder.finish("caller hung up")
    record = log.get("plivo", "c-1")
    assert record is not None
    assert (record.outcome, record.hangup_cause) == ("caller hung up", "ORIGINATOR_CANCEL")
    assert record.ended_at == "2024-05-01T09:00:05.000Z"


def test_a_call_that_never_streamed_gets_a_row_from_its_hangup(log: CallLog) -> None:
    log.record_hangup(
        "vonage", "v-9", "busy", 0, direction="outbound", from_number="+1", to_number="+2"
    )
    record = log.get("vonage", "v-9")
    assert record is not None
    assert (record.outcome, record.hangup_cause, record.duration) == (NO_STREAM, "busy", 0)
    assert (record.direction, record.from_number, record.to_number) == ("outbound", "+1", "+2")
    assert record.started_at is None
    assert record.ended_at == "2024-05-01T09:00:00.000Z"
    assert log.get("plivo", "v-9") is None  # the key is carrier and call id


def test_a_reconnect_continues_the_same_row(log: CallLog, db: Path, clock: Clock) -> None:
    first = log.start_call(**CALL, variables={"caller": "+15550001111"})
    first.step_entered("menu")
    first.vars_set({"tries": "1"})
    clock.advance(10)
    first.finish("stream closed")
    clock.advance(1)
    second = log.start_call(**CALL, variables={"resumed": "yes"})
    during = log.get("plivo", "c-1")
    assert during is not None
    assert (during.outcome, during.ended_at) == (None, None)  # live again
    second.step_entered("menu")
    second.step_entered("goodbye")
    clock.advance(1)
    second.finish("hangup")
    record = log.get("plivo", "c-1")
    assert record is not None
    assert record.steps == ["menu", "menu", "goodbye"]
    assert record.variables == {"caller": "+15550001111", "tries": "1", "resumed": "yes"}
    assert record.started_at == "2024-05-01T09:00:00.000Z"
    assert (record.outcome, record.ended_at) == ("hangup", "2024-05-01T09:00:12.000Z")
    assert [n["kind"] for n in record.notes] == ["reconnected"]
    assert count(db, "SELECT COUNT(*) FROM calls") == 1
    # The same call id on another carrier is another call.
    log.start_call(**CALL | {"carrier": "vonage"})
    assert len(log.list_calls()) == 2


def test_finish_twice_is_a_bug(log: CallLog) -> None:
    recorder = log.start_call(**CALL)
    recorder.finish("hangup")
    with pytest.raises(RuntimeError, match="finish"):
        recorder.finish("hangup")


def test_one_bad_record_does_not_lose_the_others(
    log: CallLog, caplog: pytest.LogCaptureFixture
) -> None:
    loop: list[object] = []
    loop.append(loop)  # cannot be written as JSON
    recorder = log.start_call(**CALL)
    recorder.step_entered("menu")
    recorder.note("broken", value=loop)
    recorder.step_entered("goodbye")
    with caplog.at_level(logging.ERROR, logger="telebridge.calllog.store"):
        record = log.get("plivo", "c-1")
    assert record is not None
    assert record.steps == ["menu", "goodbye"]
    assert record.notes == []
    assert any("could not record" in r.getMessage() for r in caplog.records)


def test_records_after_close_are_dropped_with_a_warning(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = CallLog(db)
    recorder = log.start_call(**CALL)
    log.close()
    log.close()  # idempotent
    with caplog.at_level(logging.WARNING, logger="telebridge.calllog.store"):
        recorder.step_entered("late")
    assert any("closed" in r.getMessage() for r in caplog.records)
    with pytest.raises(RuntimeError, match="closed"):
        log.list_calls()
    assert count(db, "SELECT COUNT(*) FROM call_events") == 0


# --- durability and sharing ---------------------------------------------------------------


def test_records_reach_the_disk_without_flush_or_close(log: CallLog, db: Path) -> None:
    recorder = log.start_call(**CALL)
    recorder.step_entered("menu")
    recorder.digits_collected("menu", "1")
    # No flush, no read through the log: another connection sees the rows on its own.
    wait_until(lambda: count(db, "SELECT COUNT(*) FROM call_events") == 2)
    assert count(db, "SELECT COUNT(*) FROM calls WHERE call_id = 'c-1'") == 1


def test_everything_recorded_is_on_disk_after_close(db: Path) -> None:
    log = CallLog(db)
    recorders = [log.start_call(**CALL | {"call_id": f"c-{n}"}) for n in range(20)]
    for i in range(100):
        for recorder in recorders:
            recorder.step_entered(f"s{i}")
    for recorder in recorders:
        recorder.finish("hangup")
    log.close()
    assert count(db, "SELECT COUNT(*) FROM call_events") == 2000
    assert count(db, "SELECT COUNT(*) FROM calls WHERE outcome = 'hangup'") == 20
    with CallLog(db) as reopened:
        record = reopened.get("plivo", "c-7")
    assert record is not None
    assert record.steps == [f"s{i}" for i in range(100)]


CRASHING_SERVER = """
import sys, time
from telebridge.calllog.store import CallLog
log = CallLog(sys.argv[1])
recorder = log.start_call(carrier="plivo", call_id="crash", direction="inbound",
                          from_number="+1", to_number="+2", flow="demo", variables={"a": "1"})
recorder.step_entered("menu")
recorder.digits_collected("menu", "3")
recorder.vars_set({"b": "2"})
print("recorded", flush=True)
time.sleep(60)
"""


def test_a_killed_server_loses_nothing_it_recorded(db: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_SERVER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "recorded"
        wait_until(lambda: db.exists() and count(db, "SELECT COUNT(*) FROM call_events") == 3)
    finally:
        os.kill(child.pid, signal.SIGKILL)  # no close(), no atexit: a crash
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    with CallLog(db) as log:
        record = log.get("plivo", "crash")
    assert record is not None
    assert (record.steps, record.digits, record.variables) == (
        ["menu"],
        "3",
        {"a": "1", "b": "2"},
    )


def test_a_reader_in_another_connection_does_not_stop_the_writer(log: CallLog, db: Path) -> None:
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 0  # snapshot taken
        recorder = log.start_call(**CALL)
        recorder.step_entered("menu")
        wait_until(lambda: count(db, "SELECT COUNT(*) FROM call_events") == 1)
        # The open read transaction still sees its snapshot; after it, the new rows.
        assert reader.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 0
        reader.execute("COMMIT")
        assert reader.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 1
    finally:
        reader.close()


def test_a_short_write_lock_elsewhere_is_waited_out(log: CallLog, db: Path) -> None:
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # e.g. the campaign runner writing
        recorder = log.start_call(**CALL)
        recorder.step_entered("menu")
        time.sleep(0.2)
        assert count(db, "SELECT COUNT(*) FROM call_events") == 0  # the writer is waiting
        other.execute("COMMIT")
    finally:
        other.close()
    record = log.get("plivo", "c-1")
    assert record is not None
    assert record.steps == ["menu"]


# --- listing ------------------------------------------------------------------------------


@pytest.fixture
def three_calls(log: CallLog, clock: Clock) -> CallLog:
    """Calls at 09:00, 10:00 (never streamed: counted from its end) and 11:00."""
    log.start_call(**CALL | {"call_id": "a"}).finish("hangup")
    clock.advance(3600)
    log.record_hangup("vonage", "b", "busy", 0)
    clock.advance(3600)
    log.start_call(**CALL | {"call_id": "c"}).finish("transfer")
    return log


def test_list_calls_is_oldest_first(three_calls: CallLog) -> None:
    assert [r.call_id for r in three_calls.list_calls()] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("since", "limit", "expected"),
    [
        (T0 + timedelta(minutes=30), None, ["b", "c"]),
        (T0 + timedelta(hours=1), None, ["b", "c"]),  # at or after
        (T0 + timedelta(hours=2, seconds=1), None, []),
        (datetime(2024, 5, 1, 9, 30), None, ["b", "c"]),  # naive: UTC
        (datetime(2024, 5, 1, 11, 30, tzinfo=UTC).astimezone(), None, []),  # any zone
        (None, 2, ["b", "c"]),  # the newest
        (None, 0, []),
        (T0, 1, ["c"]),
    ],
)
def test_list_calls_filters(
    three_calls: CallLog, since: datetime | None, limit: int | None, expected: list[str]
) -> None:
    assert [r.call_id for r in three_calls.list_calls(since=since, limit=limit)] == expected


def test_get_of_an_unknown_call_is_none(log: CallLog) -> None:
    assert log.get("plivo", "nope") is None
    assert log.list_calls() == []


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
