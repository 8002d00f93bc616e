"""The socket pool, through the client: reuse, replacement, bounds, prewarm, refusals."""

from __future__ import annotations

import asyncio

import pytest

from telebridge.tts import pool as pool_module
from telebridge.tts.errors import (
    TTSError,
    WavesAuthError,
    WavesConnectionError,
    WavesForbiddenError,
    WavesRateLimited,
)
from telebridge.tts.pool import SocketPool
from telebridge.tts.standin import StandinServer, render
from telebridge.tts.waves import WavesClient

from .conftest import EMILY, TEXT, collect, eventually


async def test_bearer_key_is_required(standin: StandinServer) -> None:
    async with WavesClient(standin.url, "sk_wrong") as waves:
        with pytest.raises(WavesAuthError):
            await collect(waves.synthesize(TEXT, sample_rate=8000, options=EMILY))
    assert standin.requests == []


async def test_open_socket_is_reused(client: WavesClient, standin: StandinServer) -> None:
    one = await collect(client.synthesize("One.", sample_rate=8000, options=EMILY))
    two = await collect(client.synthesize("Two.", sample_rate=16000, options=EMILY))
    assert b"".join(one) == render("One.", sample_rate=8000)
    assert b"".join(two) == render("Two.", sample_rate=16000)
    assert standin.connections == 1
    assert client.idle_sockets == 1


async def test_reconnects_when_server_closes_after_complete(
    client: WavesClient, standin: StandinServer
) -> None:
    standin.faults.close_after_complete = True
    for text in ("One.", "Two."):
        chunks = await collect(client.synthesize(text, sample_rate=8000, options=EMILY))
        assert b"".join(chunks) == render(text, sample_rate=8000)
    assert standin.connections == 2


async def test_idle_timed_out_socket_is_replaced() -> None:
    async with (
        StandinServer(idle_timeout=0.2) as server,
        WavesClient(server.url, server.api_key) as waves,
    ):
        await collect(waves.synthesize("One.", sample_rate=8000, options=EMILY))
        await asyncio.sleep(0.5)  # the server times the socket out and closes it
        chunks = await collect(waves.synthesize("Two.", sample_rate=8000, options=EMILY))
        assert b"".join(chunks) == render("Two.", sample_rate=8000)
        assert server.connections == 2


async def test_concurrent_requests_use_separate_sockets(
    client: WavesClient, standin: StandinServer
) -> None:
    texts = ["First caller.", "Second caller.", "Third caller."]
    results = await asyncio.gather(
        *(collect(client.synthesize(t, sample_rate=8000, options=EMILY)) for t in texts)
    )
    for text, chunks in zip(texts, results, strict=True):
        assert b"".join(chunks) == render(text, sample_rate=8000)
    assert standin.connections == 3
    assert client.idle_sockets == 3


async def test_pool_is_bounded(standin: StandinServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "IDLE_CAP", 2)
    async with WavesClient(standin.url, standin.api_key, max_idle_sockets=1) as waves:
        await asyncio.gather(
            *(collect(waves.synthesize("Hi.", sample_rate=8000, options=EMILY)) for _ in range(3))
        )
        assert waves.idle_sockets == 2  # three were in use at once: as many kept, up to the cap
        await eventually(lambda: standin.open_connections == 2)


async def test_idle_sockets_follow_what_was_in_use_lately(
    standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = SocketPool(standin.url, standin.api_key, max_idle=1)
    try:
        socks = [(await pool.acquire())[0] for _ in range(3)]
        assert pool.idle_limit == 3
        for sock in socks:
            pool.put_back(sock)
        assert pool.idle_sockets == 3  # the next burst finds them open
        monkeypatch.setattr(pool_module, "PEAK_WINDOW", 0.0)
        one, reused = await pool.acquire()  # the busy spell is over: back to max_idle
        assert reused and pool.idle_limit == 1
        pool.put_back(one)
        assert pool.idle_sockets == 2  # kept until used or closed by Waves, not over the limit
    finally:
        await pool.aclose()


async def test_prewarm_fills_the_pool(client: WavesClient, standin: StandinServer) -> None:
    await client.prewarm(2)
    assert standin.connections == 2
    assert client.idle_sockets == 2
    await collect(client.synthesize("Hi.", sample_rate=8000, options=EMILY))
    assert standin.connections == 2
    await client.prewarm(10)  # capped by max_idle_sockets (4)
    assert client.idle_sockets == 4


async def test_aclose_closes_every_socket(standin: StandinServer) -> None:
    waves = WavesClient(standin.url, standin.api_key)
    await waves.prewarm(2)
    await eventually(lambda: standin.open_connections == 2)
    await waves.aclose()
    await eventually(lambda: standin.open_connections == 0)
    with pytest.raises(WavesConnectionError):
        await collect(waves.synthesize("Hi.", sample_rate=8000, options=EMILY))


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, WavesAuthError),
        (403, WavesForbiddenError),
        (429, WavesRateLimited),
        (500, WavesConnectionError),
    ],
)
async def test_refused_handshakes_are_typed(
    client: WavesClient, standin: StandinServer, status: int, error: type[TTSError]
) -> None:
    standin.faults.refuse_status = status
    with pytest.raises(error) as caught:
        await collect(client.synthesize(TEXT, sample_rate=8000, options=EMILY))
    assert type(caught.value) is error


async def test_429_honours_retry_after(client: WavesClient, standin: StandinServer) -> None:
    standin.faults.refuse_status = 429
    standin.faults.retry_after = 2.5
    with pytest.raises(WavesRateLimited) as caught:
        await client.prewarm()
    assert caught.value.retry_after == 2.5
    assert caught.value.kind == "rate_limited"


async def test_wrong_path_and_dead_port_are_connection_errors(standin: StandinServer) -> None:
    async with WavesClient(standin.url.replace("/tts/live", "/nope"), standin.api_key) as w:
        with pytest.raises(WavesConnectionError, match="404"):
            await w.prewarm()
    await standin.stop()
    async with WavesClient(standin.url, standin.api_key, open_timeout=1) as w:
        with pytest.raises(WavesConnectionError):
            await w.prewarm()


async def test_pool_reuses_what_is_put_back_and_drops_the_rest(
    standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_module, "IDLE_CAP", 1)
    pool = SocketPool(standin.url, standin.api_key, max_idle=1)
    try:
        one, reused = await pool.acquire()
        assert not reused and one.open
        two, reused = await pool.acquire()
        assert not reused and two is not one
        pool.put_back(one)
        pool.put_back(two)  # over max_idle: closed, not kept
        assert pool.idle_sockets == 1
        await eventually(lambda: standin.open_connections == 1)
        again, reused = await pool.acquire()
        assert reused and again is one
        pool.drop(again)
        pool.drop(again)  # dropping twice is harmless
        await eventually(lambda: standin.open_connections == 0)
        assert pool.idle_sockets == 0
    finally:
        await pool.aclose()
    with pytest.raises(WavesConnectionError, match="closed"):
        await pool.acquire()
    assert standin.connections == 2
