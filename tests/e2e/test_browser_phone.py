"""The browser phone end to end: the real server on a loopback port, the call created over HTTP
and its stream over a real WebSocket, playing the page's part (marks answered, keys pressed)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from telebridge.calllog.records import CallRecord
from telebridge.carriers.browser import FRAME_BYTES, FRAMES_PER_MESSAGE
from telebridge.simulator.bridge import LocalBridge
from telebridge.tokens import StreamGrant
from telebridge.tts.standin import render
from tests.e2e.conftest import MakeBridge, l16_of
from tests.e2e.test_agent import SECRET, AgentSide, FakeAgent, write_flow

CALLS = "/console/api/phone/calls"
GREETING = "Hello from the test line."
MENU = "Press 1 for hours, or 2 to hear this again. This prompt is long enough to be cut off."
# Generous: a 2-core VM shared with other test runs synthesises and paces slowly.
WAIT = 30.0


async def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Page:
    """The phone page's side of the stream: it hears audio, answers marks and clears."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.heard = bytearray()
        self.audio_sizes: list[int] = []
        self.events: list[dict[str, Any]] = []  # the JSON events, in order
        self.close_code: int | None = None
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    self.heard += message
                    self.audio_sizes.append(len(message))
                    continue
                event = json.loads(message)
                self.events.append(event)
                if event["event"] == "mark":
                    await self.ws.send(json.dumps({"event": "played", "name": event["name"]}))
                elif event["event"] == "clear":
                    await self.ws.send('{"event": "cleared"}')
        except ConnectionClosed:
            pass
        rcvd = self.ws.protocol.close_rcvd
        self.close_code = rcvd.code if rcvd is not None else None

    def kinds(self) -> list[str]:
        return [e["event"] for e in self.events]

    async def press(self, digit: str) -> None:
        await self.ws.send(json.dumps({"event": "dtmf", "digit": digit}))

    async def ended(self) -> int | None:
        """The close code the bridge ended the call with."""
        async with asyncio.timeout(WAIT):
            await self.reader
        return self.close_code


