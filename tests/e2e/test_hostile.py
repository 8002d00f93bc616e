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
