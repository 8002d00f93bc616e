"""The agent step end to end: a local application on a real WebSocket drives calls on both
carriers. What the caller hears is compared byte for byte with the stand-in's rendering of the
segments the bridge flushed; marks, clears, keys, tones, caller audio and the ways an
application can fail are checked on the wire."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from telebridge.call.audio import mulaw_to_pcm
from telebridge.simulator.carrier import CallScript, SimResult, SimulatedCall
from telebridge.simulator.fake_vonage_api import VonageApiFake
from telebridge.tts.standin import StandinServer, render
from tests.call.mulaw import pcm_to_mulaw
from tests.e2e.conftest import MakeBridge
from tests.e2e.test_call_api import APP_ID, private_key_pem, vonage_api  # noqa: F401
from tests.e2e.test_calls import Carrier

SECRET = "agent-secret-for-tests-0123456789"
PLIVO = Carrier("plivo")
VONAGE = Carrier("vonage", 16000)
both_carriers = pytest.mark.parametrize("carrier", [PLIVO, VONAGE], ids=["plivo", "vonage"])

Handler = Callable[["AgentSide"], Awaitable[None]]


@dataclass
class AgentSide:
    """One connection, as the application sees it."""

    ws: ServerConnection
    headers: dict[str, str]
    path: str
    received: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, **message: Any) -> None:
        await self.ws.send(json.dumps(message))

    async def expect(self, kind: str, timeout: float = 10) -> dict[str, Any]:  # noqa: ASYNC109
        """The next message of `kind` (earlier ones of other kinds stay in `received`)."""
        async with asyncio.timeout(timeout):
            while True:
                for message in self.received:
                    if message["type"] == kind and not message.get("_seen"):
                        message["_seen"] = True
                        return message
                self.arrived.clear()
                await self.arrived.wait()

    async def pump(self) -> None:
        async for raw in self.ws:
            if isinstance(raw, bytes):
                self.audio += raw
            else:
                message = json.loads(raw)
                message["_at"] = time.monotonic()
                self.received.append(message)
            self.arrived.set()


class FakeAgent:
    """A WebSocket application on loopback; each connection runs `handler`."""

    def __init__(self) -> None:
        self.handler: Handler | None = None
        self.sides: list[AgentSide] = []
        self.refuse_status: int | None = None
        self._server: Server | None = None
        self.port = 0

    async def __aenter__(self) -> FakeAgent:
        self._server = await serve(
            self._serve, "127.0.0.1", 0, process_request=self._check, compression=None
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _check(self, conn: ServerConnection, request: Request) -> Response | None:
        if self.refuse_status is not None:
            return conn.respond(self.refuse_status, "refused\n")
        return None

    async def _serve(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        side = AgentSide(ws, dict(ws.request.headers.raw_items()), ws.request.path)
        self.sides.append(side)
        pump = asyncio.create_task(side.pump())
        try:
            await side.expect("start")
            if self.handler is not None:
                await self.handler(side)
            await pump
        finally:
            pump.cancel()


@pytest.fixture
async def agent() -> AsyncIterator[FakeAgent]:
    async with FakeAgent() as server:
        yield server


def write_flow(folder: Path, port: int, **agent: Any) -> None:
    options = {"url": f"ws://127.0.0.1:{port}/call?caller={{{{caller}}}}", "timeout": 2, **agent}
    flow = {
        "start": "hi",
        "steps": {
            "hi": {"say": "Hi.", "next": "assistant"},
            "assistant": {"agent": options, "next": "after", "on_error": "sorry"},
            "after": {"say": "Back in the flow, {{topic}}.", "hangup": True},
            "sorry": {"say": "Sorry, the assistant is away.", "hangup": True},
            "elsewhere": {"say": "Somewhere else.", "hangup": True},
        },
        "vars": {"topic": "nothing"},
    }
    (folder / "agent.yaml").write_text(json.dumps(flow))


@pytest.fixture
def flows(tmp_path: Path, agent: FakeAgent) -> Path:
    folder = tmp_path / "flows"
    folder.mkdir()
    write_flow(folder, agent.port)
    return folder


def encoded(carrier: Carrier, pcm: bytes) -> bytes:
    if carrier.name == "plivo":
        data = pcm_to_mulaw(pcm)
        return data + b"\xff" * (-len(data) % 160)
    frame = carrier.rate // 50 * 2
    return pcm + b"\x00" * (-len(pcm) % frame)


def segments(standin: StandinServer, rid_part: str) -> list[str]:
    """The texts the stand-in spoke for requests whose id contains `rid_part`, one per flush."""
    spoken: list[str] = []
    held = ""
    for body in standin.requests:
        if rid_part not in str(body.get("request_id", "")):
            continue
        held += body["text"]
        if body.get("flush") or not body.get("continue"):
            if held.strip():
                spoken.append(held)
            held = ""
    return spoken


def heard_for(carrier: Carrier, texts: list[str]) -> bytes:
    rate = carrier.rate if carrier.name == "vonage" else 8000
    return encoded(carrier, b"".join(render(t, sample_rate=rate) for t in texts))


async def bridge_for(make_bridge: MakeBridge, flows: Path, carrier: Carrier, **extra: Any) -> Any:
    return await make_bridge(
        telebridge_flows_dir=flows,
        telebridge_flow="agent",
        telebridge_agent_secret=SECRET,
        **carrier.settings(),
        **extra,
    )


@both_carriers
async def test_streamed_text_is_heard_exactly_and_starts_before_the_last_piece(
    make_bridge: MakeBridge,
    flows: Path,
    agent: FakeAgent,
    standin: StandinServer,
    carrier: Carrier,
) -> None:
    lb = await bridge_for(make_bridge, flows, carrier)
    call = carrier.call(lb)
    pieces = ["Thank you for ", "calling. ", "I am the ", "agent, and ", "I speak as I think"]
    first_audio_before_last: list[bool] = []

    async def handler(side: AgentSide) -> None:
        start = side.received[0]
        assert start["carrier"] == carrier.name and start["step"] == "assistant"
        assert start["audio"] == {"encoding": "pcm16", "rate": carrier.rate}
        assert start["vars"]["topic"] == "nothing"
        for piece in pieces:
            await side.send(type="text", text=piece, id="u1")
            await asyncio.sleep(0.05)
        heard_at_start = len(call.playout.heard())
        async with asyncio.timeout(5):
            while len(call.playout.heard()) <= heard_at_start:
                await asyncio.sleep(0.01)
        first_audio_before_last.append(True)
        await side.send(type="text", text=".", id="u1", last=True)
        played = await side.expect("played")
        assert played["id"] == "u1"
        await side.send(type="hangup", reason="done")
        end = await side.expect("end")
        assert end["reason"] == "hangup"

    agent.handler = handler
    result: SimResult = await lb.run(call)
    assert result.violations == []
    assert first_audio_before_last == [True]
    texts = segments(standin, "-2")  # the call's second utterance: after "Hi."
    assert "".join(texts) == "".join(pieces) + "."
    assert len(texts) >= 2  # flushed at the sentence end, before the last piece
    expected = encoded(carrier, render("Hi.", sample_rate=carrier.rate)) + heard_for(carrier, texts)
    assert result.heard == expected
    # `played` came after the carrier played the utterance's mark.
    side = agent.sides[0]
    played_at = next(m["_at"] for m in side.received if m["type"] == "played")
    mark_at = next(
        e["at"]
        for e in result.timeline
        if e["event"] == "played" and e["name"] != result.marks_played[0]
    )
    assert played_at >= mark_at


async def test_the_handshake_is_signed(
    make_bridge: MakeBridge, flows: Path, agent: FakeAgent
) -> None:
    lb = await bridge_for(make_bridge, flows, PLIVO)

    async def handler(side: AgentSide) -> None:
        await side.send(type="hangup")

    agent.handler = handler
    await lb.run(PLIVO.call(lb))
    side = agent.sides[0]
    header = side.headers["X-Telebridge-Signature"]
    t, v1 = (part.split("=", 1)[1] for part in header.split(","))
    url = f"ws://127.0.0.1:{agent.port}{side.path}"
    assert side.path == "/call?caller=14155550100"
    expected = hmac.new(SECRET.encode(), f"{t}.{url}".encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(v1, expected)
    assert abs(int(t) - time.time()) < 10


@both_carriers
async def test_clear_cuts_at_once_and_reports_what_was_heard(
    make_bridge: MakeBridge, flows: Path, agent: FakeAgent, carrier: Carrier
) -> None:
    lb = await bridge_for(make_bridge, flows, carrier)
    call = carrier.call(lb)
    long_text = "This is a rather long answer that goes on and on for quite a while. " * 3
    cleared_at: list[float] = []

    async def handler(side: AgentSide) -> None:
        await side.send(type="text", text=long_text, id="long", last=True)
        async with asyncio.timeout(10):
            while len(call.playout.heard()) < carrier.bytes_per_second * 1.5:  # "Hi." + some
                await asyncio.sleep(0.01)
        cleared_at.append(time.monotonic())
        await side.send(type="clear")
        interrupted = await side.expect("interrupted")
        assert interrupted["id"] == "long"
        side.received.append({"type": "_heard", "ms": interrupted["heard_ms"]})
        await side.send(type="text", text="Short.", id="next", last=True)
        await side.expect("played")
        await side.send(type="hangup")

    agent.handler = handler
    result = await lb.run(call)
    assert result.violations == []
    clear = next(e for e in result.timeline if e["event"] == "clear")
    assert clear["at"] - cleared_at[0] < 0.05
    # What the caller heard of the long utterance, by the simulated carrier's own clock: all
    # it heard, less "Hi." before and "Short." after.
    heard_ms = next(m["ms"] for m in agent.sides[0].received if m["type"] == "_heard")
    hi = encoded(carrier, render("Hi.", sample_rate=carrier.rate))
    short = encoded(carrier, render("Short.", sample_rate=carrier.rate))
    assert result.heard.startswith(hi) and result.heard.endswith(short)
    played_s = (len(result.heard) - len(hi) - len(short)) / carrier.bytes_per_second
    assert abs(heard_ms / 1000 - played_s) < 0.1, (heard_ms, played_s)
    metrics = (await lb.http.get(f"{lb.url}/metrics")).text
    by_agent = f'telebridge_agent_interruptions_total{{by="agent",carrier="{carrier.name}"}} 1.0'
    assert by_agent in metrics
    assert (
        f'telebridge_agent_text_to_audio_seconds_count{{carrier="{carrier.name}"}} 2.0' in metrics
    )


@both_carriers
async def test_caller_audio_and_keys_reach_the_application_and_tones_come_back(
    make_bridge: MakeBridge,
    flows: Path,
    agent: FakeAgent,
    carrier: Carrier,
    vonage_api: VonageApiFake,  # noqa: F811
    private_key_pem: str,  # noqa: F811
) -> None:
    extra: dict[str, Any] = {}
    if carrier.name == "vonage":
        extra = {"vonage_application_id": APP_ID, "vonage_private_key": private_key_pem,
                 "vonage_api_host": vonage_api.host}  # fmt: skip
    lb = await bridge_for(make_bridge, flows, carrier, **extra)
    rate = carrier.rate
    voice_pcm = render("one two three", sample_rate=rate)[: rate * 2 * 1]  # one second
    voice_pcm = voice_pcm[: len(voice_pcm) // (rate // 50 * 2) * (rate // 50 * 2)]
    wire_voice = pcm_to_mulaw(voice_pcm) if carrier.name == "plivo" else voice_pcm
    expected_pcm = mulaw_to_pcm(wire_voice) if carrier.name == "plivo" else voice_pcm
    script = CallScript(voice=wire_voice, digits="w5")
    if carrier.name == "plivo":
        call: SimulatedCall = lb.plivo_call(script)
    else:
        call = lb.vonage_call(script, region_url=f"https://{vonage_api.host}")

    async def handler(side: AgentSide) -> None:
        await side.send(type="text", text="Press a key, please.", id="ask", last=True)
        key = await side.expect("dtmf")
        assert key["digit"] == "5"
        await side.send(type="dtmf", digits="12#")
        async with asyncio.timeout(10):
            while len(side.audio) < len(expected_pcm):
                await asyncio.sleep(0.01)
        await side.send(type="next", vars={"topic": "keys"})

    agent.handler = handler
    result = await lb.run(call)
    assert result.violations == []
    side = agent.sides[0]
    frame = rate // 50 * 2
    assert len(side.audio) % frame == 0
    # The voice went out from the stream's start; the agent hears it from when it listens.
    assert (
        expected_pcm.find(side.audio[: frame * 10]) >= 0
        or side.audio.find(expected_pcm[-frame * 10 :]) >= 0
    )
    tail = expected_pcm[-frame * 10 :]
    at = bytes(side.audio).find(tail)
    assert at >= 0 and at % frame == 0
    assert result.heard.endswith(
        encoded(carrier, render("Back in the flow, keys.", sample_rate=rate))
    )
    if carrier.name == "plivo":
        assert result.tones == "12#"
    else:
        [put] = [r for r in vonage_api.requests if r.path.endswith("/dtmf")]
        assert put.json == {"digits": "12#"}


async def test_next_to_a_named_step_and_transfer(
    make_bridge: MakeBridge, flows: Path, agent: FakeAgent
) -> None:
    lb = await bridge_for(make_bridge, flows, PLIVO)

    async def go_elsewhere(side: AgentSide) -> None:
        await side.send(type="next", step="elsewhere")

    agent.handler = go_elsewhere
    result = await lb.run(PLIVO.call(lb))
    assert result.heard.endswith(encoded(PLIVO, render("Somewhere else.", sample_rate=8000)))

    async def transfer(side: AgentSide) -> None:
        await side.send(type="text", text="Connecting you.", last=True)
        await side.send(type="transfer", to="+14155550123")

    agent.handler = transfer
    result = await lb.run(PLIVO.call(lb))
    assert result.ended_by == "transferred"
    assert result.heard.endswith(encoded(PLIVO, render("Connecting you.", sample_rate=8000)))


async def test_an_unreachable_agent_goes_to_on_error(
    make_bridge: MakeBridge, flows: Path, agent: FakeAgent
) -> None:
    agent.refuse_status = 503
    lb = await bridge_for(make_bridge, flows, PLIVO)
    result = await lb.run(PLIVO.call(lb))
    assert result.heard.endswith(
        encoded(PLIVO, render("Sorry, the assistant is away.", sample_rate=8000))
    )


async def test_a_dropped_agent_goes_to_on_error_after_what_it_said(
    make_bridge: MakeBridge, flows: Path, agent: FakeAgent
) -> None:
    lb = await bridge_for(make_bridge, flows, PLIVO)

    async def drop(side: AgentSide) -> None:
        await side.send(type="text", text="I am about to vanish.", last=True)
        await asyncio.sleep(0.2)
        side.ws.transport.abort()  # no close frame: a crash

    agent.handler = drop
    result = await lb.run(PLIVO.call(lb))
    said = encoded(PLIVO, render("I am about to vanish.", sample_rate=8000))
    sorry = encoded(PLIVO, render("Sorry, the assistant is away.", sample_rate=8000))
    assert result.heard.endswith(said + sorry)


async def test_invalid_messages_are_answered_and_fifty_end_the_step(
    make_bridge: MakeBridge, flows: Path, agent: FakeAgent
) -> None:
    lb = await bridge_for(make_bridge, flows, PLIVO)

    async def hostile(side: AgentSide) -> None:
        await side.ws.send("not json")
        error = await side.expect("error")
        assert "JSON" in error["message"]
        await side.send(type="text", text=5)
        await side.send(type="shout")
        await side.ws.send(b"\x00\x01")
        for _ in range(50):
            await side.send(type="dtmf", digits="x")
        await side.expect("end")

    agent.handler = hostile
    result = await lb.run(PLIVO.call(lb))
    assert result.heard.endswith(
        encoded(PLIVO, render("Sorry, the assistant is away.", sample_rate=8000))
    )
    errors = [m for m in agent.sides[0].received if m["type"] == "error"]
    assert 45 <= len(errors) <= 50


@both_carriers
async def test_over_http_streaming_each_segment_is_a_request_heard_in_order(
    make_bridge: MakeBridge, flows: Path, agent: FakeAgent, standin: StandinServer, carrier: Carrier
) -> None:
    lb = await make_bridge(
        tts=None,  # the bridge assembles its own client, as `telebridge serve` does
        waves_api_key=standin.api_key,
        waves_url=standin.url,
        waves_transport="sse",
        telebridge_cache_mb=0,
        telebridge_flows_dir=flows,
        telebridge_flow="agent",
        telebridge_agent_secret=SECRET,
        **carrier.settings(),
    )
    pieces = ["Over HTTP ", "streaming now. ", "Every segment ", "is its own request."]

    async def handler(side: AgentSide) -> None:
        for piece in pieces:
            await side.send(type="text", text=piece, id="s", last=piece == pieces[-1])
        await side.expect("played")
        await side.send(type="hangup")

    agent.handler = handler
    result = await lb.run(carrier.call(lb))
    assert result.violations == []
    assert standin.requests == []  # nothing over the WebSocket
    bodies = [r["body"] for r in standin.http_requests if r["body"]]  # (voices: no body)
    texts = [b["text"] for b in bodies if "-2." in str(b.get("request_id"))]
    assert "".join(texts) == "".join(pieces) and len(texts) >= 2
    hi = encoded(carrier, render("Hi.", sample_rate=carrier.rate))
    assert result.heard == hi + heard_for(carrier, texts)


async def test_a_key_cuts_the_agent_off_when_barge_in_is_on_and_caller_audio_stays_off(
    make_bridge: MakeBridge, tmp_path: Path, agent: FakeAgent
) -> None:
    folder = tmp_path / "quiet"
    folder.mkdir()
    write_flow(folder, agent.port, listen=False)
    lb = await bridge_for(make_bridge, folder, PLIVO)
    long_text = "A long explanation that the caller will not wait for, going on and on. " * 2

    async def handler(side: AgentSide) -> None:
        await side.send(type="text", text=long_text, id="long", last=True)
        interrupted = await side.expect("interrupted")
        key = await side.expect("dtmf")
        assert key["digit"] == "7"
        assert interrupted["id"] == "long" and interrupted["heard_ms"] > 0
        side.received.append({"type": "_order", "ok": interrupted["_at"] <= key["_at"]})
        await side.send(type="hangup")

    agent.handler = handler
    result = await lb.run(lb.plivo_call(CallScript(digits="w7")))
    assert result.violations == []
    side = agent.sides[0]
    assert side.audio == b""  # listen: false
    assert [m["ok"] for m in side.received if m["type"] == "_order"] == [True]
    assert any(e["event"] == "clear" for e in result.timeline)


async def test_text_beyond_thirty_seconds_of_speech_is_refused_not_lost_silently(
    make_bridge: MakeBridge, flows: Path, agent: FakeAgent
) -> None:
    lb = await bridge_for(make_bridge, flows, PLIVO)
    word = "blah " * 40  # 200 characters: about 13 s of speech each

    async def handler(side: AgentSide) -> None:
        for i in range(4):
            await side.send(type="text", text=word, id=f"w{i}", last=True)
        error = await side.expect("error")
        assert "too much speech queued" in error["message"] and error["id"] == "w2"
        await side.send(type="clear")
        await side.send(type="hangup")

    agent.handler = handler
    await lb.run(PLIVO.call(lb))
    errors = [m for m in agent.sides[0].received if m["type"] == "error"]
    assert [e["id"] for e in errors] == ["w2", "w3"]


async def test_an_agent_that_never_answers_the_handshake_times_out_to_on_error(
    make_bridge: MakeBridge, tmp_path: Path
) -> None:
    handlers: list[asyncio.Task[Any]] = []
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        writers.append(writer)
        await reader.read(65536)  # the upgrade request, never answered
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    folder = tmp_path / "silent"
    folder.mkdir()
    write_flow(folder, port, timeout=0.5)
    try:
        lb = await bridge_for(make_bridge, folder, PLIVO)
        started = time.monotonic()
        result = await lb.run(PLIVO.call(lb))
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for writer in writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await server.wait_closed()
    assert result.heard.endswith(
        encoded(PLIVO, render("Sorry, the assistant is away.", sample_rate=8000))
    )
    assert time.monotonic() - started < 6


async def test_a_hostile_agent_does_not_disturb_another_call(
    make_bridge: MakeBridge, flows: Path, agent: FakeAgent
) -> None:
    (flows / "plain.yaml").write_text(
        json.dumps({"start": "a", "steps": {"a": {"say": "An ordinary call.", "hangup": True}}})
    )
    lb = await bridge_for(make_bridge, flows, PLIVO)

    async def hostile(side: AgentSide) -> None:
        for _ in range(60):
            await side.ws.send("{not json")
        await side.send(type="text", text="x" * 60_000)  # refused: over the queue bound

    agent.handler = hostile
    plain = lb.plivo_call(CallScript(flow="plain"))
    results = await asyncio.gather(lb.run(PLIVO.call(lb)), lb.run(plain))
    assert results[1].violations == []
    assert results[1].heard == encoded(PLIVO, render("An ordinary call.", sample_rate=8000))
    assert results[0].heard.endswith(
        encoded(PLIVO, render("Sorry, the assistant is away.", sample_rate=8000))
    )