async def create_call(lb: LocalBridge, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await lb.http.post(lb.url + CALLS, json={} if body is None else body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def ws_url(lb: LocalBridge, stream: str) -> str:
    # As the page does: ws(s):// + location.host + the stream's path and query.
    return lb.url.replace("http://", "ws://", 1) + stream


async def record_of(lb: LocalBridge, call_id: str) -> CallRecord:
    """The call log's record once the call has ended and let go."""
    assert lb.bridge is not None and lb.bridge.calllog is not None
    calllog = lb.bridge.calllog
    found: list[CallRecord] = []

    async def finished() -> bool:
        record = await asyncio.to_thread(calllog.get, "browser", call_id)
        if record is not None and record.outcome is not None:
            found.append(record)
            return True
        return False

    deadline = time.monotonic() + WAIT
    while not await finished():
        assert time.monotonic() < deadline, f"call {call_id} never reached the call log"
        await asyncio.sleep(0.05)
    await wait_for(lambda: not lb.bridge or not lb.bridge.calls, "the bridge to let the call go")
    return found[0]


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]
    return message


# --- a call ------------------------------------------------------------------------------


async def test_a_call_hears_its_first_prompt_byte_for_byte_and_is_logged(
    make_bridge: MakeBridge,
) -> None:
    lb = await make_bridge(telebridge_console="local")
    created = await create_call(lb)
    assert set(created) == {"call_id", "flow", "rate", "stream"}
    assert re.fullmatch(r"web-[0-9a-f]{16}", created["call_id"])
    assert (created["flow"], created["rate"]) == ("greet", 16000)
    assert created["stream"].startswith("/console/phone/stream?token=")

    async with connect(ws_url(lb, created["stream"])) as ws:
        page = Page(ws)
        await ws.send(json.dumps({"event": "start", "call_id": created["call_id"]}))
        assert await page.ended() == 1000  # the flow hangs up

    assert bytes(page.heard) == l16_of(GREETING, 16000)
    limit = FRAME_BYTES * FRAMES_PER_MESSAGE
    assert all(0 < size <= limit and size % FRAME_BYTES == 0 for size in page.audio_sizes)
    assert "mark" in page.kinds()
    record = await record_of(lb, created["call_id"])
    assert (record.carrier, record.direction, record.flow) == ("browser", "inbound", "greet")
    assert (record.from_number, record.to_number) == ("browser", "console")
    assert (record.steps, record.outcome) == (["hello"], "hangup")


async def test_a_key_routes_the_flow(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_console="local")
    created = await create_call(lb, {"flow": "menu"})
    assert created["flow"] == "menu"
    menu = l16_of(MENU, 16000)

    async with connect(ws_url(lb, created["stream"])) as ws:
        page = Page(ws)
        await ws.send(json.dumps({"event": "start", "call_id": created["call_id"]}))
        # The whole menu has played (its mark answered) before the key: no barge-in.
        await wait_for(lambda: len(page.heard) >= len(menu) and "mark" in page.kinds(), "the menu")
        await page.press("1")
        assert await page.ended() == 1000

    assert "clear" not in page.kinds()
    heard = bytes(page.heard)
    assert heard == menu + l16_of("Nine to five.", 16000) + l16_of("Goodbye.", 16000)
    record = await record_of(lb, created["call_id"])
    assert (record.steps, record.digits, record.outcome) == (
        ["menu", "hours", "goodbye"],
        "1",
        "hangup",
    )


async def test_a_key_during_the_prompt_clears_the_page(make_bridge: MakeBridge) -> None:
    seen: list[str] = []
    lb = await make_bridge(
        telebridge_console="local", observer=lambda call_id, kind, fields: seen.append(kind)
    )
    created = await create_call(lb, {"flow": "menu"})
    menu = l16_of(MENU, 16000)
    async with connect(ws_url(lb, created["stream"])) as ws:
        page = Page(ws)
        await ws.send(json.dumps({"event": "start", "call_id": created["call_id"]}))
        await wait_for(lambda: page.heard, "the first audio")
        await page.press("1")
        await wait_for(lambda: "clear" in page.kinds(), "the clear")
        assert await page.ended() == 1000
    # The bridge heard the key, cut the menu off and was told the page obeyed the clear.
    assert seen.index("digit") < seen.index("barge_in") < seen.index("cleared")
    rest = l16_of("Nine to five.", 16000) + l16_of("Goodbye.", 16000)
    heard = bytes(page.heard)
    assert heard.endswith(rest)
    cut = heard[: -len(rest)]
    assert len(cut) < len(menu) and menu.startswith(cut)
    record = await record_of(lb, created["call_id"])
    assert (record.steps, record.digits) == (["menu", "hours", "goodbye"], "1")


async def test_the_caller_hanging_up_ends_the_call(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_console="local")
    created = await create_call(lb, {"flow": "menu"})
    async with connect(ws_url(lb, created["stream"])) as ws:
        page = Page(ws)
        await ws.send(json.dumps({"event": "start", "call_id": created["call_id"]}))
        await wait_for(lambda: page.heard, "the first audio")
        await ws.send('{"event": "hangup"}')
        await page.ended()
    record = await record_of(lb, created["call_id"])
    assert (record.carrier, record.outcome) == ("browser", "caller-hangup")
    assert len(page.heard) < len(l16_of(MENU, 16000))


async def test_a_transfer_is_shown_to_the_page_then_the_socket_closes(
    make_bridge: MakeBridge,
) -> None:
    lb = await make_bridge(telebridge_console="local")
    created = await create_call(lb, {"flow": "transfer"})
    async with connect(ws_url(lb, created["stream"])) as ws:
        page = Page(ws)
        await ws.send(json.dumps({"event": "start", "call_id": created["call_id"]}))
        assert await page.ended() == 1000
    assert bytes(page.heard) == l16_of("Connecting.", 16000)
    assert page.events[-1] == {"event": "transfer", "to": "+14155550123"}
    record = await record_of(lb, created["call_id"])
    assert (record.steps, record.outcome) == (["agent"], "transfer")


# --- refusals ------------------------------------------------------------------------------


async def test_a_stream_without_a_good_token_is_refused_on_upgrade(
    make_bridge: MakeBridge,
) -> None:
    lb = await make_bridge(telebridge_console="local")
    assert lb.bridge is not None
    created = await create_call(lb)
    token = created["stream"].partition("token=")[2]
    plivo_url = lb.bridge.stream_url("/plivo/stream", StreamGrant("plivo", "c-1", "greet"))
    plivo_token = plivo_url.partition("token=")[2]
    for query in (
        "",
        "?token=",
        "?token=not-a-token",
        f"?token={token[:-4]}",
        f"?token={plivo_token}",
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(lb, "/console/phone/stream" + query)):
                pass
        assert refused.value.response.status_code == 403, query


async def test_a_start_for_another_call_is_closed_with_1008(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_console="local")
    created = await create_call(lb)
    async with connect(ws_url(lb, created["stream"])) as ws:
        await ws.send(json.dumps({"event": "start", "call_id": "web-ffffffffffffffff"}))
        with pytest.raises(ConnectionClosed) as closed:
            message = await asyncio.wait_for(ws.recv(), WAIT)
            pytest.fail(f"got a message: {message!r}")
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_bad_requests_are_refused_with_their_reason(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_console="local")
    url = lb.url + CALLS
    unknown = error_of(await lb.http.post(url, json={"flow": "nosuch"}), 400)
    assert "nosuch" in unknown and "greet" in unknown and "menu" in unknown
    form = await lb.http.post(url, data={"flow": "greet"})
    assert "application/json" in error_of(form, 415)
    plain = await lb.http.post(url, content=b"{}", headers={"content-type": "text/plain"})
    assert plain.status_code == 415
    big = json.dumps({"flow": "x" * 5000}).encode()
    headers = {"content-type": "application/json"}
    assert (await lb.http.post(url, content=big, headers=headers)).status_code == 413
    for body in (b"[]", b"not json", b"", b'{"flow": 3}', b'{"flow": "greet", "to": "+1"}'):
        response = await lb.http.post(url, content=body, headers=headers)
        assert response.status_code == 400, body
    with_charset = {"content-type": "application/json; charset=utf-8"}
    ok = await lb.http.post(url, content=b'{"flow": "hi"}', headers=with_charset)
    assert ok.status_code == 201 and ok.json()["flow"] == "hi"


async def test_a_busy_bridge_answers_503(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_console="local", telebridge_max_calls=1)
    await create_call(lb)  # pending until its stream starts: the one call there is room for
    busy = await lb.http.post(lb.url + CALLS, json={})
    assert "busy" in error_of(busy, 503)


async def test_without_the_console_the_phone_cannot_create_calls(
    make_bridge: MakeBridge,
) -> None:
    lb = await make_bridge()  # TELEBRIDGE_CONSOLE=key and no TELEBRIDGE_API_KEY
    refused = await lb.http.post(lb.url + CALLS, json={})
    assert refused.status_code == 403
    assert lb.bridge is not None and lb.bridge.pending == {}


async def test_the_page_s_microphone_is_what_an_agent_step_hears(
    make_bridge: MakeBridge, tmp_path: Path
) -> None:
    async with FakeAgent() as agent:
        flows = tmp_path / "flows"
        flows.mkdir()
        write_flow(flows, agent.port)
        lb = await make_bridge(
            telebridge_console="local",
            telebridge_flows_dir=flows,
            telebridge_flow="agent",
            telebridge_agent_secret=SECRET,
        )
        voice = render("one two three four", sample_rate=16000)
        voice = voice[: len(voice) // FRAME_BYTES * FRAME_BYTES]

        async def handler(side: AgentSide) -> None:
            start = side.received[0]  # FakeAgent waited for it
            assert start["carrier"] == "browser" and start["audio"] == {
                "encoding": "pcm16",
                "rate": 16000,
            }
            await wait_for(lambda: bytes(voice[-FRAME_BYTES * 10 :]) in side.audio, "the voice")
            await side.send(type="next", vars={"topic": "the microphone"})

        agent.handler = handler
        created = await create_call(lb)
        async with connect(ws_url(lb, created["stream"])) as ws:
            page = Page(ws)
            await ws.send(json.dumps({"event": "start", "call_id": created["call_id"]}))
            await wait_for(lambda: agent.sides, "the agent step")
            for at in range(0, len(voice), FRAME_BYTES):  # as the page's worklet: 20 ms frames
                await ws.send(voice[at : at + FRAME_BYTES])
                await asyncio.sleep(0.02)
            assert await page.ended() == 1000
        side = agent.sides[0]
        assert len(side.audio) % FRAME_BYTES == 0
        at = bytes(side.audio).find(voice[-FRAME_BYTES * 10 :])
        assert at >= 0 and at % FRAME_BYTES == 0
        assert bytes(page.heard).endswith(l16_of("Back in the flow, the microphone.", 16000))
