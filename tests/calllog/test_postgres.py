"""Tests of the call log in PostgreSQL only: processes sharing one database, migrations run at
once, a server lost and back while calls are recorded, a COMMIT whose answer was lost, URLs
whose password must not show, and the keepalives and timeouts added to a URL that lacks them."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from telebridge.calllog import CallLog, CallLogError, postgres, writer
from telebridge.calllog.postgres import SCHEMA_VERSION
from tests.calllog.support import CALL, Clock, count, wait_until
from tests.flows.fakes import unused_port
from tests.servers.cutting_proxy import CuttingProxy
from tests.servers.postgres import PostgresServer


def test_two_logs_on_one_database_read_each_others_calls(pg_url: str, clock: Clock) -> None:
    with CallLog(pg_url, clock=clock) as first, CallLog(pg_url, clock=clock) as second:
        first.start_call(**CALL | {"call_id": "one"}).step_entered("menu")
        clock.advance(1)
        other = second.start_call(**CALL | {"call_id": "two", "carrier": "vonage"})
        other.digits_collected("menu", "5")
        first.flush()
        second.flush()
        # The webhook of a call reaching one process while its stream is in the other.
        first.record_hangup("vonage", "two", "completed", 30)
        other.finish("hangup")
        first.flush()
        second.flush()
        for log in (first, second):
            calls = log.list_calls()
            assert [(r.carrier, r.call_id) for r in calls] == [("plivo", "one"), ("vonage", "two")]
            assert calls[0].steps == ["menu"]
            assert (calls[1].digits, calls[1].outcome, calls[1].hangup_cause) == (
                "5",
                "hangup",
                "completed",
            )
    assert count(pg_url, "SELECT COUNT(*) FROM calls") == 2


def test_two_logs_writing_one_call_keep_every_event(pg_url: str) -> None:
    with CallLog(pg_url) as first, CallLog(pg_url) as second:
        recorders = [log.start_call(**CALL) for log in (first, second)]
        for i in range(200):
            recorders[i % 2].step_entered(f"s{i}")
        first.flush()
        second.flush()
        record = first.get("plivo", "c-1")
    assert record is not None
    assert sorted(record.steps) == sorted(f"s{i}" for i in range(200))
    assert count(pg_url, "SELECT COUNT(DISTINCT seq) FROM call_events") == 201  # + reconnected


MIGRATE = """
import sys, time
from telebridge.calllog import CallLog
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
CallLog(sys.argv[1]).close()
print("opened", flush=True)
"""


def test_processes_migrating_a_new_database_at_once_all_succeed(pg_url: str) -> None:
    start = f"{time.time() + 2.0:.3f}"  # after every interpreter has started
    children = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, pg_url, start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0, 0, 0], results
    assert [out for out, _ in results] == ["opened\n"] * 3
    assert count(pg_url, "SELECT version FROM telebridge_schema") == SCHEMA_VERSION
    assert count(pg_url, "SELECT COUNT(*) FROM telebridge_schema") == 1


def test_a_database_from_a_newer_telebridge_is_refused(pg_url: str) -> None:
    CallLog(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE telebridge_schema SET version = version + 1")
    with pytest.raises(CallLogError, match=r"^TELEBRIDGE_DB: .*newer telebridge"):
        CallLog(pg_url)


def test_the_server_lost_while_calls_go_on_loses_and_repeats_nothing(
    pg_url: str, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    with CallLog(pg_url) as log:
        recorder = log.start_call(**CALL)
        recorder.step_entered("welcome")
        assert log.flush(5) and log.degraded is None
        postgres_server.stop()
        with caplog.at_level(logging.WARNING, logger="telebridge.calllog.writer"):
            recorder.step_entered("menu")  # recording goes on: nothing blocks or raises
            recorder.digits_collected("menu", "2")
            recorder.vars_set({"choice": "2"})
            log.start_call(**CALL | {"call_id": "c-2"}).step_entered("welcome")
            wait_until(lambda: log.degraded is not None)
            degraded = log.degraded
            assert degraded is not None and "cannot reach" in degraded
            assert "records waiting" in degraded and "\n" not in degraded
            with pytest.raises(CallLogError) as caught:
                log.get("plivo", "c-1")
            message = str(caught.value)
            assert message.startswith("TELEBRIDGE_DB: ") and "\n" not in message
            recorder.step_entered("goodbye")
            recorder.finish("hangup")
            postgres_server.start()
            wait_until(lambda: log.degraded is None, timeout=15)
        assert log.flush(5)
        record = log.get("plivo", "c-1")
        assert record is not None
        assert (record.steps, record.digits, record.outcome) == (
            ["welcome", "menu", "goodbye"],
            "2",
            "hangup",
        )
        assert record.variables == {"choice": "2"}
        other = log.get("plivo", "c-2")
        assert other is not None and other.steps == ["welcome"]
    assert count(pg_url, "SELECT COUNT(*) FROM call_events") == 6
    assert count(pg_url, "SELECT COUNT(*) FROM calls") == 2
    said = [r.getMessage() for r in caplog.records]
    assert any("cannot reach the database" in line for line in said)
    assert any("is back" in line and "nothing was lost" in line for line in said)


def test_beyond_the_bound_records_are_dropped_loudly(
    pg_url: str,
    postgres_server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer, "MAX_WAITING", 5)
    with CallLog(pg_url) as log:
        recorder = log.start_call(**CALL)
        assert log.flush(5)
        postgres_server.stop()
        with caplog.at_level(logging.WARNING, logger="telebridge.calllog.writer"):
            for i in range(8):
                recorder.step_entered(f"s{i}")
            postgres_server.start()
            wait_until(lambda: log.degraded is None and log.flush(1), timeout=15)
        record = log.get("plivo", "c-1")
    assert record is not None and record.steps == ["s0", "s1", "s2", "s3", "s4"]
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("dropping new ones" in line for line in said)
    assert any("3 records were dropped" in line for line in said)


def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    url = f"postgresql://alice:s3cr%40t-pw@127.0.0.1:{unused_port()}/calls"
    with pytest.raises(CallLogError) as caught:
        CallLog(url)
    message = str(caught.value)
    assert message.startswith("TELEBRIDGE_DB: cannot use postgresql://alice:***@127.0.0.1:")
    assert "s3cr" not in message and "\n" not in message
    assert re.search(r"refused|failed", message)


def test_a_password_given_as_a_parameter_is_hidden_too() -> None:
    url = f"postgresql://127.0.0.1:{unused_port()}/calls?user=alice&password=s3cr3t-pw"
    with pytest.raises(CallLogError) as caught:
        CallLog(url)
    assert "s3cr3t" not in str(caught.value) and "password=%2A%2A%2A" in str(caught.value)


def test_without_psycopg_a_postgresql_url_says_what_to_install() -> None:
    script = (
        "import sys; sys.modules['psycopg'] = None\n"  # as if it were not installed
        "from telebridge.calllog import CallLog, CallLogError\n"
        "try:\n    CallLog('postgresql://db/calls')\n"
        "except CallLogError as exc:\n    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.startswith("TELEBRIDGE_DB: a PostgreSQL call log needs psycopg"), (
        result.stderr
    )
    assert "telebridge[cluster]" in result.stdout


def test_sqlite_users_never_load_psycopg(tmp_path: object) -> None:
    script = (
        "import sys; from telebridge.calllog import CallLog; "
        f"CallLog({str(tmp_path)!r} + '/c.db').close(); print('psycopg' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_a_batch_whose_commit_answer_was_lost_is_not_written_twice(
    pg_url: str, postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    with CuttingProxy(postgres_server.port) as proxy:
        url = pg_url.replace(f":{postgres_server.port}/", f":{proxy.port}/")
        with CallLog(url) as log:
            recorder = log.start_call(**CALL)
            assert log.flush(5)
            proxy.cut_after(b"COMMIT")
            with caplog.at_level(logging.WARNING, logger="telebridge.calllog.writer"):
                recorder.step_entered("menu")
                recorder.digits_collected("menu", "1")
                recorder.finish("hangup")
                assert log.flush(10)
            assert proxy.cut.is_set()  # the batch was committed, and its answer lost
            record = log.get("plivo", "c-1")
    assert record is not None
    assert (record.steps, record.digits, record.outcome) == (["menu"], "1", "hangup")
    assert count(pg_url, "SELECT COUNT(*) FROM call_events") == 2
    said = [r.getMessage() for r in caplog.records]
    assert any("cannot reach the database" in line for line in said)  # it was sent again


def test_closing_while_the_server_is_away_says_what_was_dropped(
    pg_url: str,
    postgres_server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer, "CLOSE_GRACE_S", 0.5)
    log = CallLog(pg_url)
    recorder = log.start_call(**CALL)
    assert log.flush(5)
    postgres_server.stop()
    with caplog.at_level(logging.WARNING, logger="telebridge.calllog.writer"):
        recorder.step_entered("menu")
        recorder.finish("hangup")
        wait_until(lambda: log.degraded is not None)
        log.close()  # gives up after the grace, instead of hanging the process's exit
    postgres_server.start()
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("2 records were dropped" in line for line in said), said
    assert count(pg_url, "SELECT COUNT(*) FROM call_events") == 0


def test_both_backends_give_the_same_records(pg_url: str, tmp_path: Path) -> None:
    def script(log: CallLog, clock: Clock) -> list[dict[str, object]]:
        recorder = log.start_call(**CALL, variables={"caller": "+15550001111"})
        for step in ["menu", "pin", "menu"]:
            recorder.step_entered(step)
            clock.advance(0.25)
        recorder.digits_collected("menu", "1")
        recorder.digits_collected("pin", "4321")
        recorder.vars_set({"tries": "2"})
        recorder.webhook_result("pin", False, "HTTP 500")
        recorder.note("transfer", to="+15550003333", answered=False, took=1.5)
        clock.advance(10)
        recorder.finish("hangup")
        log.record_hangup("plivo", "c-1", "NORMAL_CLEARING", 11.75)
        log.record_hangup("vonage", "v-1", "busy", 0, direction="outbound", to_number="+2")
        return [r.to_json() for r in log.list_calls()]

    with CallLog(tmp_path / "calls.db", clock=(lite := Clock())) as sqlite_log:
        from_sqlite = script(sqlite_log, lite)
    with CallLog(pg_url, clock=(pg := Clock())) as pg_log:
        from_postgresql = script(pg_log, pg)
    assert from_postgresql == from_sqlite
    assert len(from_sqlite) == 2 and from_sqlite[0]["digits"] == "1,4321"


# --- keepalives and timeouts -------------------------------------------------------------------


def test_connections_get_keepalives_and_a_statement_timeout(pg_url: str) -> None:
    with postgres.connect(pg_url) as conn:
        given = conn.info.get_parameters()
        ((timeout,),) = conn.execute("SHOW statement_timeout").fetchall()
    assert timeout == "1min"
    assert (given["keepalives"], given["keepalives_idle"], given["tcp_user_timeout"]) == (
        "1",
        "10",
        "30000",
    )
    assert given["connect_timeout"] == str(postgres.CONNECT_TIMEOUT_S)


def test_what_the_url_sets_is_kept(pg_url: str) -> None:
    url = (
        f"{pg_url}?keepalives_idle=99&connect_timeout=2"
        "&options=-c%20statement_timeout%3D5s%20-c%20search_path%3Dpublic"
    )
    with postgres.connect(url) as conn:
        given = conn.info.get_parameters()
        ((timeout,),) = conn.execute("SHOW statement_timeout").fetchall()
    assert (timeout, given["keepalives_idle"], given["connect_timeout"]) == ("5s", "99", "2")
    assert given["keepalives_count"] == "3"  # what it does not set is added
    other = f"{pg_url}?options=-c%20search_path%3Dpublic"
    with postgres.connect(other) as conn:
        found = conn.execute("SHOW statement_timeout").fetchall()
        found += conn.execute("SHOW search_path").fetchall()
    assert found == [("1min",), ("public",)]  # the user's options, and the timeout beside them
