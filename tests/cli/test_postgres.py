"""The `telebridge` command with `TELEBRIDGE_DB` a PostgreSQL URL: `calls` reads the log from
another process, and a database that cannot be reached (by `calls`, `serve`, `campaign run` and
`campaign resume`) is one line naming the setting, without its password, and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from telebridge.calllog import CallLog
from tests.cli.test_main import FLOWS, clean_env, one_line_error, telebridge
from tests.flows.fakes import unused_port


def test_calls_json_reads_a_postgresql_log(pg_url: str, tmp_path: Path) -> None:
    with CallLog(pg_url) as log:
        recorder = log.start_call(
            carrier="plivo",
            call_id="PG-1",
            direction="inbound",
            from_number="14155550100",
            to_number="14155550199",
            flow="demo",
        )
        recorder.step_entered("menu")
        recorder.digits_collected("menu", "1")
        recorder.finish("hangup")
        log.record_hangup("vonage", "PG-2", "busy", 0, direction="outbound")
    result = telebridge("calls", "--json", cwd=tmp_path, env=clean_env(TELEBRIDGE_DB=pg_url))
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(c["carrier"], c["call_id"], c["outcome"]) for c in calls] == [
        ("plivo", "PG-1", "hangup"),
        ("vonage", "PG-2", "no-stream"),
    ]
    assert (calls[0]["steps"], calls[0]["digits"], calls[0]["from"]) == (
        ["menu"],
        "1",
        "14155550100",
    )


@pytest.mark.parametrize("command", [["calls"], ["serve"]])
def test_an_unreachable_database_is_one_line_without_the_password(
    command: list[str], tmp_path: Path
) -> None:
    url = f"postgresql://bridge:hunter2-secret@127.0.0.1:{unused_port()}/calls"
    env = clean_env(
        TELEBRIDGE_DB=url,
        TELEBRIDGE_PUBLIC_URL="https://bridge.example.com",
        TELEBRIDGE_FLOWS_DIR=str(FLOWS),
        TELEBRIDGE_PORT=str(unused_port()),
    )
    line = one_line_error(telebridge(*command, cwd=tmp_path, env=env, timeout=30))
    assert line.startswith(
        "telebridge: TELEBRIDGE_DB: cannot use postgresql://bridge:***@127.0.0.1:"
    )
    assert "hunter2" not in line


def test_a_database_url_of_another_kind_is_named(tmp_path: Path) -> None:
    env = clean_env(TELEBRIDGE_DB="mysql://bridge:hunter2-secret@db/calls")
    line = one_line_error(telebridge("calls", cwd=tmp_path, env=env))
    assert "TELEBRIDGE_DB" in line and "mysql://" in line
    assert "hunter2" not in line


@pytest.mark.parametrize("command", ["run", "resume"])
def test_a_campaign_with_an_unreachable_database_is_one_line(command: str, tmp_path: Path) -> None:
    url = f"postgresql://bridge:hunter2-secret@127.0.0.1:{unused_port()}/calls"
    env = clean_env(
        TELEBRIDGE_DB=url,
        TELEBRIDGE_PUBLIC_URL="https://bridge.example.com",
        TELEBRIDGE_SECRET="campaign-test-secret-of-enough-length",
        PLIVO_AUTH_ID="MA" + "CAMPAIGNTEST000000",
        PLIVO_AUTH_TOKEN="campaign-test-token",
    )
    (tmp_path / "list.csv").write_text("to,name\n+14155550123,Ada\n")
    argv = {
        "run": ["run", "list.csv", "--carrier", "plivo", "--from", "+14155550100"],
        "resume": ["resume", "list.csv"],
    }[command]
    line = one_line_error(telebridge("campaign", *argv, cwd=tmp_path, env=env, timeout=30))
    assert line.startswith(
        "telebridge: TELEBRIDGE_DB: cannot use postgresql://bridge:***@127.0.0.1:"
    ), line
    assert "hunter2" not in line
    assert not (tmp_path / "list.campaign.db").exists()  # no file made instead
