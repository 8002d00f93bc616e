"""Tests for the call log's writer thread: bad records, writes after close, durability and
sharing the file with other connections."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from telebridge.calllog import CallLog, writer
from tests.calllog.support import CALL, SQLITE_ONLY, count, wait_until

ORIGINAL_LINGER_S = writer.LINGER_S


def test_one_bad_record_does_not_lose_the_others(
    log: CallLog, caplog: pytest.LogCaptureFixture
) -> None:
    loop: list[object] = []
    loop.append(loop)  # cannot be written as JSON
    recorder = log.start_call(**CALL)
    recorder.step_entered("menu")
    recorder.note("broken", value=loop)
    recorder.step_entered("goodbye")
    with caplog.at_level(logging.ERROR, logger="telebridge.calllog.writer"):
        record = log.get("plivo", "c-1")
    assert record is not None
    assert record.steps == ["menu", "goodbye"]
    assert record.notes == []
    assert any("could not record" in r.getMessage() for r in caplog.records)


def test_records_after_close_are_dropped_with_a_warning(
    target: Path | str, caplog: pytest.LogCaptureFixture
) -> None:
    log = CallLog(target)
    recorder = log.start_call(**CALL)
    log.close()
    log.close()  # idempotent
    with caplog.at_level(logging.WARNING, logger="telebridge.calllog.writer"):
        recorder.step_entered("late")
    assert any("closed" in r.getMessage() for r in caplog.records)
    with pytest.raises(RuntimeError, match="closed"):
        log.list_calls()
    assert count(target, "SELECT COUNT(*) FROM call_events") == 0


# --- durability and sharing ---------------------------------------------------------------


def test_records_reach_the_disk_without_flush_or_close(log: CallLog, target: Path | str) -> None:
    recorder = log.start_call(**CALL)
    recorder.step_entered("menu")
    recorder.digits_collected("menu", "1")
    # No flush, no read through the log: another connection sees the rows on its own.
    wait_until(lambda: count(target, "SELECT COUNT(*) FROM call_events") == 2)
    assert count(target, "SELECT COUNT(*) FROM calls WHERE call_id = 'c-1'") == 1


def test_everything_recorded_is_on_disk_after_close(target: Path | str) -> None:
    log = CallLog(target)
    recorders = [log.start_call(**CALL | {"call_id": f"c-{n}"}) for n in range(20)]
    for i in range(100):
        for recorder in recorders:
            recorder.step_entered(f"s{i}")
    for recorder in recorders:
        recorder.finish("hangup")
    log.close()
    assert count(target, "SELECT COUNT(*) FROM call_events") == 2000
    assert count(target, "SELECT COUNT(*) FROM calls WHERE outcome = 'hangup'") == 20
    with CallLog(target) as reopened:
        record = reopened.get("plivo", "c-7")
    assert record is not None
    assert record.steps == [f"s{i}" for i in range(100)]


CRASHING_SERVER = """
import sys, time
from telebridge.calllog import CallLog
log = CallLog(sys.argv[1])
recorder = log.start_call(carrier="plivo", call_id="crash", direction="inbound",
                          from_number="+1", to_number="+2", flow="demo", variables={"a": "1"})
recorder.step_entered("menu")
recorder.digits_collected("menu", "3")
recorder.vars_set({"b": "2"})
print("recorded", flush=True)
time.sleep(60)
"""


def test_a_killed_server_loses_nothing_it_recorded(target: Path | str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_SERVER, str(target)], stdout=subprocess.PIPE, text=True
    )
    on_disk = Path(target).exists if isinstance(target, Path) else lambda: True
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "recorded"
        wait_until(lambda: on_disk() and count(target, "SELECT COUNT(*) FROM call_events") == 3)
    finally:
        os.kill(child.pid, signal.SIGKILL)  # no close(), no atexit: a crash
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    with CallLog(target) as log:
        record = log.get("plivo", "crash")
    assert record is not None
    assert (record.steps, record.digits, record.variables) == (
        ["menu"],
        "3",
        {"a": "1", "b": "2"},
    )


@SQLITE_ONLY
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


@SQLITE_ONLY
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


def test_records_queued_within_the_linger_share_one_transaction(
    log: CallLog, target: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer lingers after a first record: what follows within it shares the commit, so a
    # burst of call starts costs the thread one wake-up per LINGER_S, not one per record. A
    # long linger here, so that the margins hold on a loaded machine.
    monkeypatch.setattr(writer, "LINGER_S", 0.5)
    db = log._writer._db
    commits: list[float] = []
    commit = db.commit

    def counted() -> None:
        commits.append(time.monotonic())
        commit()

    monkeypatch.setattr(db, "commit", counted)
    time.sleep(0.1)  # the writer is back waiting for a first record
    started = time.monotonic()
    recorder = log.start_call(**CALL)
    time.sleep(0.1)
    recorder.step_entered("menu")
    time.sleep(0.1)
    recorder.step_entered("goodbye")
    wait_until(lambda: count(target, "SELECT COUNT(*) FROM call_events") == 2)
    assert len(commits) == 1
    assert 0.5 <= commits[0] - started < 5
    assert writer.LINGER_S == 0.5 and ORIGINAL_LINGER_S <= 0.05  # milliseconds in production
