"""Hostile carrier streams (floods, oversized or unread messages): only that call suffers."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response
from websockets.uri import parse_uri

from telebridge.server.transport import SEND_TIMEOUT
from telebridge.simulator import bridge as local_bridge
from telebridge.simulator import serving
from telebridge.tokens import StreamGrant
from tests.e2e.conftest import MakeBridge, mulaw_of

LONG_PROMPT = (
    "This is a long prompt that keeps talking for several seconds, so that the pacer has "
    "to hold audio back and the lead stays bounded while the carrier plays it out in real time."
)

GARBAGE = [
    "not json",
    "[]",
    "{}",
    '{"event":"media","media":{"payload":"%%%"}}',
    '{"event":"dtmf","dtmf":{"digit":"xx"}}',
    '{"event":"playedStream"}',
    '{"event":"mystery","x":1}',
    '{"event":"start","start":{"callId":"other","streamId":"s2"}}',
]


def random_message(rng: random.Random) -> str | bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice(GARBAGE)
    if kind == 1:
        return rng.randbytes(rng.randrange(1, 400))
    if kind == 2:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(1, 80)))
    return json.dumps({"event": rng.choice(["media", "dtmf", "x"]), "v": rng.random()})


async def test_thousands_of_random_messages_end_only_that_call(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_flow="long")
    assert lb.bridge is not None
    healthy = asyncio.create_task(lb.run(lb.plivo_call()))
    grant = StreamGrant(carrier="plivo", call_id="hostile", flow="long")
    rng = random.Random(7)
    sent = 0
    async with connect(lb.bridge.stream_url("/plivo/stream", grant)) as ws:
        await ws.send(
            json.dumps({"event": "start", "start": {"callId": "hostile", "streamId": "s"}})
        )
        try:
            for _ in range(3000):
                await ws.send(random_message(rng))
                sent += 1
            await asyncio.wait_for(ws.wait_closed(), 10)
        except ConnectionClosed:
            pass
        # The bridge gave up on this stream (too many bad messages) and said so with a close.
        assert ws.close_code is not None
    assert sent >= 50
    result = await healthy
    assert result.violations == []
    assert result.heard == mulaw_of(LONG_PROMPT)
    assert "hostile" not in lb.bridge.calls
    health = await lb.http.get(f"{lb.url}/healthz")
    assert health.status_code == 200


async def test_an_oversized_message_closes_only_that_stream(make_bridge: MakeBridge) -> None:
    lb = await make_bridge()
    assert lb.bridge is not None
    healthy = asyncio.create_task(lb.run(lb.plivo_call()))
    grant = StreamGrant(carrier="plivo", call_id="big", flow="greet")
    async with connect(lb.bridge.stream_url("/plivo/stream", grant), max_size=None) as ws:
        await ws.send(json.dumps({"event": "start", "start": {"callId": "big", "streamId": "s"}}))
        try:
            await ws.send("x" * 2_000_000)
            await asyncio.wait_for(ws.wait_closed(), 10)
        except ConnectionClosed:
            pass
        assert ws.close_code == 1009  # message too big, refused before it was parsed
    result = await healthy
    assert result.heard == mulaw_of("Hello from the test line.")


async def test_a_carrier_that_never_confirms_marks_is_hung_up_in_bounded_time(
    make_bridge: MakeBridge,
) -> None:
    lb = await make_bridge(telebridge_mark_timeout=1.0)
    assert lb.bridge is not None
    grant = StreamGrant(carrier="plivo", call_id="mute", flow="greet")
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with connect(lb.bridge.stream_url("/plivo/stream", grant)) as ws:
        await ws.send(json.dumps({"event": "start", "start": {"callId": "mute", "streamId": "s"}}))
        # Read everything, answer nothing: no playedStream ever comes back.
        async for _ in ws:
            pass
    # The greeting lasts about 1.5 s; then one mark timeout; then the bridge ends the call.
    assert loop.time() - started < 1.5 + 1.0 + 3.0
    for _ in range(100):
        if "mute" not in lb.bridge.calls:
            break
        await asyncio.sleep(0.02)
    assert "mute" not in lb.bridge.calls
    assert [r for r in lb.plivo_api.requests if r.method == "DELETE"]


def plivo_start(call_id: str) -> dict[str, Any]:
    return {"event": "start", "start": {"callId": call_id, "streamId": "s"}}


def vonage_connected(call_id: str, rate: int) -> dict[str, Any]:
    return {
        "event": "websocket:connected",
        "content-type": f"audio/l16;rate={rate}",
        "call_id": call_id,
    }


async def open_and_never_read(
    url: str, first: dict[str, Any], rcvbuf: int
) -> tuple[socket.socket, ClientProtocol]:
    """A carrier that upgrades, says `first`, and from then on never reads its socket."""
    loop = asyncio.get_running_loop()
    where = parse_uri(url)
    protocol = ClientProtocol(where)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Before connect: the window the client advertises is fixed by then.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, (where.host, where.port))
        protocol.send_request(protocol.connect())
        for data in protocol.data_to_send():
            await loop.sock_sendall(sock, data)
        while not (events := protocol.events_received()):
            data = await loop.sock_recv(sock, 4096)
            assert data, "the bridge closed during the upgrade"
            protocol.receive_data(data)
        [response] = events
        assert isinstance(response, Response) and response.status_code == 101
        protocol.send_text(json.dumps(first).encode())
        for data in protocol.data_to_send():
            await loop.sock_sendall(sock, data)
    except BaseException:
        sock.close()
        raise
    return sock, protocol


def small_send_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Linux grows a socket's send buffer on its own up to tcp_wmem's maximum (4 MB): the whole
    # prompt would sit there, the bridge's send would never block, and the call would end by the
    # mark timeout instead. A small fixed send buffer (accepted sockets inherit the listening
    # socket's) leaves asyncio's 64 KiB write buffer as the only room, filled in about 6 s.
    def small_send_buffer(port: int = 0) -> socket.socket:
        sock = serving.bind_loopback(port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return sock

    monkeypatch.setattr(local_bridge, "bind_loopback", small_send_buffer)


async def test_a_carrier_that_never_reads_is_ended_and_released_in_bounded_time(
    make_bridge: MakeBridge, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    small_send_buffers(monkeypatch)
    lb = await make_bridge(telebridge_flow="long")
    assert lb.bridge is not None
    loop = asyncio.get_running_loop()
    seen: list[tuple[str, dict[str, Any]]] = []

    def watch(call_id: str, kind: str, fields: dict[str, Any]) -> None:
        if call_id == "stuck":
            seen.append((kind, fields))

    lb.bridge.observers.append(watch)
    healthy = asyncio.create_task(lb.run(lb.plivo_call()))
    grant = StreamGrant(carrier="plivo", call_id="stuck", flow="long")
    url = lb.bridge.stream_url("/plivo/stream", grant)
    started = loop.time()
    sock, _ = await open_and_never_read(url, plivo_start("stuck"), rcvbuf=4096)
    try:
        # About 6 s to fill the buffers, then SEND_TIMEOUT: 11 s; the bound leaves room for a
        # busy machine, and a call that is never released fails it.
        health_while_stuck = None
        while loop.time() - started < 20.0 and ("stuck" in lb.bridge.calls or not seen):
            if health_while_stuck is None and loop.time() - started > 8.0:
                health_while_stuck = (await lb.http.get(f"{lb.url}/healthz")).status_code
            await asyncio.sleep(0.05)
        elapsed = loop.time() - started
        kinds = [kind for kind, _ in seen]
        assert "stuck" not in lb.bridge.calls, f"not released after {elapsed:.1f} s: {kinds}"
        assert health_while_stuck == 200
        assert elapsed >= SEND_TIMEOUT
        # Ended because a send stalled: the prompt never got out (so no checkpoint was sent and
        # no mark timed out); the bridge dropped the connection, which its reader saw too.
        [outcome] = [f["outcome"] for kind, f in seen if kind == "ended"]
        assert outcome in ("carrier-closed", "caller-hangup")
        assert not {"mark", "mark_timeout"} & set(kinds), kinds
        assert any("read nothing for" in r.getMessage() for r in caplog.records)
        assert lb.bridge.calllog is not None
        record = await asyncio.to_thread(lb.bridge.calllog.get, "plivo", "stuck")
        assert record is not None and record.outcome == outcome

        result = await healthy
        assert result.violations == []
        assert result.heard == mulaw_of(LONG_PROMPT)
        health = await lb.http.get(f"{lb.url}/healthz")
        assert health.status_code == 200
    finally:
        sock.close()
        healthy.cancel()


async def test_a_vonage_hang_up_by_socket_close_is_bounded_when_the_carrier_stops_reading(
    make_bridge: MakeBridge, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    small_send_buffers(monkeypatch)
    # No Vonage REST credentials: the bridge ends the call by closing the stream.
    lb = await make_bridge(telebridge_mark_timeout=1.0)
    assert lb.bridge is not None and lb.settings.vonage_application_id is None
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    prompt_out = asyncio.Event()

    def watch(call_id: str, kind: str, fields: dict[str, Any]) -> None:
        if call_id == "stuck":
            seen.append(kind)
            if kind == "mark":
                prompt_out.set()

    lb.bridge.observers.append(watch)
    grant = StreamGrant(carrier="vonage", call_id="stuck", flow="greet")
    url = lb.bridge.stream_url("/vonage/stream", grant)
    first = vonage_connected("stuck", lb.settings.vonage_audio_rate)
    sock, protocol = await open_and_never_read(url, first, rcvbuf=4096)
    try:
        # The whole greeting and its mark are out, so nothing the bridge sends is waiting.
        await asyncio.wait_for(prompt_out.wait(), 10)
        # Still talking, never reading: every ping is answered with a pong that stays in the
        # bridge's buffer, until the buffer is full when the flow hangs up.
        for _ in range(2000):
            protocol.send_ping(b"p" * 125)
        for data in protocol.data_to_send():
            await loop.sock_sendall(sock, data)
        pinged = loop.time()
        while loop.time() - pinged < 20.0 and "stuck" in lb.bridge.calls:
            await asyncio.sleep(0.05)
        elapsed = loop.time() - pinged
        assert "stuck" not in lb.bridge.calls, f"not released after {elapsed:.1f} s: {seen}"
        assert "hangup" in seen
        # One mark timeout, then the close frame waits SEND_TIMEOUT for room and is given up.
        assert elapsed < 1.0 + 1.0 + SEND_TIMEOUT + 5.0
        assert any("took no close frame" in r.getMessage() for r in caplog.records)
    finally:
        sock.close()
