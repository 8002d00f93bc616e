"""The agent step's socket: `send_now`, the direct send caller audio takes, keeps the order of
what `send` sends, and steps aside (sending nothing) whenever waiting would be needed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from telebridge.flows.agent_socket import WebSocketAgentLink

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def test_direct_and_awaited_sends_arrive_in_the_order_they_were_made() -> None:
    received: list[str | bytes] = []
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            received.append(message)
            if message == "last":
                done.set()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            link = WebSocketAgentLink(ws)
            sent: list[str | bytes] = []
            for n in range(200):
                message: str | bytes = bytes([n % 256]) * 320 if n % 3 else f"text {n}"
                sent.append(message)
                if n % 7 == 0:
                    await link.send(message)
                else:
                    assert link.send_now(message)
            await link.send("last")
            await asyncio.wait_for(done.wait(), 5)
    assert received == [*sent, "last"]


@pytest.fixture
async def deaf_port() -> AsyncIterator[int]:
    """A server that answers the WebSocket handshake and then never reads."""
    holding: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())  # RFC 6455 accept key
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        transport = writer.transport
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        holding.append(writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in holding:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


async def test_once_the_peer_stops_reading_it_steps_aside_and_sends_nothing(
    deaf_port: int,
) -> None:
    async with connect(f"ws://127.0.0.1:{deaf_port}", close_timeout=0.1) as ws:
        link = WebSocketAgentLink(ws)
        for _ in range(100_000):  # the kernel takes a few MB first
            if not link.send_now(bytes(320)):
                break
            await asyncio.sleep(0)
        else:
            pytest.fail("send_now never stepped aside")
        buffered = ws.transport.get_write_buffer_size()
        assert buffered > 0  # what made it step aside: bytes the kernel has not taken
        assert not link.send_now(b"more")
        assert ws.transport.get_write_buffer_size() == buffered  # nothing was added
        ws.transport.abort()


async def test_a_closed_socket_takes_nothing() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.close()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            await ws.wait_closed()
            assert not WebSocketAgentLink(ws).send_now(b"late")
