"""A campaign and `telebridge call --wait` on a PostgreSQL call log that goes away for a while:
they wait for it and go on (the bridge's log buffers what it records meanwhile), instead of
failing mid-run. And a campaign's state in PostgreSQL (`campaign_pg`): a lost server waited out
without calling anyone twice, an attempt whose commit's answer was lost recorded once, two runs of
one list at once, and a campaign found again by a copy of its list or its id."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from telebridge.calllog import CallLog
from telebridge.cli.ops import _wait_for
from telebridge.outbound.campaign import CampaignRunner, resume, start
from telebridge.outbound.campaign_pg import PostgresCampaignState
from telebridge.outbound.campaign_plan import CampaignError, Plan
from telebridge.outbound.campaign_state import CampaignStore
from telebridge.outbound.placing import UNKNOWN, Dialer
from telebridge.simulator.fake_plivo_api import FakePlivoApi
from tests.outbound.campaign_fixtures import (
    PlayedBridge,
    number,
    people,
    read_results,
    write_list,
)
from tests.outbound.fixtures import FROM, clean_env, cli_env, plivo_api, plivo_settings, run_cli
from tests.servers.cutting_proxy import CuttingProxy
from tests.servers.postgres import PostgresServer

__all__ = ["clean_env", "plivo_api"]  # shared fixtures

ROOT = Path(__file__).resolve().parents[2]


async def test_a_campaign_waits_out_a_lost_database(
    plivo_api: tuple[FakePlivoApi, str],
    pg_url: str,
    postgres_server: PostgresServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake, url = plivo_api
    settings = plivo_settings(url, tmp_path, telebridge_db=pg_url)
    state = start(write_list(tmp_path / "list.csv", people(3)), Plan(
        carrier="plivo", from_number=FROM, rate=2.0, concurrency=1))  # fmt: skip
    with CallLog(pg_url) as bridge_log, CallLog(pg_url) as log:
        played = PlayedBridge(bridge_log)
        fake.on_create = played.on_create
        runner = CampaignRunner(state, Dialer(settings, "plivo", FROM), log, poll_interval=0.05)
        with caplog.at_level(logging.WARNING, logger="telebridge.outbound.campaign"):
            running = asyncio.create_task(runner.run())
            while not played.creates:
                await asyncio.sleep(0.02)
            await asyncio.to_thread(postgres_server.stop)
            await asyncio.sleep(1.5)  # polls fail meanwhile: the campaign must not
            assert not running.done()
            await asyncio.to_thread(postgres_server.start)
            await asyncio.wait_for(running, 60)
    assert "waiting for it" in caplog.text
    results = Path(state.plan.results)
    state.write_results(results)
    assert [r["outcome"] for r in read_results(results)] == ["answered"] * 3
    state.close()


def test_call_wait_says_when_the_database_could_not_be_read(
    pg_url: str,
    postgres_server: PostgresServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = plivo_settings("http://127.0.0.1:9", tmp_path, telebridge_db=pg_url)
    away = threading.Timer(0.5, postgres_server.stop)  # after the first look, before the next
    away.start()
    try:
        verdict = _wait_for(settings, "plivo", "attempt-1", "request-1", 3.0)
    finally:
        away.join()
        postgres_server.start()
    assert verdict.outcome == UNKNOWN and verdict.detail.startswith("could not read it: ")
    err = capsys.readouterr().err
    assert err.count("waiting for it") == 1 and "Traceback" not in err


# --- the campaign's state in PostgreSQL -------------------------------------------------------


def attempts_in(pg_url: str, campaign_id: str) -> list[tuple[str, str]]:
    """The attempts the database holds for the campaign: (id, state), by id."""
    with psycopg.connect(pg_url) as conn:
        found = conn.execute(
            "SELECT id, state FROM campaign_attempts WHERE campaign = %s ORDER BY id",
            (campaign_id,),
        ).fetchall()
    return [(str(i), str(s)) for i, s in found]


def pg_campaign(pg_url: str, tmp_path: Path, rows: int, **plan: object) -> CampaignStore:
    values: dict[str, object] = {"carrier": "plivo", "from_number": FROM, "rate": 20.0}
    values.update(plan)
    list_path = write_list(tmp_path / "list.csv", people(rows))
    return start(list_path, Plan(**values), database=pg_url)  # type: ignore[arg-type]


async def test_the_state_waits_out_a_lost_database_and_calls_nobody_twice(
    plivo_api: tuple[FakePlivoApi, str],
    pg_url: str,
    postgres_server: PostgresServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake, url = plivo_api
    settings = plivo_settings(url, tmp_path, telebridge_db=pg_url)
    state = pg_campaign(pg_url, tmp_path, 6, concurrency=2)
    assert not (tmp_path / "list.campaign.db").exists()  # no file: the state is in the database
    with CallLog(pg_url) as bridge_log, CallLog(pg_url) as log:
        played = PlayedBridge(bridge_log)
        fake.on_create = played.on_create
        runner = CampaignRunner(state, Dialer(settings, "plivo", FROM), log, poll_interval=0.05)
        with caplog.at_level(logging.INFO, logger="telebridge.outbound.campaign_pg"):
            running = asyncio.create_task(runner.run())
            while len(played.creates) < 2:
                await asyncio.sleep(0.02)
            await asyncio.to_thread(postgres_server.stop)
            before = len(played.creates)
            await asyncio.sleep(1.5)  # commits fail meanwhile: the campaign waits for them
            assert not running.done()
            # No call goes out while no attempt can be committed (at most those committed
            # before the stop, one per free slot).
            assert len(played.creates) <= before + 2
            await asyncio.to_thread(postgres_server.start)
            finished = await asyncio.wait_for(running, 60)
    assert finished == {"answered": 6}
    assert "waiting for it" in caplog.text and "the database is back" in caplog.text
    assert "password" not in caplog.text.lower()
    called = [to for _, to, _ in played.creates]
    assert sorted(called) == [number(i) for i in range(1, 7)]  # nobody twice
    cid = state.plan.campaign_id
    assert attempts_in(pg_url, cid) == [(f"{cid}-{i}-1", "done") for i in range(1, 7)]
    state.close()


async def test_a_database_away_too_long_stops_the_campaign_to_be_resumed(
    plivo_api: tuple[FakePlivoApi, str],
    pg_url: str,
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> None:
    fake, url = plivo_api
    settings = plivo_settings(url, tmp_path)  # the call log in a file: only the state goes away
    state = pg_campaign(pg_url, tmp_path, 4, concurrency=1, rate=5.0)
    assert isinstance(state, PostgresCampaignState)
    state.outage_limit = 0.5
    with CallLog(settings.telebridge_db) as log:
        played = PlayedBridge(log)
        fake.on_create = played.on_create
        runner = CampaignRunner(state, Dialer(settings, "plivo", FROM), log, poll_interval=0.05)
        running = asyncio.create_task(runner.run())
        while not played.creates:
            await asyncio.sleep(0.02)
        await asyncio.to_thread(postgres_server.stop)
        with pytest.raises(CampaignError, match=f"campaign resume {state.campaign_id}"):
            await asyncio.wait_for(running, 30)
        state.close()
        await asyncio.to_thread(postgres_server.start)
        resumed = resume(state.campaign_id, database=pg_url)
        runner = CampaignRunner(resumed, Dialer(settings, "plivo", FROM), log, poll_interval=0.05)
        finished = await asyncio.wait_for(runner.run(), 60)
        resumed.close()
    assert sum(finished.values()) == 4
    counts = [played.created(number(i)) for i in range(1, 5)]
    assert max(counts) == 1, counts


def test_an_attempt_whose_commit_answer_was_lost_is_recorded_once(
    pg_url: str, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    with CuttingProxy(postgres_server.port) as proxy:
        url = pg_url.replace(f":{postgres_server.port}/", f":{proxy.port}/")
        state = pg_campaign(url, tmp_path, 2)
        row = state.next_due(time.time())
        assert row is not None
        proxy.cut_after(b"INSERT INTO campaign_attempts")
        attempt = state.begin(row, time.time())  # sent again on a new connection
        assert proxy.cut.is_set()  # the insert happened, and its answer was lost
        assert state.unfinished() == [attempt]
        following = state.next_due(time.time())
        assert following is not None and following.idx == 2  # row 1 is taken
        state.close()
    cid = state.plan.campaign_id
    assert attempts_in(pg_url, cid) == [(f"{cid}-1-1", "placing")]


def test_two_runs_of_one_list_at_once_make_one_campaign(pg_url: str, tmp_path: Path) -> None:
    list_path = write_list(tmp_path / "list.csv", people(3))
    outcomes: list[CampaignStore | CampaignError] = []

    def run() -> None:
        try:
            outcomes.append(
                start(list_path, Plan(carrier="plivo", from_number=FROM), database=pg_url)
            )
        except CampaignError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]  # a fresh database: both migrate
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    made = [o for o in outcomes if not isinstance(o, CampaignError)]
    refused = [o for o in outcomes if isinstance(o, CampaignError)]
    assert len(made) == 1 and len(refused) == 1, outcomes
    assert f"telebridge campaign resume {made[0].resume_with}" in str(refused[0])
    made[0].close()


def test_a_copy_of_the_list_finds_its_campaign_and_another_list_does_not(
    pg_url: str, tmp_path: Path
) -> None:
    state = pg_campaign(pg_url, tmp_path, 3)
    state.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copy = elsewhere / "renamed.csv"
    copy.write_bytes((tmp_path / "list.csv").read_bytes())
    found = resume(str(copy), database=pg_url)
    assert found.resume_with == state.plan.campaign_id and found.plan == state.plan
    found.close()
    other = write_list(elsewhere / "other.csv", people(4))
    with pytest.raises(CampaignError, match="no unfinished campaign from this list"):
        resume(str(other), database=pg_url)
    with pytest.raises(CampaignError, match="campaign nope: not in postgresql://"):
        resume("nope", database=pg_url)


# --- the command, with the state in PostgreSQL ------------------------------------------------

_CLI = (
    "import sys; from tests.outbound.fixtures import run_cli; "
    "code, out, err = run_cli(sys.argv[1:]); sys.stderr.write(err); sys.exit(code)"
)


async def stopped_run(
    played: PlayedBridge, list_path: Path, how: signal.Signals
) -> subprocess.CompletedProcess[str]:
    """`campaign run` in a process of its own, stopped by `how` once three calls went out."""
    argv = ["campaign", "run", str(list_path), "--carrier", "plivo", "--from", FROM,
            "--rate", "10", "--concurrency", "2", "--wait", "1.5", "--poll", "0.05"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", _CLI, *argv], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while len(played.creates) < 3 and process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert process.poll() is None, "the campaign ended before it could be stopped"
        process.send_signal(how)
        _, err = await asyncio.to_thread(process.communicate, None, 30)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(argv, process.returncode, "", err)


@pytest.fixture
async def pg_bridge(
    plivo_api: tuple[FakePlivoApi, str],
    pg_url: str,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[PlayedBridge]:
    """The CLI's settings with `TELEBRIDGE_DB` the test's database, the test playing the bridge
    in its call log."""
    fake, url = plivo_api
    cli_env(monkeypatch, clean_env, url)
    monkeypatch.setenv("TELEBRIDGE_DB", pg_url)
    with CallLog(pg_url) as log:
        played = PlayedBridge(log, duration=0.3)
        fake.on_create = played.on_create
        yield played


async def test_a_killed_campaign_resumes_by_a_copy_of_its_list_from_elsewhere(
    pg_bridge: PlayedBridge, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    played = pg_bridge
    list_path = write_list(clean_env / "list.csv", people(8))
    await stopped_run(played, list_path, signal.SIGKILL)  # a crash: no clean-up, no output
    with psycopg.connect(os.environ["TELEBRIDGE_DB"]) as conn:
        ((campaign_id,),) = conn.execute("SELECT id FROM campaigns").fetchall()
    assert not (clean_env / "list.campaign.db").exists()
    called_before = len(played.creates)
    assert 3 <= called_before < 8

    base = ["campaign", "run", str(list_path), "--carrier", "plivo", "--from", FROM]
    code, _, err = await asyncio.to_thread(run_cli, base)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"`telebridge campaign resume {campaign_id}`" in err

    elsewhere = clean_env / "another-machine"
    elsewhere.mkdir()
    (elsewhere / "copy.csv").write_bytes(list_path.read_bytes())
    monkeypatch.chdir(elsewhere)
    code, out, err = await asyncio.to_thread(
        run_cli, ["campaign", "resume", "copy.csv", "--poll", "0.05"]
    )
    assert code == 0, err
    assert out.startswith("campaign done: ")
    counts = [played.created(number(i)) for i in range(1, 9)]
    assert max(counts) == 1, counts  # nobody twice
    table = read_results(clean_env / "list.results.csv")  # where the plan said
    unknown = [r for r in table if r["outcome"] == "unknown"]
    assert len(unknown) <= 2  # attempts recorded whose request never left before the kill
    assert all(r["outcome"] == "answered" for r in table if r not in unknown)
    assert sum(counts) + len(unknown) == 8


async def test_a_stopped_campaign_resumes_by_its_id_from_another_folder(
    pg_bridge: PlayedBridge, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    played = pg_bridge
    list_path = write_list(clean_env / "list.csv", people(6))
    stopped = await stopped_run(played, list_path, signal.SIGINT)  # Ctrl-C
    assert stopped.returncode == 130, stopped.stderr
    (hint,) = [ln for ln in stopped.stderr.splitlines() if ln.startswith("stopped:")]
    campaign_id = hint.rpartition("campaign resume ")[2].strip("`")
    assert len(campaign_id) == 8 and "postgresql" not in hint
    where = f"PostgreSQL {os.environ['TELEBRIDGE_DB']} (campaign {campaign_id})"
    assert f"campaign {campaign_id}: state in {where}" in stopped.stderr.splitlines()

    elsewhere = clean_env / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = await asyncio.to_thread(
        run_cli, ["campaign", "resume", campaign_id, "--poll", "0.05"]
    )
    assert code == 0, err
    assert out.strip() == f"campaign done: 6 answered; results in {clean_env / 'list.results.csv'}"
    assert sorted(to for _, to, _ in played.creates) == [number(i) for i in range(1, 7)]
    # Finished: the same list may run again, as a new campaign.
    code, out, err = await asyncio.to_thread(
        run_cli, ["campaign", "run", str(list_path), "--carrier", "plivo", "--from", FROM,
                  "--poll", "0.05", "--results", str(elsewhere / "again.csv")],
    )  # fmt: skip
    assert code == 0, err
    assert len(played.creates) == 12


@pytest.mark.parametrize("database", ["postgresql://db/calls", None])
def test_psycopg_is_loaded_only_for_a_url(database: str | None, tmp_path: Path) -> None:
    list_path = write_list(tmp_path / "list.csv", people(1))
    script = (
        "import sys; sys.modules['psycopg'] = None\n"  # as if it were not installed
        "from pathlib import Path\n"
        "from telebridge.outbound.campaign import CampaignError, Plan, start\n"
        f"try:\n    start(Path({str(list_path)!r}), Plan('plivo', {FROM!r}), database={database!r})"
        ".close()\nexcept CampaignError as exc:\n    print(exc)\nelse:\n    print('made')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if database is None:
        assert result.stdout.strip() == "made", result.stderr
    else:
        assert result.stdout.strip() == (
            "TELEBRIDGE_DB: a campaign's state in PostgreSQL needs psycopg: "
            "pip install 'telebridge[cluster]'"
        ), result.stderr


def test_one_process_runs_a_campaign_at_a_time(pg_url: str, tmp_path: Path) -> None:
    state = pg_campaign(pg_url, tmp_path, 2)
    with pytest.raises(CampaignError, match="is being run by another process"):
        resume(state.resume_with, database=pg_url)
    state.close()  # its lock goes with its connection
    again = resume(state.resume_with, database=pg_url)
    assert again.open_rows() == 2
    again.close()


def test_a_lost_session_the_server_still_keeps_is_ended_to_go_on(
    pg_url: str, tmp_path: Path
) -> None:
    state = pg_campaign(pg_url, tmp_path, 2)
    assert isinstance(state, PostgresCampaignState)
    stale = state._conn  # as if the network went silent: the server still holds its lock
    assert stale is not None
    state._conn = None
    assert state.open_rows() == 2  # a new connection, once the stale session was ended
    with pytest.raises(psycopg.OperationalError):
        stale.execute("SELECT 1")
    stale.close()
    state.close()
