"""WavesClient.synthesize against the real stand-in server and against hand-scripted servers."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from contextlib import aclosing

import pytest
from websockets.asyncio.server import ServerConnection

from telebridge.tts.errors import (
    TTSError,
    WavesTimeout,
)
from telebridge.tts.speech import SpeechOptions
from telebridge.tts.standin import StandinServer, default_chunk_bytes, render
from telebridge.tts.waves import WavesClient

from .conftest import EMILY, TEXT, Scripted, chunk, collect, eventually, next_request


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_yields_exactly_the_servers_audio(client: WavesClient, rate: int) -> None:
    chunks = await collect(client.synthesize(TEXT, sample_rate=rate, options=EMILY))
    assert b"".join(chunks) == render(TEXT, sample_rate=rate)
    assert len(chunks) > 3


async def test_chunks_pass_through_unaligned(client: WavesClient) -> None:
    chunks = await collect(client.synthesize(TEXT, sample_rate=8000, options=EMILY))
    size = default_chunk_bytes(8000)
    assert size % 2 == 1
    assert [len(c) for c in chunks[:-1]] == [size] * (len(chunks) - 1)


async def test_request_carries_every_field(client: WavesClient, standin: StandinServer) -> None:
    options = SpeechOptions("james", model="lightning_v3.1_pro", language="en", speed=1.25)
    await collect(client.synthesize("Hi.", sample_rate=16000, options=options, request_id="r-1"))
    await collect(client.synthesize("Hi.", sample_rate=16000, options=options))
    first, second = standin.requests
    assert first == {
        "voice_id": "james",
        "text": "Hi.",
        "model": "lightning_v3.1_pro",
        "sample_rate": 16000,
        "speed": 1.25,
        "language": "en",
        "request_id": "r-1",
        "word_timestamps": False,
    }
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", second["request_id"])
    assert second["request_id"] != "r-1"


async def test_blank_text_sends_nothing(client: WavesClient, standin: StandinServer) -> None:
    assert await collect(client.synthesize("  \n", sample_rate=8000, options=EMILY)) == []
    assert standin.connections == 0


async def test_bad_request_id_is_refused_locally(client: WavesClient) -> None:
    with pytest.raises(ValueError):
        await collect(client.synthesize("Hi", sample_rate=8000, options=EMILY, request_id="a b"))


async def test_slow_first_chunk_times_out(standin: StandinServer) -> None:
    standin.faults.first_chunk_delay = 1.0
    async with WavesClient(standin.url, standin.api_key, first_chunk_timeout=0.2) as waves:
        started = time.monotonic()
        with pytest.raises(WavesTimeout):
            await collect(waves.synthesize(TEXT, sample_rate=8000, options=EMILY))
        assert time.monotonic() - started < 0.9
        assert waves.idle_sockets == 0


async def test_stalled_stream_times_out(scripted: Scripted) -> None:
    async def handler(ws: ServerConnection, index: int) -> None:
        body = await next_request(ws)
        await ws.send(chunk(b"ab", external_request_id=body["request_id"]))
        await ws.wait_closed()

    url = await scripted(handler)
    async with WavesClient(url, "sk_test", stall_timeout=0.2) as waves:
        got: list[bytes] = []
        with pytest.raises(WavesTimeout):
            async for piece in waves.synthesize("x", sample_rate=8000, options=EMILY):
                got.append(piece)
        assert got == [b"ab"]


async def test_aclose_mid_request_closes_that_socket(
    client: WavesClient, standin: StandinServer
) -> None:
    standin.faults.chunk_interval = 0.05
    async with aclosing(client.synthesize(TEXT, sample_rate=8000, options=EMILY)) as audio:
        async for _ in audio:
            break
    await eventually(lambda: standin.open_connections == 0)
    assert client.idle_sockets == 0
    standin.faults.chunk_interval = 0
    await collect(client.synthesize("Again.", sample_rate=8000, options=EMILY))
    assert standin.connections == 2


async def test_cancelling_the_consumer_closes_the_socket(
    client: WavesClient, standin: StandinServer
) -> None:
    standin.faults.chunk_interval = 0.05
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in client.synthesize(TEXT, sample_rate=8000, options=EMILY):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: standin.open_connections == 0)
    assert client.idle_sockets == 0


async def test_key_never_in_errors_or_logs(
    standin: StandinServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "sk_live_do_not_leak_0123456789"
    errors: list[BaseException] = []
    async with WavesClient(standin.url, secret) as waves:
        for status in (None, 403, 429, 500):
            standin.faults.refuse_status = status
            try:
                await collect(waves.synthesize(TEXT, sample_rate=8000, options=EMILY))
            except TTSError as exc:
                errors.append(exc)
    standin.api_key = secret  # now accepted: run a full request with debug logging on
    standin.faults.refuse_status = None
    standin.faults.error_message = f"bad key {secret}"
    async with WavesClient(standin.url, secret) as waves:
        try:
            await collect(waves.synthesize(TEXT, sample_rate=8000, options=EMILY))
        except TTSError as exc:
            errors.append(exc)
    assert len(errors) == 5
    for error in errors:
        chain: BaseException | None = error
        while chain is not None:
            assert secret not in str(chain) and secret not in repr(chain)
            chain = chain.__cause__ or chain.__context__
    assert any("Authorization" in r.getMessage() for r in caplog.records)  # logging was on
    for record in caplog.records:
        assert secret not in record.getMessage()
