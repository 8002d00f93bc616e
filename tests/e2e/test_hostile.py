"""A stream under a flood of random messages: that call copes, the one beside it does not notice."""

from __future__ import annotations

import asyncio
import json
import random

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from telebridge.tokens import StreamGrant
from tests.e2e.conftest import MakeBridge, mulaw_of

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
    assert result.heard == mulaw_of(
        "This is a long prompt that keeps talking for several seconds, so that the pacer has "
        "to hold audio back and the lead stays bounded while the carrier plays it out in real time."
    )
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
