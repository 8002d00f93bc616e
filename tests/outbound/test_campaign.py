"""Campaigns against the fake Plivo REST API, with the test playing the bridge in the call log:
rate and concurrency limits, retries, resume after a stop or a kill, the results file."""

from __future__ import annotations

import asyncio
import csv
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from telebridge.calllog import CallLog, CallRecorder
from telebridge.outbound.campaign import (
    CampaignError,
    CampaignRunner,
    CampaignState,
    Plan,
    read_list,
    start,
    state_path_for,
)
from telebridge.outbound.placing import Dialer
from telebridge.settings import load_settings
from telebridge.simulator.fake_plivo_api import FakePlivoApi, RecordedRequest
from telebridge.tokens import Keys
from tests.outbound.test_placing import (
    FROM,
    clean_env,
    cli_env,
    plivo_api,
    plivo_settings,
    run_cli,
    signed_vars,
)

__all__ = ["clean_env", "plivo_api"]  # fixtures shared with test_outbound

ROOT = Path(__file__).resolve().parents[2]
CAUSES = {"busy": "Busy Line", "no-answer": "No Answer", "failed": "Invalid Destination Address"}


def number(i: int) -> str:
    return f"+1415555{i:04d}"


@dataclass
class PlayedBridge:
    """Plays the serving bridge: writes each created call's fate into the call log.

    `script` gives, per number, the fate of each attempt in turn ("answered", "busy",
    "no-answer", "failed", or "silent": nothing is ever recorded); the default is answered.
    """

    log: CallLog
    script: dict[str, list[str]] = field(default_factory=dict)
    duration: float = 0.15
    creates: list[tuple[float, str, str]] = field(default_factory=list)  # (at, to, attempt)
    live: int = 0
    max_live: int = 0
    keys: Keys | None = None  # the serving bridge's; None: those of TELEBRIDGE_SECRET=SECRET

    def created(self, to: str) -> int:
        return sum(1 for _, n, _ in self.creates if n == to)

    async def on_create(self, request: RecordedRequest, request_uuid: str) -> None:
        to = "+" + request.body["to"]
        variables = signed_vars(request.body["answer_url"], self.keys)
        assert signed_vars(request.body["hangup_url"], self.keys) == variables
        self.creates.append((request.at, to, variables["attempt"]))
        fates = self.script.get(to, [])
        n = self.created(to)
        fate = fates[n - 1] if n <= len(fates) else "answered"
        self.live += 1
        self.max_live = max(self.max_live, self.live)
        call_id = str(uuid.uuid4())  # Plivo's CallUUID: never the request_uuid
        try:
            if fate == "answered":
                recorder = self.log.start_call(
                    carrier="plivo", call_id=call_id, direction="outbound",
                    from_number=FROM, to_number=to, flow="remind", variables=variables,
                )  # fmt: skip
                await asyncio.sleep(self.duration)
                recorder.step_entered("remind")
                recorder.digits_collected("remind", "1")
                recorder.finish("completed")
            elif fate != "silent":
                await asyncio.sleep(self.duration)
                # What the bridge's /plivo/hangup records for a call that never streamed.
                CallRecorder(self.log, "plivo", call_id).vars_set(variables)
                self.log.record_hangup("plivo", call_id, CAUSES[fate], 0)
        finally:
            self.live -= 1


@pytest.fixture
async def bridge(
    plivo_api: tuple[FakePlivoApi, str], tmp_path: Path
) -> AsyncIterator[tuple[PlayedBridge, str]]:
    fake, url = plivo_api
    with CallLog(tmp_path / "calls.db") as log:
        played = PlayedBridge(log)
        fake.on_create = played.on_create
        yield played, url


