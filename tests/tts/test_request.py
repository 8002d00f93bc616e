"""One request on one socket: which frames are ours, error frames, truncation, dead sockets."""

from __future__ import annotations

import json
import time

import pytest
from websockets.asyncio.server import ServerConnection

from telebridge.tts.errors import (
    WavesRateLimited,
    WavesServerError,
    WavesTruncated,
)
from telebridge.tts.speech import SpeechOptions
from telebridge.tts.standin import StandinServer, render
from telebridge.tts.waves import WavesClient

from .conftest import EMILY, TEXT, Scripted, chunk, collect, next_request


@pytest.mark.parametrize("death", ["close", "idle_frame"])
async def test_pooled_socket_found_dead_is_replaced_once(scripted: Scripted, death: str) -> None:
    """The pool handed out a socket that looked open; the retry is invisible to the caller."""

    async def handler(ws: ServerConnection, index: int) -> None:
        while True:
            body = await next_request(ws)
            if index == 1 and body["text"] == "second":
                if death == "idle_frame":
                    message = "Connection timed out after 60 seconds of inactivity"
                    await ws.send(json.dumps({"status": "error", "message": message}))
                await ws.close()
                return
            await ws.send(chunk(body["text"].encode(), external_request_id=body["request_id"]))
            await ws.send(json.dumps({"status": "complete", "request_id": "srv"}))

    url = await scripted(handler)
    async with WavesClient(url, "sk_test") as waves:
        assert await collect(waves.synthesize("first", sample_rate=8000, options=EMILY)) == [
            b"first"
        ]
        got = await collect(waves.synthesize("second", sample_rate=8000, options=EMILY))
        assert got == [b"second"]


async def test_drop_mid_request_is_truncation(client: WavesClient, standin: StandinServer) -> None:
    standin.faults.drop_after_bytes = 3000
    got: list[bytes] = []
    with pytest.raises(WavesTruncated):
        async for piece in client.synthesize(TEXT, sample_rate=8000, options=EMILY):
            got.append(piece)
    assert b"".join(got) == render(TEXT, sample_rate=8000)[:3000]
    assert client.idle_sockets == 0


@pytest.mark.parametrize("flat", [False, True])
async def test_error_frames_raise_server_error(
    client: WavesClient, standin: StandinServer, flat: bool
) -> None:
    standin.faults.error_message = "Something broke"
    standin.faults.flat_error = flat
    with pytest.raises(WavesServerError) as caught:
        await collect(client.synthesize(TEXT, sample_rate=8000, options=EMILY))
    assert caught.value.message == "Waves: Something broke"
    assert caught.value.code == (None if flat else "standin_fault")
    assert caught.value.kind == "server_error"


async def test_concurrency_error_frame_is_rate_limit(
    client: WavesClient, standin: StandinServer
) -> None:
    standin.faults.error_message = "Concurrency limit exceeded for this key"
    with pytest.raises(WavesRateLimited):
        await collect(client.synthesize(TEXT, sample_rate=8000, options=EMILY))


async def test_unknown_voice_is_server_error(client: WavesClient) -> None:
    options = SpeechOptions(voice_id="nobody")
    with pytest.raises(WavesServerError, match="Invalid Voice ID"):
        await collect(client.synthesize(TEXT, sample_rate=8000, options=options))


async def test_foreign_frames_and_unknown_statuses_are_ignored(scripted: Scripted) -> None:
    async def handler(ws: ServerConnection, index: int) -> None:
        body = await next_request(ws)
        ours = body["request_id"]
        await ws.send(chunk(b"X", request_id="srv-9", external_request_id="someone-else"))
        await ws.send(chunk(b"abc", request_id="srv-1", external_request_id=ours))
        await ws.send(json.dumps({"status": "word_timestamp", "request_id": "srv-1", "data": {}}))
        await ws.send(json.dumps({"status": "complete", "request_id": "srv-9"}))
        await ws.send(chunk(b"d", request_id="srv-1"))
        await ws.send(json.dumps({"status": "complete", "request_id": "srv-1"}))

    url = await scripted(handler)
    async with WavesClient(url, "sk_test") as waves:
        got = await collect(waves.synthesize("x", sample_rate=8000, options=EMILY))
    assert got == [b"abc", b"d"]


async def test_old_servers_echoing_our_id_as_request_id(scripted: Scripted) -> None:
    async def handler(ws: ServerConnection, index: int) -> None:
        body = await next_request(ws)
        await ws.send(chunk(b"\x01\x02\x03", request_id=body["request_id"]))
        await ws.send(json.dumps({"status": "complete", "request_id": body["request_id"]}))

    url = await scripted(handler)
    async with WavesClient(url, "sk_test") as waves:
        got = await collect(waves.synthesize("x", sample_rate=8000, options=EMILY))
    assert got == [b"\x01\x02\x03"]


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        b"\x00\x01",
        json.dumps(["a list"]),
        json.dumps({"no": "status"}),
        json.dumps({"status": "chunk"}),
        json.dumps({"status": "chunk", "data": {"audio": "!!!not base64!!!"}}),
        json.dumps({"status": "error", "error": {"message": "boom", "code": 1}}),
    ],
)
async def test_malformed_frames_fail_fast(scripted: Scripted, frame: str | bytes) -> None:
    async def handler(ws: ServerConnection, index: int) -> None:
        await next_request(ws)
        await ws.send(frame)
        await ws.wait_closed()

    url = await scripted(handler)
    async with WavesClient(url, "sk_test", first_chunk_timeout=3) as waves:
        started = time.monotonic()
        with pytest.raises(WavesServerError):
            await collect(waves.synthesize("x", sample_rate=8000, options=EMILY))
        assert time.monotonic() - started < 1
