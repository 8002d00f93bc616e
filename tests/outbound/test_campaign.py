"""Campaigns against the fake Plivo REST API, with the test playing the bridge in the call log:
rate and concurrency limits, retries, resume after a stop or a kill, the results file, and the
state file's commits (off the event loop, each before its call).

Tests taking `state_db` run on both stores: the SQLite file and PostgreSQL (a fresh database)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from telebridge.calllog import CallLog
from telebridge.outbound.campaign import CampaignRunner, resume, start
from telebridge.outbound.campaign_csv import Row
from telebridge.outbound.campaign_plan import CampaignError, Plan
from telebridge.outbound.campaign_state import (
    Attempt,
    CampaignState,
    CampaignStore,
    state_path_for,
)
from telebridge.outbound.placing import Dialer
from telebridge.outbound.request import CallbackUrls
from telebridge.settings import load_settings
from telebridge.simulator.fake_plivo_api import FakePlivoApi
from telebridge.tokens import Keys
from tests.outbound.campaign_fixtures import (
    PlayedBridge,
    bridge,
    number,
    people,
    read_results,
    write_list,
)
from tests.outbound.fixtures import FROM, clean_env, cli_env, plivo_api, plivo_settings, run_cli

__all__ = ["bridge", "clean_env", "plivo_api"]  # shared fixtures

ROOT = Path(__file__).resolve().parents[2]


_OPEN_STATES: list[CampaignStore] = []


@pytest.fixture(params=["sqlite", "postgresql"])
def state_db(request: pytest.FixtureRequest) -> str | None:
    """`TELEBRIDGE_DB` as the campaign's store sees it: None (the file), or a PostgreSQL URL."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return None


@pytest.fixture(autouse=True)
def _close_states() -> Iterator[None]:
    """States `run_campaign` hands back are closed after the test (3.13 warns otherwise)."""
    yield
    while _OPEN_STATES:
        _OPEN_STATES.pop().close()


async def run_campaign(
    url: str,
    tmp_path: Path,
    rows: list[dict[str, str]],
    state_db: str | None = None,
    **plan: object,
) -> tuple[CampaignStore, Path]:
    settings = plivo_settings(url, tmp_path)
    list_path = write_list(tmp_path / "list.csv", rows)
    values: dict[str, object] = {"carrier": "plivo", "from_number": FROM, "rate": 50.0}
    values.update(plan)
    state = start(list_path, Plan(**values), database=state_db)  # type: ignore[arg-type]
    _OPEN_STATES.append(state)
    with CallLog(settings.telebridge_db) as log:
        runner = CampaignRunner(state, Dialer(settings, "plivo", FROM), log, poll_interval=0.03)
        await runner.run()
    results = Path(state.plan.results)
    state.write_results(results)
    return state, results


# --- running --------------------------------------------------------------------------------


async def test_each_row_is_called_once_with_its_variables(
    bridge: tuple[PlayedBridge, str], tmp_path: Path, state_db: str | None
) -> None:
    played, url = bridge
    rows = [*people(4), {"to": number(2), "name": "Again", "time": ""}]  # a duplicate number
    played.script = {number(3): ["busy"], number(4): ["no-answer"]}
    state, results = await run_campaign(url, tmp_path, rows, state_db, concurrency=3)

    assert sorted(to for _, to, _ in played.creates) == [number(i) for i in range(1, 5)]
    table = read_results(results)
    assert [r["to"] for r in table] == [r["to"] for r in rows]
    assert [r["outcome"] for r in table] == [
        "answered",
        "answered",
        "busy",
        "no-answer",
        "duplicate",
    ]
    assert [r["attempts"] for r in table] == ["1", "1", "1", "1", "0"]
    assert table[0]["name"] == "Person 1" and table[0]["time"] == "1 pm"
    assert (table[0]["flow_outcome"], table[0]["digits"]) == ("completed", "1")
    assert (table[2]["hangup_cause"], table[2]["flow_outcome"]) == ("Busy Line", "")
    assert all(r["call_id"] for r in table[:4])
    # The flow got each row's columns, and a campaign-wide attempt id.
    attempts = {to: attempt for _, to, attempt in played.creates}
    assert attempts[number(1)] == f"{state.plan.campaign_id}-1-1"