def write_list(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def people(n: int) -> list[dict[str, str]]:
    return [{"to": number(i), "name": f"Person {i}", "time": f"{i} pm"} for i in range(1, n + 1)]


def read_results(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


_OPEN_STATES: list[CampaignState] = []


@pytest.fixture(autouse=True)
def _close_states() -> Iterator[None]:
    """States `run_campaign` hands back are closed after the test (3.13 warns otherwise)."""
    yield
    while _OPEN_STATES:
        _OPEN_STATES.pop().close()


async def run_campaign(
    url: str, tmp_path: Path, rows: list[dict[str, str]], **plan: object
) -> tuple[CampaignState, Path]:
    settings = plivo_settings(url, tmp_path)
    list_path = write_list(tmp_path / "list.csv", rows)
    values: dict[str, object] = {"carrier": "plivo", "from_number": FROM, "rate": 50.0}
    values.update(plan)
    state = start(list_path, Plan(**values))  # type: ignore[arg-type]
    _OPEN_STATES.append(state)
    with CallLog(settings.telebridge_db) as log:
        runner = CampaignRunner(state, Dialer(settings, "plivo", FROM), log, poll_interval=0.03)
        await runner.run()
    results = Path(state.plan.results)
    state.write_results(results)
    return state, results


# --- the list -------------------------------------------------------------------------------


def test_the_list_needs_a_to_column_and_good_numbers(tmp_path: Path) -> None:
    good = write_list(tmp_path / "good.csv", [{"to": "+1 415 555 0001", "name": "Ada", "x": ""}])
    columns, rows = read_list(good)
    assert columns == ["name", "x"]
    assert rows[0].to == "+14155550001" and rows[0].variables == {"name": "Ada"}  # empty: unset
    for content, problem in [
        ("number,name\n+14155550001,Ada\n", "no column named 'to'"),
        ("to,name\n+14155550001,Ada\n12,Bob\n", "line 3: to: '12' is not an E.164 number"),
        ("to,first name\n+14155550001,Ada\n", "'first name' is not a variable name"),
        ("to,attempt\n+14155550001,1\n", "'attempt' is set by telebridge itself"),
        ("to,name\n", "no rows to call"),
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_text(content)
        with pytest.raises(CampaignError, match=problem):
            read_list(bad)


def test_vonage_rate_is_capped_at_its_limit(tmp_path: Path) -> None:
    list_path = write_list(tmp_path / "list.csv", people(1))
    with pytest.raises(CampaignError, match=r"^--rate: vonage allows at most 3 calls a second"):
        start(list_path, Plan(carrier="vonage", from_number=FROM, rate=5))
    with pytest.raises(CampaignError, match=r"^--retry-on: 'answered'"):
        start(list_path, Plan(carrier="plivo", from_number=FROM, retry_on=("answered",)))
    assert not state_path_for(list_path).exists()


# --- running --------------------------------------------------------------------------------


async def test_each_row_is_called_once_with_its_variables(
    bridge: tuple[PlayedBridge, str], tmp_path: Path
) -> None:
    played, url = bridge
    rows = [*people(4), {"to": number(2), "name": "Again", "time": ""}]  # a duplicate number
    played.script = {number(3): ["busy"], number(4): ["no-answer"]}
    state, results = await run_campaign(url, tmp_path, rows, concurrency=3)

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
    bridge: tuple[PlayedBridge, str], tmp_path: Path
) -> None:
    played, url = bridge
    played.script = {
        number(1): ["busy", "busy", "answered"],
        number(2): ["failed"],  # not in retry_on
        number(3): ["busy", "busy", "busy"],
    }
    _, results = await run_campaign(
        url, tmp_path, people(3), retries=2, retry_on=("busy",), retry_delay=0.2, concurrency=3
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
    bridge: tuple[PlayedBridge, str], plivo_api: tuple[FakePlivoApi, str], tmp_path: Path
) -> None:
    _, url = bridge
    fake, _ = plivo_api
    fake.create_statuses = [429]
    _, results = await run_campaign(url, tmp_path, people(2))
    assert len(fake.calls_to("/Call/")) == 3  # the refused request, then both rows
    assert [r["outcome"] for r in read_results(results)] == ["answered", "answered"]
    assert [r["attempts"] for r in read_results(results)] == ["1", "1"]


async def test_a_call_never_seen_in_the_log_ends_unknown_and_is_not_retried(
    bridge: tuple[PlayedBridge, str], tmp_path: Path
) -> None:
    played, url = bridge
    played.script = {number(1): ["silent"]}
    _, results = await run_campaign(
        url, tmp_path, people(1), wait=0.5, retries=3, retry_on=("busy", "no-answer", "failed")
    )
    assert played.created(number(1)) == 1
    (row,) = read_results(results)
    assert row["outcome"] == "unknown" and "TELEBRIDGE_DB" in row["detail"]


# --- stopping and resuming ------------------------------------------------------------------


async def test_a_stopped_campaign_resumes_without_calling_anyone_twice(
    bridge: tuple[PlayedBridge, str], tmp_path: Path
) -> None:
    played, url = bridge
    played.duration = 0.2
    settings = plivo_settings(url, tmp_path)
    list_path = write_list(tmp_path / "list.csv", people(6))
    state = start(list_path, Plan(carrier="plivo", from_number=FROM, rate=20, concurrency=2))
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

        resumed = CampaignState.open(state_path_for(list_path))
        _OPEN_STATES.append(resumed)
        assert len(resumed.unfinished()) >= 1  # calls that were out when it stopped
        runner = CampaignRunner(resumed, Dialer(settings, "plivo", FROM), log, poll_interval=0.03)
        finished = await runner.run()
    assert finished == {"answered": 6}
    assert sorted(to for _, to, _ in played.creates) == [number(i) for i in range(1, 7)]
    with pytest.raises(CampaignError, match="campaign resume"):
        start(list_path, Plan(carrier="plivo", from_number=FROM))  # no accidental second run


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
        "import sys; from tests.outbound.test_placing import run_cli; "
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
