"""End-to-end fixtures: the real bridge on a loopback port, the Waves stand-in, fake carriers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from telebridge.simulator.bridge import LocalBridge
from telebridge.tts import WavesClient
from telebridge.tts.standin import Faults, StandinServer, render
from tests.call.mulaw import pcm_to_mulaw
from tests.servers.redis import private_redis, redis_server

__all__ = ["private_redis", "redis_server"]

FLOWS = Path(__file__).parent / "flows"

MakeBridge = Callable[..., Awaitable[LocalBridge]]


@pytest.fixture
async def standin() -> AsyncIterator[StandinServer]:
    async with StandinServer(faults=Faults()) as server:
        yield server


@pytest.fixture
async def tts(standin: StandinServer) -> AsyncIterator[WavesClient]:
    async with WavesClient(standin.url, standin.api_key, first_chunk_timeout=1.2) as client:
        yield client


@pytest.fixture
async def make_bridge(tts: WavesClient, tmp_path: Path) -> AsyncIterator[MakeBridge]:
    """Start bridges (default flow: greet, test flows dir) that stop at the end of the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(**overrides: Any) -> LocalBridge:
            speech = overrides.pop("tts", tts)
            values: dict[str, Any] = {
                "waves_api_key": None,
                "telebridge_flows_dir": FLOWS,
                "telebridge_flow": "greet",
                "telebridge_db": tmp_path / "calls.db",
                "telebridge_mark_timeout": 2.0,
            }
            values.update(overrides)
            bridge = LocalBridge(tts=speech, **values)
            return await stack.enter_async_context(bridge)

        yield make


def mulaw_of(text: str) -> bytes:
    """The μ-law the caller must hear for `text`: the stand-in's PCM, encoded, padded to 20 ms."""
    encoded = pcm_to_mulaw(render(text, sample_rate=8000))
    return encoded + b"\xff" * (-len(encoded) % 160)


def l16_of(text: str, rate: int) -> bytes:
    pcm = render(text, sample_rate=rate)
    frame = rate // 50 * 2
    return pcm + b"\x00" * (-len(pcm) % frame)
