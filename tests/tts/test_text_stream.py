"""TextStream: one request whose text arrives in pieces, spoken as it comes."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.server import ServerConnection

from telebridge.tts.errors import WavesAuthError, WavesTimeout
from telebridge.tts.standin import StandinServer, render
from telebridge.tts.waves import WavesClient

from .conftest import EMILY, TEXT, Scripted, chunk, collect, eventually, next_request


async def test_streamed_text_is_spoken_as_one_request(
    client: WavesClient, standin: StandinServer
) -> None:
    pieces = ["Thank you ", "for calling", ". ", " ", "Press one", " for hours."]
    ts = client.stream(sample_rate=16000, options=EMILY, request_id="s-1")

    async def produce() -> None:
        for piece in pieces:
            await ts.send(piece)
            await asyncio.sleep(0.01)
        await ts.finish()

    producer = asyncio.create_task(produce())
    audio = b"".join(await collect(ts))
    await producer
    assert audio == render("".join(pieces), sample_rate=16000)
    sent = standin.requests
    assert all(r["continue"] is True and r["request_id"] == "s-1" for r in sent[:-1])
    assert "".join(r["text"] for r in sent) == "".join(pieces)
    assert sent[-1]["text"] == "" and sent[-1]["flush"] is True
    assert sent[-1]["voice_id"] == "emily" and "continue" not in sent[-1]
    # The blank piece was held back and sent with the next one, not on its own.
    assert all(r["text"].strip() for r in sent[:-1])
    assert client.idle_sockets == 1


async def test_stream_ends_at_the_complete_after_flush(scripted: Scripted) -> None:
    """A server that completes segments on its own: only the complete after our flush ends."""

    async def handler(ws: ServerConnection, index: int) -> None:
        while True:
            body = await next_request(ws)
            rid = body["request_id"]
            if body.get("flush"):
                await ws.send(chunk(b"end", external_request_id=rid, request_id="srv-2"))
                await ws.send(json.dumps({"status": "complete", "request_id": "srv-2"}))
                return
            await ws.send(chunk(body["text"].encode(), external_request_id=rid, request_id="srv-1"))
            await ws.send(json.dumps({"status": "complete", "request_id": "srv-1"}))

    url = await scripted(handler)
    async with WavesClient(url, "sk_test") as waves:
        ts = waves.stream(sample_rate=8000, options=EMILY)
        await ts.send("one ")
        consumer = asyncio.create_task(collect(ts))
        await asyncio.sleep(0.1)
        await ts.send("two")
        await asyncio.sleep(0.1)
        await ts.finish()
        assert await consumer == [b"one ", b"two", b"end"]


async def test_stream_with_no_text_sends_nothing(
    client: WavesClient, standin: StandinServer
) -> None:
    ts = client.stream(sample_rate=8000, options=EMILY)
    await ts.send("   ")
    await ts.finish()
    assert await collect(ts) == []
    assert standin.connections == 0
    assert standin.requests == []


async def test_stream_first_chunk_timeout_counts_from_finish(standin: StandinServer) -> None:
    async with WavesClient(standin.url, standin.api_key, first_chunk_timeout=0.3) as waves:
        ts = waves.stream(sample_rate=8000, options=EMILY)
        await ts.send("Hello")
        consumer = asyncio.create_task(collect(ts))
        await asyncio.sleep(0.5)  # longer than the timeout, but text may still come
        assert not consumer.done()
        standin.faults.first_chunk_delay = 1.0
        await ts.finish()
        with pytest.raises(WavesTimeout):
            await consumer


async def test_stream_aclose_interrupts(client: WavesClient, standin: StandinServer) -> None:
    standin.faults.chunk_interval = 0.05
    ts = client.stream(sample_rate=8000, options=EMILY)
    await ts.send(TEXT)
    await ts.finish()
    got: list[bytes] = []
    async for piece in ts:
        got.append(piece)
        await ts.aclose()
    assert len(got) == 1
    await eventually(lambda: standin.open_connections == 0)
    assert client.idle_sockets == 0
    with pytest.raises(RuntimeError):
        await ts.send("more")


async def test_stream_api_misuse_is_refused(client: WavesClient, standin: StandinServer) -> None:
    ts = client.stream(sample_rate=8000, options=EMILY, request_id="s-9")
    assert ts.request_id == "s-9"
    await ts.send("Hi.")
    await ts.finish()
    await ts.finish()  # a second finish sends nothing more
    assert b"".join(await collect(ts)) == render("Hi.", sample_rate=8000)
    with pytest.raises(RuntimeError):
        await ts.send("late")
    with pytest.raises(RuntimeError):
        aiter(ts)
    assert [r.get("flush") for r in standin.requests] == [None, True]
    assert client.idle_sockets == 1
    with pytest.raises(ValueError):
        client.stream(sample_rate=8000, options=EMILY, request_id="no spaces")


async def test_stream_aclose_before_any_text(client: WavesClient, standin: StandinServer) -> None:
    ts = client.stream(sample_rate=8000, options=EMILY)
    assert ts.request_id.startswith("tb_")
    await ts.aclose()
    assert await collect(ts) == []
    with pytest.raises(RuntimeError):
        await ts.send("more")
    assert standin.connections == 0


async def test_stream_connection_error_reaches_both_ends(standin: StandinServer) -> None:
    async with WavesClient(standin.url, "sk_wrong") as waves:
        ts = waves.stream(sample_rate=8000, options=EMILY)
        with pytest.raises(WavesAuthError):
            await ts.send("Hello")
        with pytest.raises(WavesAuthError):
            await collect(ts)


async def test_stream_replays_its_text_on_a_replacement_socket(scripted: Scripted) -> None:
    """The pooled socket dies under the stream: every piece so far goes to the fresh one."""
    received: list[dict[str, object]] = []

    async def handler(ws: ServerConnection, index: int) -> None:
        if index == 1:
            body = await next_request(ws)
            await ws.send(chunk(b"warm", external_request_id=body["request_id"]))
            await ws.send(json.dumps({"status": "complete"}))
            await next_request(ws)  # the stream's first piece: die without answering
            await ws.close()
            return
        text = ""
        while True:
            body = await next_request(ws)
            received.append(body)
            text += body["text"]
            if body.get("flush"):
                break
        await ws.send(chunk(text.encode(), external_request_id=body["request_id"]))
        await ws.send(json.dumps({"status": "complete"}))

    url = await scripted(handler)
    async with WavesClient(url, "sk_test") as waves:
        assert await collect(waves.synthesize("x", sample_rate=8000, options=EMILY)) == [b"warm"]
        ts = waves.stream(sample_rate=8000, options=EMILY)
        await ts.send("Hello ")
        await asyncio.sleep(0.1)  # the server closes the pooled socket meanwhile
        await ts.send("world")
        await ts.finish()
        assert await collect(ts) == [b"Hello world"]
    assert [r["text"] for r in received] == ["Hello ", "world", ""]
    assert [r.get("continue") for r in received] == [True, True, None]