async def test_calls_are_spaced_by_the_rate(
    bridge: tuple[PlayedBridge, str], tmp_path: Path
) -> None:
    played, url = bridge
    played.duration = 0.01
    await run_campaign(url, tmp_path, people(6), rate=8.0, concurrency=6)
    times = sorted(at for at, _, _ in played.creates)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 6
    assert min(gaps) > 0.09, gaps  # 1/8 s apart, give or take scheduling
    assert times[-1] - times[0] >= 5 * 0.125 * 0.95


async def test_no_more_calls_than_the_concurrency_at_once(
    bridge: tuple[PlayedBridge, str], tmp_path: Path
) -> None:
    played, url = bridge
    played.duration = 0.3
    await run_campaign(url, tmp_path, people(8), concurrency=3)
    assert len(played.creates) == 8
    assert played.max_live == 3  # reached, never passed


async def test_busy_rows_are_retried_and_others_are_not(
    bridge: tuple[PlayedBridge, str], tmp_path: Path, state_db: str | None
) -> None:
    played, url = bridge
    played.script = {
        number(1): ["busy", "busy", "answered"],
        number(2): ["failed"],  # not in retry_on
        number(3): ["busy", "busy", "busy"],
    }
    _, results = await run_campaign(
        url,
        tmp_path,
        people(3),
        state_db,
        retries=2,
        retry_on=("busy",),
        retry_delay=0.2,
        concurrency=3,
    )
    assert [played.created(number(i)) for i in (1, 2, 3)] == [3, 1, 3]
    table = read_results(results)
    assert [(r["outcome"], r["attempts"]) for r in table] == [
        ("answered", "3"),
        ("failed", "1"),
        ("busy", "3"),
    ]
    retries = [at for at, to, _ in played.creates if to == number(1)]
    assert retries[1] - retries[0] >= 0.2  # the retry delay was kept


async def test_a_rate_limited_create_is_sent_again_later(
    bridge: tuple[PlayedBridge, str],
    plivo_api: tuple[FakePlivoApi, str],
    tmp_path: Path,
    state_db: str | None,
) -> None:
    _, url = bridge
    fake, _ = plivo_api
    fake.create_statuses = [429]
    _, results = await run_campaign(url, tmp_path, people(2), state_db)
    assert len(fake.calls_to("/Call/")) == 3  # the refused request, then both rows
    assert [r["outcome"] for r in read_results(results)] == ["answered", "answered"]
    assert [r["attempts"] for r in read_results(results)] == ["1", "1"]


async def test_a_call_never_seen_in_the_log_ends_unknown_and_is_not_retried(
    bridge: tuple[PlayedBridge, str], tmp_path: Path, state_db: str | None
) -> None:
    played, url = bridge
    played.script = {number(1): ["silent"]}
    _, results = await run_campaign(
        url,
        tmp_path,
        people(1),
        state_db,
        wait=0.5,
        retries=3,
        retry_on=("busy", "no-answer", "failed"),
    )
    assert played.created(number(1)) == 1
    (row,) = read_results(results)
    assert row["outcome"] == "unknown" and "TELEBRIDGE_DB" in row["detail"]


# --- stopping and resuming ------------------------------------------------------------------


async def test_a_stopped_campaign_resumes_without_calling_anyone_twice(
    bridge: tuple[PlayedBridge, str], tmp_path: Path, state_db: str | None
) -> None:
    played, url = bridge
    played.duration = 0.2
    settings = plivo_settings(url, tmp_path)
    list_path = write_list(tmp_path / "list.csv", people(6))
    plan = Plan(carrier="plivo", from_number=FROM, rate=20, concurrency=2)
    state = start(list_path, plan, database=state_db)
    with CallLog(settings.telebridge_db) as log:
        runner = CampaignRunner(state, Dialer(settings, "plivo", FROM), log, poll_interval=0.03)
        task = asyncio.create_task(runner.run())
        while len(played.creates) < 3:
            await asyncio.sleep(0.01)
        task.cancel()  # Ctrl-C, with two calls ringing
        with pytest.raises(asyncio.CancelledError):
            await task
        state.close()
        assert len(played.creates) in (3, 4)
        with pytest.raises(CampaignError, match=f"campaign resume {state.resume_with}"):
            start(list_path, plan, database=state_db)  # no accidental second run

        resumed = resume(str(list_path), database=state_db)
        _OPEN_STATES.append(resumed)
        assert resumed.plan == state.plan
        assert len(resumed.unfinished()) >= 1  # calls that were out when it stopped
        runner = CampaignRunner(resumed, Dialer(settings, "plivo", FROM), log, poll_interval=0.03)
        finished = await runner.run()
    assert finished == {"answered": 6}
    assert sorted(to for _, to, _ in played.creates) == [number(i) for i in range(1, 7)]
    resumed.write_results(tmp_path / "out.csv")
    assert [r["attempts"] for r in read_results(tmp_path / "out.csv")] == ["1"] * 6


