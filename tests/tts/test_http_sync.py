"""WavesHttpClient.render against a fake Waves sync endpoint served by uvicorn on a loopback port,
and a raw socket server for answers cut short."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from telebridge.simulator.serving import ServedApp
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
from telebridge.tts.http_sync import WavesHttpClient
from telebridge.tts.speech import SpeechOptions

from .conftest import EMILY

KEY = "sk_live_do_not_leak_0123456789"
PATH = "/waves/v1/tts"
# An odd number of bytes: PCM16 cut mid-sample must come back as it is.
PCM = bytes((n * 31 + 7) % 256 for n in range(1001))


@dataclass
class Answer:
    status: int = 200
    writes: list[bytes] = field(default_factory=lambda: [PCM[:1], PCM[1:500], PCM[500:]])
    headers: dict[str, str] = field(
        default_factory=lambda: {"content-type": "audio/wav", "content-length": str(len(PCM))}
    )
    hold_first: bool = False  # answer nothing until the client leaves


class Endpoint:
    """An ASGI callable that starlette routes to as is (a plain method would get a `Request`)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class FakeSync:
    """Waves' sync endpoint; each request takes the next of `answers`."""

    def __init__(self) -> None:
        self.key = KEY
        self.url = ""
        self.answers: list[Answer] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.ports: list[int] = []
        self.left = asyncio.Event()
        self.app = Starlette(routes=[Route(PATH, Endpoint(self.tts), methods=["POST"])])

    async def tts(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.ports.append(scope["client"][1])
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.headers.append(headers)
        self.requests.append(json.loads(body))
        if headers.get("authorization") != f"Bearer {self.key}":
            answer = Answer(401, [b'{"error": "Unauthorized"}'], {})
        else:
            answer = self.answers.pop(0) if self.answers else Answer()
        if answer.hold_first:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.left.set()
            return
        raw = [(k.encode(), v.encode()) for k, v in answer.headers.items()]
        await send({"type": "http.response.start", "status": answer.status, "headers": raw})
        for write in answer.writes:
            await send({"type": "http.response.body", "body": write, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture
async def waves() -> AsyncIterator[FakeSync]:
    fake = FakeSync()
    async with ServedApp(fake.app, lifespan="off", timeout_graceful_shutdown=2) as served:
        fake.url = f"ws://127.0.0.1:{served.port}/waves/v1/tts/live"
        yield fake


@pytest.fixture
async def client(waves: FakeSync) -> AsyncIterator[WavesHttpClient]:
    async with WavesHttpClient(waves.url, KEY, timeout=3.0) as sync:
        yield sync


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody takes it), never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def render(client: WavesHttpClient, text: str = "Press one.", **kw: Any) -> bytes:
    return await client.render(text, sample_rate=kw.pop("sample_rate", 8000), options=EMILY, **kw)


async def test_returns_the_body_exactly(client: WavesHttpClient) -> None:
    audio = await render(client)
    assert audio == PCM
    assert len(audio) % 2 == 1


async def test_a_chunked_answer_is_joined(client: WavesHttpClient, waves: FakeSync) -> None:
    waves.answers.append(Answer(writes=[b"a", b"bc", b"", b"def"], headers={}))
    assert await render(client) == b"abcdef"


async def test_request_is_the_websocket_request_plus_pcm(
    client: WavesHttpClient, waves: FakeSync
) -> None:
    options = SpeechOptions("james", model="lightning_v3.1_pro", language="hi", speed=1.25)
    await client.render("Hi.", sample_rate=16000, options=options, request_id="r-1")
    assert waves.requests == [
        {
            "voice_id": "james",
            "text": "Hi.",
            "model": "lightning_v3.1_pro",
            "sample_rate": 16000,
            "speed": 1.25,
            "language": "hi",
            "request_id": "r-1",
            "word_timestamps": False,
            "output_format": "pcm",
        }
    ]
    assert waves.headers[0]["authorization"] == f"Bearer {KEY}"
    assert waves.headers[0]["content-type"] == "application/json"


async def test_renders_reuse_one_connection(client: WavesHttpClient, waves: FakeSync) -> None:
    for _ in range(3):
        assert await render(client) == PCM
    assert len(waves.requests) == 3
    assert len(set(waves.ports)) == 1


async def test_blank_text_sends_nothing(client: WavesHttpClient, waves: FakeSync) -> None:
    assert await render(client, " \n") == b""
    assert waves.requests == []
    with pytest.raises(ValueError):
        await render(client, request_id="a b")


async def test_a_closed_client_refuses(waves: FakeSync) -> None:
    sync = WavesHttpClient(waves.url, KEY)
    await sync.aclose()
    with pytest.raises(WavesConnectionError) as caught:
        await render(sync)
    assert str(caught.value) == "this WavesHttpClient is closed"


@pytest.mark.parametrize(
    ("answer", "kind", "message"),
    [
        (
            Answer(403, [b"no"], {}),
            WavesForbiddenError,
            "the Waves API key lacks access (HTTP 403)",
        ),
        (
            Answer(429, [], {"retry-after": "4"}),
            WavesRateLimited,
            "Waves concurrency limit reached (HTTP 429)",
        ),
        (
            Answer(
                400,
                [b'{"error":[{"code":"custom","path":["voice_id"],"message":"Invalid Voice ID"}]}'],
                {"content-type": "application/json"},
            ),
            WavesServerError,
            "Waves rejected the request (HTTP 400): voice_id: Invalid Voice ID",
        ),
        (
            Answer(500, [b"Internal Server Error"], {}),
            WavesServerError,
            "Waves answered HTTP 500: Internal Server Error",
        ),
        (
            Answer(200, [b'{"message": "quota used up"}'], {"content-type": "application/json"}),
            WavesServerError,
            "Waves answered application/json instead of audio: quota used up",
        ),
        (
            Answer(200, [b"<html>Sign in</html>"], {"content-type": "text/html; charset=utf-8"}),
            WavesServerError,
            "Waves answered text/html instead of audio: <html>Sign in</html>",
        ),
    ],
)
async def test_refusals_are_typed(
    client: WavesHttpClient, waves: FakeSync, answer: Answer, kind: type[TTSError], message: str
) -> None:
    waves.answers.append(answer)
    with pytest.raises(TTSError) as caught:
        await render(client)
    assert type(caught.value) is kind
    assert str(caught.value) == message
    if isinstance(caught.value, WavesRateLimited):
        assert caught.value.retry_after == 4.0
    assert await render(client) == PCM  # the client goes on


async def test_wrong_key_is_an_auth_error(waves: FakeSync) -> None:
    async with WavesHttpClient(waves.url, "sk_wrong_key_000000") as sync:
        with pytest.raises(WavesAuthError) as caught:
            await render(sync)
    assert str(caught.value) == "Waves refused the API key (HTTP 401): check WAVES_API_KEY"


async def test_no_answer_times_out(waves: FakeSync) -> None:
    waves.answers.append(Answer(hold_first=True))
    async with WavesHttpClient(waves.url, KEY, timeout=0.2) as sync:
        started = time.monotonic()
        with pytest.raises(WavesTimeout) as caught:
            await render(sync)
        assert time.monotonic() - started < 0.9
    assert str(caught.value) == "no answer from Waves within 0.2 s"
    await asyncio.wait_for(waves.left.wait(), 3)


async def test_unreachable_server_is_a_connection_error(dead_port: int) -> None:
    async with WavesHttpClient(f"wss://127.0.0.1:{dead_port}/waves/v1/tts/live", KEY) as sync:
        with pytest.raises(WavesConnectionError) as caught:
            await render(sync)
    assert (
        str(caught.value) == f"cannot connect to https://127.0.0.1:{dead_port}{PATH}: ConnectError"
    )


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A TCP server speaking HTTP by hand, for answers no well-behaved server sends."""
    tasks: set[asyncio.Task[None]] = set()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/waves/v1/tts/live"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-type: audio/wav\r\ncontent-length: 1000\r\n\r\n" + PCM[:501],
        b"HTTP/1.1 200 OK\r\ncontent-type: audio/wav\r\ntransfer-encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n10\r\nde",
    ],
    ids=["shorter than content-length", "chunked, never ended"],
)
async def test_an_answer_cut_short_is_truncated(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(answer)
        await writer.drain()

    async with raw_server(handler) as url, WavesHttpClient(url, KEY) as sync:
        with pytest.raises(WavesTruncated) as caught:
            await render(sync)
    assert str(caught.value) == "Waves closed the connection before the audio was complete"


async def test_closed_without_an_answer_is_a_connection_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return

    async with raw_server(handler) as url, WavesHttpClient(url, KEY) as sync:
        with pytest.raises(WavesConnectionError) as caught:
            await render(sync)
    assert str(caught.value).startswith("no answer from http://127.0.0.1:")
    assert str(caught.value).endswith(f"{PATH}: RemoteProtocolError")


async def test_key_never_in_errors_or_logs(
    waves: FakeSync, caplog: pytest.LogCaptureFixture, dead_port: int
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = KEY.encode()
    waves.answers += [
        Answer(400, [b'{"error":[{"path":["text"],"message":"bad ' + echo + b'"}]}'], {}),
        Answer(500, [b"Authorization: Bearer " + echo], {}),
        Answer(403, [echo], {}),
        Answer(200, [b'{"error": "' + echo + b'"}'], {"content-type": "application/json"}),
        Answer(hold_first=True),
    ]
    errors: list[BaseException] = []
    async with WavesHttpClient(waves.url, KEY, timeout=0.3) as sync:
        for _ in range(5):
            try:
                await render(sync)
            except TTSError as exc:
                errors.append(exc)
        assert await render(sync) == PCM
    async with WavesHttpClient(waves.url, KEY + "x") as wrong:
        with pytest.raises(WavesAuthError) as refused:
            await render(wrong)
        errors.append(refused.value)
    async with WavesHttpClient(f"ws://127.0.0.1:{dead_port}/", KEY) as unreachable:
        with pytest.raises(WavesConnectionError) as unreached:
            await render(unreachable)
        errors.append(unreached.value)
    assert [type(e).__name__ for e in errors] == [
        "WavesServerError",
        "WavesServerError",
        "WavesForbiddenError",
        "WavesServerError",
        "WavesTimeout",
        "WavesAuthError",
        "WavesConnectionError",
    ]
    assert str(errors[0]) == "Waves rejected the request (HTTP 400): text: bad [redacted]"
    for error in errors:
        chain: BaseException | None = error
        while chain is not None:
            assert KEY not in str(chain) and KEY not in repr(chain)
            chain = chain.__cause__ or chain.__context__
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("HTTP Request: POST") for m in messages)  # httpx logged too
    assert any(
        r.name == "telebridge.tts.http" and "1001 bytes" in m
        for r, m in zip(caplog.records, messages, strict=True)
    )
    for message in messages:
        assert KEY not in message
