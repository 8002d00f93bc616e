"""StreamWebSocketProtocol: no pause per message, back-pressure when the app falls behind."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import connect

from telebridge.server.ws_protocol import HIGH_WATER, IGNORE, SEND_MANY, StreamWebSocketProtocol
from telebridge.simulator.serving import ServedApp


class CountingProtocol(StreamWebSocketProtocol):
    """Counts how often reading was paused, and the largest backlog seen."""

    pauses = 0
    most_queued = 0

    def send_receive_event_to_app(self) -> None:
        was = self.read_paused
        super().send_receive_event_to_app()
        if self.read_paused and not was:
            CountingProtocol.pauses += 1
        CountingProtocol.most_queued = max(CountingProtocol.most_queued, self.queue.qsize())


async def lifespan(receive: Any, send: Any) -> None:
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


def echo_app(gate: asyncio.Event, received: list[str]) -> Any:
    """Accepts, waits for `gate`, then takes every message and answers the count at the end."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await gate.wait()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message["text"] == "end":
                await send({"type": "websocket.send", "text": str(len(received))})
                continue
            received.append(message["text"])

    return app


async def test_the_parent_still_has_what_the_subclass_relies_on() -> None:
    names = StreamWebSocketProtocol.__mro__[1].__dict__
    assert "send_receive_event_to_app" in names and "receive" in names
    gate, received = asyncio.Event(), list[str]()
    gate.set()
    async with (
        ServedApp(echo_app(gate, received), ws=CountingProtocol) as served,
        connect(served.url.replace("http", "ws") + "/ws") as ws,
    ):
        await ws.send("one")
        await ws.send("end")
        assert await ws.recv() == "1"
    assert received == ["one"]


async def test_an_app_that_keeps_up_never_pauses_reading() -> None:
    CountingProtocol.pauses = 0
    gate, received = asyncio.Event(), list[str]()
    gate.set()
    async with (
        ServedApp(echo_app(gate, received), ws=CountingProtocol) as served,
        connect(served.url.replace("http", "ws") + "/ws") as ws,
    ):
        for i in range(300):
            await ws.send(f"m{i}")
            if i % 10 == 0:
                await asyncio.sleep(0.001)  # a carrier's pace, not one burst
        await ws.send("end")
        assert await ws.recv() == "300"
    assert received == [f"m{i}" for i in range(300)]
    assert CountingProtocol.pauses == 0


async def test_a_stalled_app_pauses_reading_and_loses_nothing() -> None:
    CountingProtocol.pauses = 0
    CountingProtocol.most_queued = 0
    gate, received = asyncio.Event(), list[str]()
    async with (
        ServedApp(echo_app(gate, received), ws=CountingProtocol) as served,
        connect(served.url.replace("http", "ws") + "/ws") as ws,
    ):
        for i in range(50):
            await ws.send(f"m{i}")
        await asyncio.sleep(0.2)
        assert CountingProtocol.pauses == 1  # the backlog reached the mark: reading stopped
        for i in range(50, 500):
            await ws.send(f"m{i}")  # these wait in the kernel's buffers, not in ours
        await asyncio.sleep(0.2)
        # Bounded: the mark, or what one read of the socket had already carried past it.
        assert HIGH_WATER <= CountingProtocol.most_queued <= 50
        gate.set()
        await ws.send("end")
        assert await ws.recv() == "500"
    assert received == [f"m{i}" for i in range(500)]


async def test_the_app_can_ignore_messages_and_send_several_in_one_write() -> None:
    writes: list[int] = []
    received: list[str] = []

    protocols: list[StreamWebSocketProtocol] = []

    class WriteCounting(StreamWebSocketProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            protocols.append(self)
            write = transport.write

            def counted(data: bytes) -> None:
                writes.append(len(data))
                write(data)

            transport.write = counted

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        await receive()
        await send({"type": "websocket.accept"})
        extensions = scope["extensions"]
        extensions[IGNORE](lambda payload, text: text and payload.startswith(b"audio"))
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            received.append(message.get("text") or "<bytes>")
            if message.get("text") == "end":
                writes.clear()
                await extensions[SEND_MANY](["one", b"\x00\x01", "three"])
                assert len(writes) == 1  # three messages, one write

    async with (
        ServedApp(app, ws=WriteCounting) as served,
        connect(served.url.replace("http", "ws") + "/ws") as ws,
    ):
        for i in range(100):
            await ws.send(f"audio {i}")
            if i % 10 == 0:
                await ws.send(f"key {i}")
        await ws.send(b"audio as bytes")  # binary: this filter keeps it
        await ws.send("end")
        assert [await ws.recv() for _ in range(3)] == ["one", b"\x00\x01", "three"]
    assert received == [f"key {i}" for i in range(0, 100, 10)] + ["<bytes>", "end"]
    # Dropped below websockets' parser, from their frame headers (but for any that arrived
    # before the app set its filter, which the parser's path drops).
    [protocol] = protocols
    assert protocol.ignored == 100
    assert protocol._splitter is not None and protocol._splitter.dropped > 90