async def test_a_killed_campaign_resumes_without_calling_anyone_twice(
    bridge: tuple[PlayedBridge, str],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    played, url = bridge
    played.duration = 0.3
    cli_env(monkeypatch, tmp_path, url)
    list_path = write_list(tmp_path / "list.csv", people(8))
    script = (
        "import sys; from tests.outbound.fixtures import run_cli; "
        "code, out, err = run_cli(sys.argv[1:]); sys.stderr.write(err); sys.exit(code)"
    )
    argv = ["campaign", "run", str(list_path), "--carrier", "plivo", "--from", FROM,
            "--rate", "10", "--concurrency", "2", "--wait", "1.5", "--poll", "0.05"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", script, *argv], env=env)
    try:
        deadline = time.monotonic() + 20
        while len(played.creates) < 3 and process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert process.poll() is None, "the campaign ended before it could be killed"
        process.send_signal(signal.SIGKILL)  # a crash: no clean-up of any kind
        await asyncio.to_thread(process.wait)
    finally:
        if process.poll() is None:
            process.kill()
    called_before = len(played.creates)
    assert 3 <= called_before < 8

    code, out, err = await asyncio.to_thread(
        run_cli, ["campaign", "resume", str(list_path), "--poll", "0.05"]
    )
    assert code == 0, err
    assert "campaign done" in out
    counts = [played.created(number(i)) for i in range(1, 9)]
    assert max(counts) == 1, counts  # nobody twice
    table = read_results(tmp_path / "list.results.csv")
    # A call whose attempt was recorded but whose request never left before the kill is
    # "unknown" (it cannot be told from one that rang): at most one such row per free slot.
    unknown = [r for r in table if r["outcome"] == "unknown"]
    assert len(unknown) <= 2
    assert all(r["outcome"] == "answered" for r in table if r not in unknown)
    assert sum(counts) + len(unknown) == 8


async def test_a_campaign_needs_nothing_beyond_the_serve_settings(
    bridge: tuple[PlayedBridge, str],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    played, url = bridge
    played.duration = 0.01
    cli_env(monkeypatch, tmp_path, url)
    monkeypatch.delenv("TELEBRIDGE_SECRET")
    played.keys = Keys.from_settings(load_settings(None))  # what `telebridge serve` derives
    list_path = write_list(tmp_path / "list.csv", people(2))
    argv = ["campaign", "run", str(list_path), "--carrier", "plivo", "--from", FROM,
            "--poll", "0.05"]  # fmt: skip
    code, out, err = await asyncio.to_thread(run_cli, argv)
    assert code == 0, err
    assert out.startswith("campaign done: 2 answered")
    assert len(played.creates) == 2  # the bridge's key verified both calls' variables


async def test_the_campaign_command_reports_and_refuses_in_one_line(
    bridge: tuple[PlayedBridge, str],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    played, url = bridge
    played.duration = 0.01
    cli_env(monkeypatch, tmp_path, url)
    list_path = write_list(tmp_path / "list.csv", people(2))
    out_path = tmp_path / "out.csv"
    base = ["campaign", "run", str(list_path), "--carrier", "plivo", "--from", FROM]
    code, out, err = await asyncio.to_thread(
        run_cli, [*base, "--results", str(out_path), "--poll", "0.05"]
    )
    assert code == 0, err
    assert out.strip() == f"campaign done: 2 answered; results in {out_path}"
    assert "row 1: attempt 1/1: answered" in err  # not a terminal: one line per attempt
    assert len(read_results(out_path)) == 2

    for argv, expected in [
        (base, "campaign resume"),  # the state file exists
        ([*base[:3], "--carrier", "vonage", "--from", FROM, "--rate", "9"], "VONAGE_APP"),
        ([*base, "--retry-on", "busy,maybe"], "--retry-on: 'maybe'"),
        (["campaign", "resume", str(tmp_path / "none.csv")], "no campaign state file"),
    ]:
        code, _, err = await asyncio.to_thread(run_cli, argv)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert len(played.creates) == 2


# --- the state file's commits ----------------------------------------------------------------


class SlowState(CampaignState):
    """A state file whose commit of a new attempt waits, in the thread it runs in, for `release`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        super().__init__(path, conn)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.released_in_time: bool | None = None
        self.order: list[str] = []

    def begin(self, row: Row, now: float) -> Attempt:
        self.entered.set()
        self.released_in_time = self.release.wait(2.0)
        attempt = super().begin(row, now)
        self.order.append(f"committed {attempt.id}")
        return attempt


class RecordingPlacer:
    """Places nothing; records the attempts the state file holds on disk when a call is placed."""

    carrier = "plivo"

    def __init__(self, state: SlowState) -> None:
        self.state = state

    def place(self, *, to: str, from_: str, urls: CallbackUrls) -> str:
        with contextlib.closing(sqlite3.connect(self.state.path)) as conn:
            on_disk = conn.execute("SELECT id, state FROM attempts").fetchall()
        self.state.order.append(f"placed with {on_disk} on disk")
        return "request-1"


@contextlib.contextmanager
def slow_campaign(tmp_path: Path) -> Iterator[tuple[SlowState, CampaignRunner]]:
    """A one-row campaign over a SlowState, its calls placed by a RecordingPlacer."""
    settings = plivo_settings("http://127.0.0.1:9", tmp_path)
    list_path = write_list(tmp_path / "list.csv", people(1))
    start(list_path, Plan(carrier="plivo", from_number=FROM, wait=0.2)).close()
    state = SlowState.open(state_path_for(list_path))
    _OPEN_STATES.append(state)
    dialer = Dialer(settings, "plivo", FROM, placer=RecordingPlacer(state))
    with CallLog(settings.telebridge_db) as log:
        yield state, CampaignRunner(state, dialer, log, poll_interval=0.02)


async def test_a_slow_commit_leaves_the_loop_running_and_still_comes_before_the_call(
    tmp_path: Path,
) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    with slow_campaign(tmp_path) as (state, runner):
        ticker = asyncio.create_task(tick())
        campaign = asyncio.create_task(runner.run())
        await asyncio.to_thread(state.entered.wait, 5.0)
        ticked = ticks
        while ticks < ticked + 5:  # the loop runs other tasks while the commit waits
            await asyncio.sleep(0.01)
        assert state.order == []  # and the call waits for its attempt's commit
        state.release.set()
        async with asyncio.timeout(10):
            finished = await campaign
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    assert state.released_in_time  # the commit did not block the loop: the test released it
    attempt = f"{state.plan.campaign_id}-1-1"
    assert state.order == [
        f"committed {attempt}",
        f"placed with [('{attempt}', 'placing')] on disk",
    ]
    assert finished == {"unknown": 1}  # nothing played the bridge


async def test_a_stop_during_a_commit_still_records_the_call_it_places(tmp_path: Path) -> None:
    with slow_campaign(tmp_path) as (state, runner):
        campaign = asyncio.create_task(runner.run())
        await asyncio.to_thread(state.entered.wait, 5.0)
        campaign.cancel()  # Ctrl-C while the attempt is being committed
        await asyncio.sleep(0.05)
        state.release.set()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(10):
                await campaign
    attempt = f"{state.plan.campaign_id}-1-1"
    assert state.order == [
        f"committed {attempt}",
        f"placed with [('{attempt}', 'placing')] on disk",
    ]
    # `resume` follows the call that went out, by its request id: nobody is called twice.
    (unfinished,) = state.unfinished()
    assert (unfinished.id, unfinished.state, unfinished.request_id) == (
        attempt,
        "placed",
        "request-1",
    )


async def test_both_stores_write_the_same_results(
    bridge: tuple[PlayedBridge, str], tmp_path: Path, pg_url: str
) -> None:
    played, url = bridge
    rows = [*people(3), {"to": number(1), "name": "Again", "time": ""}]
    tables = []
    for database in (None, pg_url):
        played.creates.clear()
        played.script = {number(2): ["busy", "busy"], number(3): ["failed"]}
        _, results = await run_campaign(  # one list and call log; the results written anew
            url, tmp_path, rows, database, retries=1, retry_delay=0.05, concurrency=3
        )
        text = results.read_text(encoding="utf-8")
        for _, _, attempt in played.creates:  # ids differ between runs: the rest may not
            text = text.replace(attempt.split("-")[0], "ID")
        table = read_results(results)
        for ids in (r["call_id"] for r in table if r["call_id"]):
            text = text.replace(ids, "CALL")
        tables.append(text)
    assert tables[0] == tables[1]
    assert tables[0].count("CALL") == 3 and ",busy," in tables[0] and ",duplicate," in tables[0]
