"""Caller audio nobody listens to wakes the bridge less often: while a connection brings only
ignored messages, steadily, its socket's SO_RCVLOWAT holds them back a few at a time; a message
the app takes, or a connection gone quiet, turns that off, so nothing waits for audio that never
comes."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from websockets.asyncio.client import connect

from telebridge.server.ws_lowat import IDLE_S, LOWAT, TICK_S
from telebridge.server.ws_protocol import IGNORE, StreamWebSocketProtocol
from telebridge.simulator.serving import ServedApp
from tests.server.test_ws_protocol import lifespan

AUDIO = b"audio" + bytes(315)  # about a Plivo media message


class Kept(StreamWebSocketProtocol):
    """Keeps its instances, so a test can read the socket's low-water mark."""

    made: list[StreamWebSocketProtocol] = []

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        Kept.made.append(self)


def lowat(protocol: StreamWebSocketProtocol) -> int:
    sock = protocol.transport.get_extra_info("socket")
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT))


def app_keeping(received: asyncio.Queue[tuple[float, str]]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        await receive()
        await send({"type": "websocket.accept"})
        scope["extensions"][IGNORE](lambda payload, text: not text and payload.startswith(b"audio"))
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            received.put_nowait((time.monotonic(), message.get("text") or "<bytes>"))

    return app


async def stream_audio(ws: Any, seconds: float) -> None:
    for _ in range(round(seconds / 0.02)):
        await ws.send(AUDIO)
        await asyncio.sleep(0.02)


async def test_steady_ignored_audio_raises_the_mark_and_a_key_lowers_it() -> None:
    Kept.made.clear()
    received: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
    async with (
        ServedApp(app_keeping(received), ws=Kept) as served,
        connect(served.url.replace("http", "ws") + "/ws") as ws,
    ):
        await stream_audio(ws, 0.5)
        [protocol] = Kept.made
        assert lowat(protocol) == LOWAT  # steady audio, all of it dropped
        sent = time.monotonic()
        await ws.send("key 5")
        streaming = asyncio.create_task(stream_audio(ws, 0.5))
        at, text = await asyncio.wait_for(received.get(), 2)
        assert text == "key 5"
        assert at - sent < 0.2  # it waited for a few frames of audio at most
        await streaming
        assert lowat(protocol) == LOWAT  # back on while only audio comes
    assert protocol._splitter is not None and protocol._splitter.dropped >= 45


async def test_a_message_after_the_audio_stops_is_read_within_the_idle_bound() -> None:
    Kept.made.clear()
    received: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
    async with (
        ServedApp(app_keeping(received), ws=Kept) as served,
        connect(served.url.replace("http", "ws") + "/ws") as ws,
    ):
        await stream_audio(ws, 0.5)
        [protocol] = Kept.made
        assert lowat(protocol) == LOWAT
        sent = time.monotonic()
        await ws.send("stop")  # a few bytes, under the mark, and no audio after it
        at, text = await asyncio.wait_for(received.get(), 2)
        assert text == "stop"
        assert at - sent < IDLE_S + TICK_S + 0.2  # the one timer lowered the mark
        assert lowat(protocol) == 1


async def test_sparse_messages_never_raise_the_mark() -> None:
    Kept.made.clear()
    received: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
    async with (
        ServedApp(app_keeping(received), ws=Kept) as served,
        connect(served.url.replace("http", "ws") + "/ws") as ws,
    ):
        for _ in range(5):
            await ws.send(AUDIO)
            await asyncio.sleep(0.1)
        [protocol] = Kept.made
        assert lowat(protocol) == 1
        sent = time.monotonic()
        await ws.send("key 1")
        at, _ = await asyncio.wait_for(received.get(), 2)
        assert at - sent < 0.05
