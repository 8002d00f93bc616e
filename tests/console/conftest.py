"""The console's fixtures: the end-to-end ones (the real bridge on a loopback port, the Waves
stand-in), and helpers to start a bridge with the console on and to wait for a condition."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from telebridge.simulator.bridge import LocalBridge
from tests.e2e.conftest import make_bridge, standin, tts  # noqa: F401 (fixtures)

KEY = "console-test-key-0123456789abcdef"
OTHER_KEY = "another-console-key-0123456789ab"


def client(lb: LocalBridge, *, key: str | None = None) -> httpx.AsyncClient:
    """A client of `lb` with its own cookies; with `key`, it sends it as a Bearer key."""
    return lb.client(key=key)


async def until(condition: Callable[[], Awaitable[Any]], limit: float = 15.0) -> Any:
    """The first truthy value of `condition()`, polled until `limit` seconds have passed."""
    async with asyncio.timeout(limit):
        while not (value := await condition()):
            await asyncio.sleep(0.05)
    return value
