"""Fixtures for the TTS tests: a real stand-in server, a client on it, and a scripted server."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from telebridge.tts import SpeechOptions, WavesClient
from telebridge.tts.standin import Faults, StandinServer

EMILY = SpeechOptions(voice_id="emily")
TEXT = "Thank you for calling. Press one for opening hours."


@pytest.fixture
async def standin() -> AsyncIterator[StandinServer]:
    server = StandinServer(faults=Faults())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client(standin: StandinServer) -> AsyncIterator[WavesClient]:
    waves = WavesClient(standin.url, standin.api_key, first_chunk_timeout=3.0)
    try:
        yield waves
    finally:
        await waves.aclose()


Handler = Callable[[ServerConnection, int], Awaitable[None]]
Scripted = Callable[[Handler], Awaitable[str]]


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    """Start a WebSocket server whose per-connection behaviour a test writes by hand.

    The handler gets the connection and its 1-based index; the fixture returns the URL.
    """
    servers: list[Any] = []

    async def start(handler: Handler) -> str:
        count = 0

        async def session(ws: ServerConnection) -> None:
            nonlocal count
            count += 1
            await handler(ws, count)

        server = await serve(session, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/waves/v1/tts/live"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def collect(chunks: AsyncIterable[bytes]) -> list[bytes]:
    return [chunk async for chunk in chunks]


async def eventually(predicate: Callable[[], bool], limit: float = 3.0) -> None:
    """Wait until `predicate()` holds; fail the test if it does not within `limit` seconds."""
    async with asyncio.timeout(limit):
        # Polling: the counters belong to a server that has no event to wait on.
        while not predicate():
            await asyncio.sleep(0.01)


async def next_request(ws: ServerConnection) -> dict[str, Any]:
    body = json.loads(await ws.recv())
    assert isinstance(body, dict)
    return body


def chunk(audio: bytes, **ids: str) -> str:
    """A Waves `chunk` frame carrying `audio`, with the given request ids."""
    encoded = base64.b64encode(audio).decode()
    return json.dumps({"status": "chunk", **ids, "data": {"audio": encoded}})
