"""WavesClient against the real stand-in server and against hand-scripted servers."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing, suppress
from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection

from telebridge.tts.errors import (
    TTSError,
    WavesAuthError,
    WavesConnectionError,
    WavesForbiddenError,
    WavesRateLimited,
    WavesServerError,
    WavesTimeout,
    WavesTruncated,
)
from telebridge.tts.standin import StandinServer, default_chunk_bytes, render
from telebridge.tts.waves import SpeechOptions, WavesClient, _retry_after, parse_frame

from .conftest import EMILY, Handler, collect, eventually, next_request

TEXT = "Thank you for calling. Press one for opening hours."
Scripted = Callable[[Handler], Awaitable[str]]


def chunk(audio: bytes, **ids: str) -> str:
    encoded = base64.b64encode(audio).decode()
    return json.dumps({"status": "chunk", **ids, "data": {"audio": encoded}})


# --- audio and request shape --------------------------------------------------------------


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


async def test_bearer_key_is_required(standin: StandinServer) -> None:
    async with WavesClient(standin.url, "sk_wrong") as waves:
        with pytest.raises(WavesAuthError):
            await collect(waves.synthesize(TEXT, sample_rate=8000, options=EMILY))
    assert standin.requests == []


async def test_blank_text_sends_nothing(client: WavesClient, standin: StandinServer) -> None:
    assert await collect(client.synthesize("  \n", sample_rate=8000, options=EMILY)) == []
    assert standin.connections == 0


async def test_bad_request_id_is_refused_locally(client: WavesClient) -> None:
    with pytest.raises(ValueError):
        await collect(client.synthesize("Hi", sample_rate=8000, options=EMILY, request_id="a b"))


# --- socket reuse -------------------------------------------------------------------------


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


async def test_pool_is_bounded(standin: StandinServer) -> None:
    async with WavesClient(standin.url, standin.api_key, max_idle_sockets=1) as waves:
        await asyncio.gather(
            *(collect(waves.synthesize("Hi.", sample_rate=8000, options=EMILY)) for _ in range(3))
        )
        assert waves.idle_sockets == 1
        await eventually(lambda: standin.open_connections == 1)


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


# --- streaming text -----------------------------------------------------------------------


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


# --- faults -------------------------------------------------------------------------------


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


def test_retry_after_accepts_http_dates() -> None:
    later = formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (_retry_after({"Retry-After": later}) or 0) <= 30
    assert _retry_after({"Retry-After": "soon"}) is None
    assert _retry_after({}) is None


async def test_wrong_path_and_dead_port_are_connection_errors(standin: StandinServer) -> None:
    async with WavesClient(standin.url.replace("/tts/live", "/nope"), standin.api_key) as w:
        with pytest.raises(WavesConnectionError, match="404"):
            await w.prewarm()
    await standin.stop()
    async with WavesClient(standin.url, standin.api_key, open_timeout=1) as w:
        with pytest.raises(WavesConnectionError):
            await w.prewarm()


# --- interrupts ---------------------------------------------------------------------------


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


# --- what the server may send -------------------------------------------------------------


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


def test_parse_frame_tolerates_odd_retry_after() -> None:
    cases = [('"2"', None), ("true", None), ("1" * 400, None), ("1e999", None), ("-1", None)]
    for value, expected in [*cases, ("2", 2.0), ("1.5", 1.5)]:
        raw = '{"status": "error", "message": "Too many", "retry_after": ' + value + "}"
        assert parse_frame(raw).retry_after == expected


def test_parse_frame_reads_both_error_shapes() -> None:
    flat = parse_frame('{"status": "error", "message": "Connection timed out"}')
    assert (flat.message, flat.code) == ("Connection timed out", None)
    nested = parse_frame(
        '{"status": "error", "error": {"message": "Too many requests", "code": "concurrency"}}'
    )
    assert (nested.message, nested.code) == ("Too many requests", "concurrency")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
_FRAMES = st.fixed_dictionaries(
    {"status": st.sampled_from(["chunk", "complete", "error", "word_timestamp"]) | st.text()},
    optional={
        "data": _JSON
        | st.fixed_dictionaries(
            {"audio": st.text() | st.binary().map(lambda b: base64.b64encode(b).decode())}
        ),
        "error": _JSON,
        "message": _JSON,
        "request_id": _JSON,
        "external_request_id": _JSON,
        "retry_after": _JSON,
    },
)


@given(st.one_of(st.text(), st.binary(), _JSON.map(json.dumps), _FRAMES.map(json.dumps)))
def test_parse_frame_fails_only_with_server_error(raw: str | bytes) -> None:
    with suppress(WavesServerError):
        frame = parse_frame(raw)
        assert isinstance(frame.audio, bytes)
        assert frame.request_id is None or isinstance(frame.request_id, str)
        assert frame.status != "error" or frame.message


# --- secrets ------------------------------------------------------------------------------


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
