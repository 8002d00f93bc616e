"""Three real `telebridge serve` processes on one machine, joined by one private Redis and one
private PostgreSQL database: one call's answer webhook, stream, call-API request and hangup
callback each reach a different process (a Plivo call and a Vonage call); a call placed through
the call API on one process is found, spoken to and seen ended by its request id on the others;
`kill -9` of one process leaves the others' calls whole; `WAVES_MAX_IN_FLIGHT` holds for all
three; `telebridge calls` from a fourth process sees the calls; a `telebridge campaign run`
places calls that land on all three; the greeting whose synthesis one process starts at the
answer webhook is heard on the process the stream reaches, synthesised once for all. One Waves
stand-in and one fake Plivo REST API (in this test process) serve them all.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from telebridge.flows.fetch import KEEPALIVE_S
from telebridge.simulator.bridge import SIM_PLIVO_AUTH_ID, SIM_PLIVO_AUTH_TOKEN, SIM_VONAGE_SECRET
from telebridge.simulator.carrier import CallScript, SimResult
from telebridge.simulator.fake_plivo_api import FakePlivoApi, RecordedRequest
from telebridge.simulator.plivo import PlivoCall
from telebridge.simulator.serving import ServedApp
from telebridge.simulator.vonage import VonageCall
from telebridge.tts.standin import StandinServer
from tests.e2e.conftest import FLOWS, l16_of, mulaw_of
from tests.servers.redis import RedisServer, free_port

REPO = Path(__file__).resolve().parents[2]
KEY = "three-processes-api-key-0123456789"
SECRET = "three-processes-shared-secret-0123456789"
HOLD = "Please hold while we find someone who can help you with that today."
NOTICE = "This is a notice."
PREFIXES = ("WAVES_", "PLIVO_", "VONAGE_", "TELEBRIDGE_")
TTL = 6.0  # seconds a killed process's calls stay listed (README, "Running several processes")
VONAGE_RATE = 16000


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, within: float) -> None:
    """Poll until `condition` holds; fails naming `what` (never a sleep as an assertion)."""
    try:
        async with asyncio.timeout(within):
            while not await condition():
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"not within {within:g} s: {what}")


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(PREFIXES)}
    # The checkout's own code, whichever environment runs the tests.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


@dataclass
class Process:
    """One `telebridge serve` subprocess on its own loopback port."""

    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self) -> httpx.AsyncClient:
        # Keep-alive below uvicorn's 5 s timeout, so a request never races the server's close.
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=20,
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S),
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


class Cluster:
    """The three processes with what they share; `env` is what each was started with."""

    def __init__(self, env: dict[str, str], plivo: FakePlivoApi, standin: StandinServer) -> None:
        self.env = env
        self.plivo = plivo
        self.standin = standin
        self.processes: list[Process] = []
        self.calls: dict[str, PlivoCall | VonageCall] = {}
        plivo.on_hangup = self._rest_hangup

    async def _rest_hangup(self, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            await call.end("rest-hangup")

    def start(self, name: str, tmp: Path) -> Process:
        port = free_port()
        log = tmp / f"{name}.log"
        env = {
            **self.env,
            "TELEBRIDGE_PROCESS_ID": name,
            "TELEBRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        }
        command = [sys.executable, "-m", "telebridge", "serve", "--host", "127.0.0.1"]
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [*command, "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        process = Process(name, port, popen, log)
        self.processes.append(process)
        return process

    async def ready(self, process: Process, within: float = 60) -> None:
        async with httpx.AsyncClient(timeout=5) as http:

            async def answers() -> bool:
                if process.popen.poll() is not None:
                    pytest.fail(f"{process.name} exited:\n{process.output()}")
                try:
                    return (await http.get(f"{process.url}/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(answers, f"{process.name} is ready", within)

    def stop(self) -> None:
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.terminate()
        for process in self.processes:
            try:
                process.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()


class SpreadCall(PlivoCall):
    """A Plivo call whose answer webhook goes to `answer_to`, its stream to `stream_to` and its
    hangup callback to `hangup_to` (None: the callback is lost). Each webhook is signed for the
    process it reaches, as each checks signatures against its own public URL."""

    def __init__(
        self,
        answer_to: Process,
        stream_to: Process,
        hangup_to: Process | None,
        script: CallScript,
        answer_query: str = "",
    ) -> None:
        super().__init__(answer_to.url, SIM_PLIVO_AUTH_TOKEN, script, answer_query=answer_query)
        self.stream_to = stream_to
        self.hangup_to = hangup_to

    async def answer(self, http: httpx.AsyncClient) -> str | None:
        url = await super().answer(http)
        if url is None:
            return None
        parts = urlsplit(url)
        # The token in the URL was minted by the answering process; any process takes it.
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.stream_to.port}"))

    async def after_end(self, http: httpx.AsyncClient) -> None:
        if self.hangup_to is not None:
            self.base_url = self.hangup_to.url
            await super().after_end(http)


class SpreadVonageCall(VonageCall):
    """A Vonage call whose answer webhook (a GET, signed as Vonage signs it) goes to `answer_to`,
    its stream to `stream_to` and its event webhook (`completed`) to `event_to`."""

    def __init__(
        self, answer_to: Process, stream_to: Process, event_to: Process, script: CallScript
    ) -> None:
        super().__init__(answer_to.url, SIM_VONAGE_SECRET, script, rate=VONAGE_RATE)
        self.stream_to = stream_to
        self.event_to = event_to

    async def answer(self, http: httpx.AsyncClient) -> str | None:
        url = await super().answer(http)
        if url is None:
            return None
        parts = urlsplit(url)
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.stream_to.port}"))

    async def after_end(self, http: httpx.AsyncClient) -> None:
        self.base_url = self.event_to.url
        await super().after_end(http)


@pytest.fixture
async def cluster(
    pg_url: str, private_redis: RedisServer, standin: StandinServer, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    plivo = FakePlivoApi(SIM_PLIVO_AUTH_ID, SIM_PLIVO_AUTH_TOKEN)
    made: list[Cluster] = []
    async with ServedApp(plivo.app()) as plivo_api:

        async def make(**settings: str) -> Cluster:
            env = base_env(
                TELEBRIDGE_DB=pg_url,
                TELEBRIDGE_REDIS_URL=private_redis.url,
                TELEBRIDGE_SECRET=SECRET,
                TELEBRIDGE_API_KEY=KEY,
                TELEBRIDGE_FLOWS_DIR=str(FLOWS),
                TELEBRIDGE_FLOW="hold",
                TELEBRIDGE_MARK_TIMEOUT="3",
                PLIVO_AUTH_ID=SIM_PLIVO_AUTH_ID,
                PLIVO_AUTH_TOKEN=SIM_PLIVO_AUTH_TOKEN,
                PLIVO_API_URL=plivo_api.url,
                VONAGE_SIGNATURE_SECRET=SIM_VONAGE_SECRET,
                VONAGE_AUDIO_RATE=str(VONAGE_RATE),
                WAVES_URL=standin.url,
                WAVES_API_KEY=standin.api_key,
                WAVES_TRANSPORT="websocket",
                **settings,
            )
            group = Cluster(env, plivo, standin)
            made.append(group)
            for name in ("p1", "p2", "p3"):
                group.start(name, tmp_path)
            try:
                await asyncio.gather(*(group.ready(p) for p in group.processes))
            except BaseException:
                group.stop()
                raise
            return group

        try:
            yield make
        finally:
            for group in made:
                await asyncio.to_thread(group.stop)


def run(group: Cluster, call: SpreadCall | SpreadVonageCall) -> asyncio.Task[SimResult]:
    group.calls[call.result.call_id] = call

    async def go() -> SimResult:
        async with httpx.AsyncClient(timeout=20) as http:
            return await call.run(http)

    return asyncio.create_task(go())


async def listed(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await api.get("/v1/calls")
    assert response.status_code == 200, response.text
    return {call["call_id"]: call for call in response.json()["calls"]}


async def at_step(api: httpx.AsyncClient, call_id: str, step: str) -> bool:
    return (await listed(api)).get(call_id, {}).get("step") == step


def logged_calls(env: dict[str, str]) -> list[dict[str, Any]]:
    """`telebridge calls --json` run as a fourth process with the cluster's settings."""
    result = subprocess.run(
        [sys.executable, "-m", "telebridge", "calls", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


async def test_one_call_is_answered_streamed_spoken_to_and_hung_up_on_three_processes(
    cluster: Callable[..., Awaitable[Cluster]],
) -> None:
    group = await cluster()
    p1, p2, p3 = group.processes
    call = SpreadCall(p1, p2, p3, CallScript(digits="w1"))
    running = run(group, call)
    call_id = call.result.call_id
    async with p3.api() as api3:
        await wait_for(lambda: at_step(api3, call_id, "wait"), "p3 lists the call at 'wait'", 30)
        said = await api3.post(f"/v1/calls/{call_id}/say", json={"text": NOTICE})
        assert said.status_code == 202, said.text
        result = await asyncio.wait_for(running, 60)
    assert result.violations == []
    assert result.heard == mulaw_of(HOLD) + mulaw_of(NOTICE) + mulaw_of("Done.")
    callbacks = [n for n in result.timeline if n.get("event") == "hangup_callback"]
    assert [n.get("status") for n in callbacks] == [200], result.timeline

    def recorded() -> dict[str, Any] | None:
        rows = [r for r in logged_calls({**group.env}) if r.get("call_id") == call_id]
        return rows[0] if rows and rows[0].get("outcome") else None

    async def in_log() -> bool:
        return await asyncio.to_thread(recorded) is not None

    await wait_for(in_log, "`telebridge calls --json` lists the ended call", 40)
    row = recorded()
    assert row is not None
    assert (row["steps"], row["digits"], row["flow"]) == (["wait", "done"], "1", "hold"), row
    assert row["outcome"] == "hangup", row  # the flow hung up
    # The cause came with the hangup callback, which reached p3 only.
    assert row["hangup_cause"] == "NORMAL_CLEARING", row


async def test_one_vonage_call_is_answered_streamed_spoken_to_and_ended_on_three_processes(
    cluster: Callable[..., Awaitable[Cluster]],
) -> None:
    group = await cluster()
    p1, p2, p3 = group.processes
    call = SpreadVonageCall(p1, p2, p3, CallScript(digits="w1"))
    running = run(group, call)
    call_id = call.result.call_id
    async with p3.api() as api3:
        await wait_for(lambda: at_step(api3, call_id, "wait"), "p3 lists the call at 'wait'", 30)
        assert (await listed(api3))[call_id]["carrier"] == "vonage"
        said = await api3.post(f"/v1/calls/{call_id}/say", json={"text": NOTICE})
        assert said.status_code == 202, said.text
        result = await asyncio.wait_for(running, 60)
    assert result.violations == []
    heard = l16_of(HOLD, VONAGE_RATE) + l16_of(NOTICE, VONAGE_RATE) + l16_of("Done.", VONAGE_RATE)
    assert result.heard == heard
    answers = [n.get("status") for n in result.timeline if n.get("event") == "answer"]
    events = [n.get("status") for n in result.timeline if n.get("event") == "event_callback"]
    assert (answers, events) == ([200], [200]), result.timeline

    def recorded() -> dict[str, Any] | None:
        rows = [r for r in logged_calls({**group.env}) if r.get("call_id") == call_id]
        return rows[0] if rows and rows[0].get("hangup_cause") else None

    async def in_log() -> bool:
        return await asyncio.to_thread(recorded) is not None

    await wait_for(in_log, "`telebridge calls --json` lists the ended call with its cause", 40)
    row = recorded()
    assert row is not None
    assert (row["carrier"], row["steps"], row["digits"]) == ("vonage", ["wait", "done"], "1"), row
    assert row["outcome"] == "hangup", row  # the flow hung up (p2 closed the socket)
    # The status came with the event webhook, which reached p3 only.
    assert row["hangup_cause"] == "completed", row


async def test_a_placed_call_is_known_by_its_request_id_on_every_process(
    cluster: Callable[..., Awaitable[Cluster]],
) -> None:
    group = await cluster()
    p1, p2, p3 = group.processes
    ring = asyncio.Event()  # the carrier answers once the test saw the call queued
    placed: list[tuple[SpreadCall, asyncio.Task[SimResult]]] = []
    created: list[str] = []

    async def carrier_places(request: RecordedRequest, request_uuid: str) -> None:
        created.append(request_uuid)
        await ring.wait()
        query = urlsplit(request.body["answer_url"]).query
        # Answered and streamed on p3, its hangup callback to p2; placed by p1.
        call = SpreadCall(p3, p3, p2, CallScript(digits="w1"), answer_query=query)
        placed.append((call, run(group, call)))

    group.plivo.on_create = carrier_places
    async with p1.api() as api1, p2.api() as api2, p3.api() as api3:
        body = {"to": "+14155550100", "from": "+14155550199", "carrier": "plivo", "flow": "hold"}
        once = {"Idempotency-Key": "order-1234"}
        response = await api1.post("/v1/calls", json=body, headers=once)
        assert response.status_code == 201, response.text
        request_uuid = response.json()["call_id"]
        # The client's retries reach the other processes: the same answer, no second call.
        for api in (api2, api3):
            again = await api.post("/v1/calls", json=body, headers=once)
            assert (again.status_code, again.json()) == (201, response.json()), again.text
            assert again.headers.get("Idempotent-Replayed") == "true"
        other = await api3.post("/v1/calls", json={**body, "to": "+14155550101"}, headers=once)
        assert other.status_code == 422, other.text

        async def carrier_saw_it() -> bool:
            return bool(created)

        await wait_for(carrier_saw_it, "the carrier got the call", 10)
        assert created == [request_uuid]
        seen = await api2.get(f"/v1/calls/{request_uuid}")
        assert seen.status_code == 200, seen.text
        assert seen.json()["state"] == "queued", seen.json()
        assert (await listed(api2))[request_uuid]["state"] == "queued"
        early = await api2.post(f"/v1/calls/{request_uuid}/say", json={"text": NOTICE})
        assert early.status_code == 409, early.text

        ring.set()

        async def answered() -> bool:
            return bool(placed)

        await wait_for(answered, "the carrier answered", 10)
        call, running = placed[0]
        carrier_id = call.result.call_id
        assert carrier_id != request_uuid

        async def live_on_p2() -> bool:
            found: dict[str, Any] = (await api2.get(f"/v1/calls/{request_uuid}")).json()
            return found.get("call_id") == carrier_id and found.get("step") == "wait"

        await wait_for(live_on_p2, "p2 finds the placed call live at 'wait'", 30)
        found = (await api2.get(f"/v1/calls/{request_uuid}")).json()
        assert (found["state"], found["request_id"]) == ("streaming", request_uuid), found
        shown = await listed(api2)
        assert carrier_id in shown and request_uuid not in shown, shown  # not twice
        said = await api1.post(f"/v1/calls/{request_uuid}/say", json={"text": NOTICE})
        assert said.status_code == 202, said.text
        result = await asyncio.wait_for(running, 60)
        assert result.violations == []
        assert result.heard == mulaw_of(HOLD) + mulaw_of(NOTICE) + mulaw_of("Done.")

        async def ended_on_p2() -> bool:
            found: dict[str, Any] = (await api2.get(f"/v1/calls/{request_uuid}")).json()
            return found.get("state") == "ended" and found.get("outcome") == "hangup"

        await wait_for(ended_on_p2, "p2 gives the placed call's ended record", 30)
        found = (await api2.get(f"/v1/calls/{request_uuid}")).json()
        assert (found["call_id"], found["request_id"]) == (carrier_id, request_uuid), found
        assert found["steps"] == ["wait", "done"], found
        late = await api1.post(f"/v1/calls/{request_uuid}/say", json={"text": NOTICE})
        assert late.status_code == 409, late.text


async def test_kill_9_of_one_process_leaves_the_others_calls_whole(
    cluster: Callable[..., Awaitable[Cluster]],
) -> None:
    group = await cluster()
    p1, p2, p3 = group.processes
    # The killed process's carrier never reports the end to anyone: the TTL alone must do it.
    doomed = SpreadCall(p1, p1, None, CallScript())
    kept = SpreadCall(p2, p2, p3, CallScript(digits="w1"))
    doomed_run, kept_run = run(group, doomed), run(group, kept)
    async with p3.api() as api3:

        async def both_waiting() -> bool:
            shown = await listed(api3)
            ids = (doomed.result.call_id, kept.result.call_id)
            return all(shown.get(i, {}).get("step") == "wait" for i in ids)

        await wait_for(both_waiting, "p3 lists both calls at 'wait'", 30)
        p1.popen.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        p1.popen.wait(timeout=10)
        said = await api3.post(f"/v1/calls/{kept.result.call_id}/say", json={"text": NOTICE})
        assert said.status_code == 202, said.text
        result = await asyncio.wait_for(kept_run, 60)
        assert result.violations == []
        assert result.heard == mulaw_of(HOLD) + mulaw_of(NOTICE) + mulaw_of("Done.")
        lost = await asyncio.wait_for(doomed_run, 30)
        assert lost.ended_by == "bridge-closed"

        async def gone() -> bool:
            return doomed.result.call_id not in await listed(api3)

        await wait_for(gone, "the killed process's call leaves the list", TTL + 10)
        assert time.monotonic() - killed_at < TTL + 10
        for process in (p2, p3):
            assert (await api3.get(f"{process.url}/readyz")).status_code == 200


async def test_the_waves_cap_holds_for_three_processes_together(
    cluster: Callable[..., Awaitable[Cluster]], standin: StandinServer
) -> None:
    # Each request takes a while (chunks 0.15 s apart), so without one cap they would overlap.
    standin.faults.chunk_interval = 0.15
    group = await cluster(
        WAVES_MAX_IN_FLIGHT="1", WAVES_QUEUE_TIMEOUT="20", TELEBRIDGE_CACHE_MB="0"
    )
    before = len(standin.requests)
    calls = [SpreadCall(p, p, p, CallScript(flow="hi")) for p in group.processes]
    results = await asyncio.wait_for(asyncio.gather(*(run(group, c) for c in calls)), 90)
    for result in results:
        assert result.violations == []
        assert result.heard == mulaw_of("Hi.")
    spoken = [r for r in standin.requests[before:] if r.get("text") == "Hi."]
    assert len(spoken) == 3
    assert standin.most_speaking == 1


def figure(metrics: str, name: str) -> float:
    """The value of the unlabelled metric `name` in a /metrics page."""
    for line in metrics.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


async def test_the_greeting_started_at_the_answer_webhook_is_heard_where_the_stream_lands(
    cluster: Callable[..., Awaitable[Cluster]], standin: StandinServer
) -> None:
    # The synthesis takes seconds (chunks 0.1 s apart): the stream reaches p2 while p1 makes it.
    standin.faults.chunk_interval = 0.1
    group = await cluster()
    p1, p2, _ = group.processes
    before = len(standin.requests)
    # The key once the greeting (about 4 s) has played whole, so all of it is heard.
    call = SpreadCall(p1, p2, p2, CallScript(digits="1", press_after=6.0))
    result = await asyncio.wait_for(run(group, call), 60)
    assert result.violations == []
    assert result.heard == mulaw_of(HOLD) + mulaw_of("Done.")
    asked = [r.get("text") for r in standin.requests[before:]]
    assert asked.count(HOLD) == 1, asked  # once for the cluster: p2 followed p1's synthesis
    async with httpx.AsyncClient(timeout=10) as http:
        first = (await http.get(f"{p1.url}/metrics")).text
        second = (await http.get(f"{p2.url}/metrics")).text
    assert figure(second, "telebridge_prompt_cache_follows") == 1
    assert figure(second, "telebridge_prompt_cache_misses") == 1  # "Done.", made by p2
    assert figure(first, "telebridge_prompt_cache_shared_errors") == 0


async def test_a_campaign_places_its_calls_across_the_cluster(
    cluster: Callable[..., Awaitable[Cluster]], tmp_path: Path
) -> None:
    group = await cluster()
    processes = group.processes
    placed: list[asyncio.Task[SimResult]] = []

    async def carrier_places(request: RecordedRequest, request_uuid: str) -> None:
        # Each call of the campaign: answered, streamed and hung up on three different processes.
        n = len(placed)
        one, two, three = (processes[(n + k) % 3] for k in range(3))
        query = urlsplit(request.body["answer_url"]).query
        call = SpreadCall(one, two, three, CallScript(), answer_query=query)
        placed.append(run(group, call))

    group.plivo.on_create = carrier_places
    rows = tmp_path / "list.csv"
    rows.write_text("to,name\n" + "".join(f"+1415555010{i},P{i}\n" for i in range(3)))
    command = [sys.executable, "-m", "telebridge", "campaign", "run", str(rows)]
    command += ["--carrier", "plivo", "--from", "+14155550199", "--flow", "hi", "--rate", "4"]
    command += ["--concurrency", "3", "--wait", "30", "--poll", "0.2"]
    env = {**group.env, "TELEBRIDGE_PUBLIC_URL": processes[0].url}
    done = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr
    assert "alone" not in done.stderr, done.stderr  # it took its slots from the cluster's rate
    # Its state is in the cluster's PostgreSQL, beside the call log: no file beside the list.
    assert ": state in PostgreSQL postgresql://" in done.stderr, done.stderr
    assert not (tmp_path / "list.campaign.db").exists()
    results = [await task for task in placed]
    assert len(results) == 3
    for result in results:
        assert result.violations == []
        assert result.heard == mulaw_of("Hi.")
    table = (tmp_path / "list.results.csv").read_text()
    assert table.count(",answered,") == 3, table
