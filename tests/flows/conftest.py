"""Fixtures of the flow tests: a local webhook server and an HTTP client that ignores proxies."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.flows.fakes import Hook


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    server_hook = Hook()
    server = await asyncio.start_server(server_hook.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server_hook.url = f"http://127.0.0.1:{port}"
    try:
        yield server_hook
    finally:
        server.close()
        await server_hook.stop()
        await server.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield http
