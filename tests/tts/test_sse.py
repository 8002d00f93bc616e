"""WavesSSEClient: the SSE format without I/O (any split of the bytes), and the client against a
fake Waves served by uvicorn on a loopback port, or a raw socket server for broken connections."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
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
from telebridge.tts.speech import SpeechOptions
from telebridge.tts.sse import WavesSSEClient
from telebridge.tts.sse_wire import SSEDecoder, SSEEvent, parse_event

from .conftest import EMILY, collect

KEY = "sk_live_do_not_leak_0123456789"
PATH = "/waves/v1/tts/live"


# --- the format, without I/O -----------------------------------------------------------------


def feed_all(pieces: list[bytes]) -> list[str]:
    decoder = SSEDecoder()
    found = [data for piece in pieces for data in decoder.feed(piece)]
    return found + decoder.close()


def test_decoder_reads_the_waves_shape() -> None:
    stream = (
        b'event: audio\ndata: {"audio": "AAE=", "done": false, "status": "206"}\n\n'
        b'data: {"status": "200", "done": true}\n\n'
    )
    assert feed_all([stream]) == [
        '{"audio": "AAE=", "done": false, "status": "206"}',
        '{"status": "200", "done": true}',
    ]


def test_decoder_follows_the_sse_rules() -> None:
    stream = (
        b"\xef\xbb\xbf: a comment first, after a byte order mark\n"
        b"id: 7\nretry: 100\nevent: audio\ndata: one\ndata:two\ndata:  three\n\n"
        b"event: nothing\nid: 8\n\n"  # no data: not an event
        b"data\n\n"  # a field name alone: empty data, not an event
        b"data: \n\n"  # blank data: not an event
        b"datum: x\nDATA: y\n:data: z\n\n"  # not the data field
        b"data: last"  # the server left out the final blank line
    )
    assert feed_all([stream]) == ["one\ntwo\n three", "last"]


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_decoder_takes_every_line_ending(end: bytes) -> None:
    stream = end.join([b"data: a", b"data: b", b"", b": ping", b"data: c", b"", b""])
    assert feed_all([stream]) == ["a\nb", "c"]
    # Byte by byte: a CR at the end of one piece and the LF at the start of the next are one
    # line end, not two (which would end the event early).
    assert feed_all([bytes([b]) for b in stream]) == ["a\nb", "c"]


def test_decoder_keeps_cr_lf_split_over_pieces_as_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r") == ["a\nb"]
    assert decoder.feed(b"\n") == []
    assert decoder.close() == []


def test_decoder_refuses_endless_lines_and_events() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    decoder.feed(b"data: " + b"x" * 90)
    with pytest.raises(WavesServerError, match=r"^Waves sent an SSE line longer than 100 bytes$"):
        decoder.feed(b"x" * 20)
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(WavesServerError, match=r"^Waves sent an SSE event larger than 100 bytes$"):
        decoder.feed(b"data: " + b"x" * 60 + b"\ndata: " + b"y" * 60 + b"\n")


_DATA = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), min_size=1)
_EVENTS = st.lists(st.lists(_DATA, min_size=1, max_size=3), max_size=6)


def test_decoder_gives_the_same_events_for_every_cut() -> None:
    for end in (b"\n", b"\r\n", b"\r"):
        lines = [b"\xef\xbb\xbfdata: a", b"data: b", b"", b": ping", b"event: x", b"data:c", b""]
        stream = b"".join(line + end for line in lines)
        for i in range(len(stream) + 1):
            for j in range(i, min(len(stream), i + 6) + 1):
                pieces = [stream[:i], stream[i:j], stream[j:]]
                assert feed_all(pieces) == ["a\nb", "c"], (end, i, j)


@given(
    _EVENTS,
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.booleans(),
    st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_decoder_gives_the_same_events_however_the_bytes_are_split(
    events: list[list[str]], end: bytes, chatty: bool, cuts: list[int]
) -> None:
    lines: list[bytes] = []
    for data_lines in events:
        if chatty:
            lines += [b": keep-alive", b"event: audio", b"id: 1"]
        lines += [b"data: " + line.encode() for line in data_lines]
        lines.append(b"")
    stream = b"".join(line + end for line in lines)
    points = sorted({min(cut, len(stream)) for cut in cuts})
    pieces = [stream[a:b] for a, b in itertools.pairwise([0, *points, len(stream)])]
    expected = ["\n".join(data_lines) for data_lines in events]
    expected = [data for data in expected if data.strip()]
    assert feed_all(pieces) == expected


def b64(audio: bytes) -> str:
    return base64.b64encode(audio).decode()


def test_parse_event_audio_done_and_nothing() -> None:
    audio = bytes(range(7))
    assert parse_event(json.dumps({"audio": b64(audio), "done": False}), secret=KEY) == SSEEvent(
        audio=audio
    )
    assert parse_event('{"status": "200", "done": true}', secret=KEY) == SSEEvent(done=True)
    both = parse_event(json.dumps({"audio": b64(b"x"), "done": True}), secret=KEY)
    assert both == SSEEvent(audio=b"x", done=True)
    nested = parse_event(json.dumps({"data": {"audio": b64(b"abc")}}), secret=KEY)
    assert nested == SSEEvent(audio=b"abc")
    assert parse_event('{"audio": "", "status": "206"}', secret=KEY) == SSEEvent(audio=b"")
    assert parse_event('{"audio": null, "done": "true"}', secret=KEY) == SSEEvent()
    assert parse_event('{"status": "206", "error": null}', secret=KEY) == SSEEvent()


@pytest.mark.parametrize(
    ("data", "kind", "message"),
    [
        ('{"status": "500", "error": "boom"}', WavesServerError, "Waves: boom (code 500)"),
        ('{"status": 503, "message": "busy"}', WavesServerError, "Waves: busy (code 503)"),
        ('{"status": "error", "message": "idle"}', WavesServerError, "Waves: idle"),
        (
            '{"error": {"message": "bad voice", "code": "VOICE"}}',
            WavesServerError,
            "Waves: bad voice (code VOICE)",
        ),
        (
            '{"status": "400", "error": [{"path": ["voice_id"], "message": "Invalid Voice ID"}]}',
            WavesServerError,
            "Waves: voice_id: Invalid Voice ID (code 400)",
        ),
        ('{"error": true}', WavesServerError, "Waves: unspecified error"),
        ('{"status": "429", "message": "slow down"}', WavesRateLimited, "Waves: slow down"),
        (
            '{"error": "Too many concurrent requests"}',
            WavesRateLimited,
            "Waves: Too many concurrent requests",
        ),
    ],
)
def test_parse_event_errors(data: str, kind: type[TTSError], message: str) -> None:
    event = parse_event(data, secret=KEY)
    assert event.audio is None and not event.done
    assert type(event.error) is kind
    assert str(event.error) == message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('{"audio": "AAE', "Waves sent an SSE event that is not valid JSON"),
        ("[" * 100_000, "Waves sent an SSE event that is not valid JSON"),
        ('["audio"]', "Waves sent an SSE event that is not a JSON object"),
        ('{"audio": "A$E="}', "Waves sent an SSE event whose audio is not valid base64"),
        ('{"audio": "AAE"}', "Waves sent an SSE event whose audio is not valid base64"),
        ('{"audio": 12}', "Waves sent an SSE event whose audio is not a base64 string"),
    ],
)
def test_parse_event_refuses_what_is_not_the_protocol(data: str, message: str) -> None:
    with pytest.raises(WavesServerError) as caught:
        parse_event(data, secret=KEY)
    assert str(caught.value) == message


def test_parse_event_redacts_the_key() -> None:
    event = parse_event(json.dumps({"status": "500", "error": f"bad key {KEY}"}), secret=KEY)
    assert str(event.error) == "Waves: bad key [redacted] (code 500)"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
_EVENT_OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "audio": _JSON | st.binary().map(b64),
        "done": _JSON,
        "status": _JSON | st.sampled_from(["200", "206", "400", "429", "500", "error"]),
        "error": _JSON,
        "message": _JSON,
        "data": _JSON,
    },
)


@given(st.text() | _JSON.map(json.dumps) | _EVENT_OBJECTS.map(json.dumps))
def test_parse_event_fails_only_with_server_error(data: str) -> None:
    with contextlib.suppress(WavesServerError):
        event = parse_event(data, secret=KEY)
        assert event.audio is None or isinstance(event.audio, bytes)
        assert event.error is None or isinstance(event.error, TTSError)


# --- a fake Waves ----------------------------------------------------------------------------

HOLD = b"<hold>"  # in a script: send nothing more, keep the response open until the client leaves


def audio_event(audio: bytes, end: str = "\n") -> bytes:
    data = json.dumps({"audio": b64(audio), "done": False, "status": "206"})
    return f"event: audio{end}data: {data}{end}{end}".encode()


DONE = b'data: {"status": "200", "done": true}\n\n'
# Chunks of any length, odd ones too (about 20 ms at 8 kHz is 320 bytes).
PIECES = [bytes((i * 7 + n) % 256 for n in range(size)) for i, size in enumerate([321, 320, 7, 1])]


@dataclass
class Answer:
    status: int = 200
    writes: list[bytes] = field(default_factory=lambda: [*map(audio_event, PIECES), DONE])
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "text/event-stream"})
    hold_first: bool = False  # not even the status line


class RawEndpoint:
    """An ASGI callable that starlette routes to as is (a plain method would get a `Request`)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class FakeWaves:
    """Waves' SSE endpoint and voice list; each request takes the next of `answers`."""

    def __init__(self) -> None:
        self.key = KEY
        self.url = ""  # WAVES_URL of this server, once served
        self.voice_status = 200
        self.answers: list[Answer] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.ports: list[int] = []  # the client port of every request: one per connection
        self.voice_lists = 0
        self.left = asyncio.Event()  # a client left a held response
        self.app = Starlette(
            routes=[
                Route(PATH, RawEndpoint(self.live), methods=["POST"]),
                Route("/waves/v1/lightning-v3.1/get_voices", self.voices, methods=["GET"]),
            ]
        )

    @property
    def connections(self) -> int:
        return len(set(self.ports))

    async def voices(self, request: Request) -> JSONResponse:
        assert request.client is not None
        self.ports.append(request.client.port)
        self.voice_lists += 1
        if request.headers.get("authorization") != f"Bearer {self.key}":
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        if self.voice_status != 200:
            return JSONResponse({"error": "Not Found"}, status_code=self.voice_status)
        return JSONResponse({"voices": [{"voiceId": "emily"}]})

    async def live(self, scope: Scope, receive: Receive, send: Send) -> None:
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
            answer = Answer(
                401, [b'{"error": "Unauthorized"}'], {"content-type": "application/json"}
            )
        else:
            answer = self.answers.pop(0) if self.answers else Answer()
        if answer.hold_first:
            await self._hold(receive)
            return
        raw_headers = [(k.encode(), v.encode()) for k, v in answer.headers.items()]
        await send({"type": "http.response.start", "status": answer.status, "headers": raw_headers})
        for write in answer.writes:
            if write == HOLD:
                await self._hold(receive)
                return
            await send({"type": "http.response.body", "body": write, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _hold(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.left.set()


@pytest.fixture
async def waves() -> AsyncIterator[FakeWaves]:
    fake = FakeWaves()
    async with ServedApp(fake.app, lifespan="off", timeout_graceful_shutdown=2) as served:
        fake.url = f"ws://127.0.0.1:{served.port}{PATH}"
        yield fake


@pytest.fixture
async def client(waves: FakeWaves) -> AsyncIterator[WavesSSEClient]:
    async with WavesSSEClient(waves.url, KEY, first_chunk_timeout=3.0) as sse:
        yield sse


def speak(
    client: WavesSSEClient, text: str = "Hello there.", **kw: Any
) -> AsyncGenerator[bytes, None]:
    return client.synthesize(text, sample_rate=kw.pop("sample_rate", 8000), options=EMILY, **kw)


# --- audio -----------------------------------------------------------------------------------


async def test_yields_each_chunk_exactly_as_sent(client: WavesSSEClient, waves: FakeWaves) -> None:
    assert await collect(speak(client)) == PIECES
    assert [len(p) for p in PIECES] == [321, 320, 7, 1]


async def test_request_is_the_websocket_request(client: WavesSSEClient, waves: FakeWaves) -> None:
    options = SpeechOptions("james", model="lightning_v3.1_pro", language="hi", speed=1.25)
    await collect(client.synthesize("Hi.", sample_rate=16000, options=options, request_id="r-1"))
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
        }
    ]
    headers = waves.headers[0]
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["accept"] == "text/event-stream"
    assert headers["content-type"] == "application/json"
    await collect(speak(client))
    assert waves.requests[1]["request_id"].startswith("tb_")


async def test_tolerates_any_framing_of_the_events(
    client: WavesSSEClient, waves: FakeWaves
) -> None:
    first, second, third, fourth = (audio_event(p) for p in PIECES)
    crlf = audio_event(b"\x01\x02\x03", end="\r\n")
    waves.answers.append(
        Answer(
            writes=[
                b": connected\n\n",
                first + second,  # two events in one write
                third[:5],  # an event split in the middle of its field name,
                third[5:40],  # ... of its JSON,
                third[40:-1],  # ... and between its two line ends
                third[-1:] + fourth[:-1],
                fourth[-1:] + b"id: 9\nretry: 50\n\n" + crlf[:-1],
                crlf[-1:] + DONE,
            ]
        )
    )
    assert await collect(speak(client)) == [*PIECES, b"\x01\x02\x03"]


async def test_events_after_done_are_not_audio(client: WavesSSEClient, waves: FakeWaves) -> None:
    waves.answers.append(Answer(writes=[audio_event(b"ok"), DONE, audio_event(b"late")]))
    assert await collect(speak(client)) == [b"ok"]


async def test_blank_text_sends_nothing(client: WavesSSEClient, waves: FakeWaves) -> None:
    assert await collect(speak(client, "  \n")) == []
    assert waves.requests == []


async def test_bad_request_id_is_refused_locally(client: WavesSSEClient) -> None:
    with pytest.raises(ValueError):
        await collect(speak(client, request_id="a b"))


async def test_a_closed_client_refuses(waves: FakeWaves) -> None:
    sse = WavesSSEClient(waves.url, KEY)
    await sse.aclose()
    with pytest.raises(WavesConnectionError, match=r"^this WavesSSEClient is closed$"):
        await collect(speak(sse))
    with pytest.raises(WavesConnectionError):
        await sse.prewarm()


# --- connections -----------------------------------------------------------------------------


async def test_prompts_reuse_one_connection(client: WavesSSEClient, waves: FakeWaves) -> None:
    for _ in range(3):
        assert await collect(speak(client)) == PIECES
    assert len(waves.requests) == 3
    assert waves.connections == 1


async def test_prewarm_opens_connections_that_prompts_then_use(
    client: WavesSSEClient, waves: FakeWaves
) -> None:
    await client.prewarm(2)
    assert (waves.voice_lists, waves.connections) == (2, 2)
    results = await asyncio.gather(collect(speak(client)), collect(speak(client)))
    assert list(results) == [PIECES, PIECES]
    assert waves.connections == 2  # no handshake for either prompt


async def test_prewarm_is_capped_by_the_keepalive_pool(waves: FakeWaves) -> None:
    async with WavesSSEClient(waves.url, KEY, max_keepalive=1) as sse:
        await sse.prewarm(3)
        await sse.prewarm(0)
    assert waves.voice_lists == 1


async def test_prewarm_says_a_refused_key(waves: FakeWaves) -> None:
    async with WavesSSEClient(waves.url, "sk_wrong_key_000000") as sse:
        with pytest.raises(WavesAuthError):
            await sse.prewarm(2)


async def test_prewarm_tolerates_a_server_without_the_voice_list(waves: FakeWaves) -> None:
    waves.voice_status = 404
    async with WavesSSEClient(waves.url, KEY) as sse:
        await sse.prewarm(2)
    assert waves.voice_lists == 2


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody takes it), never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_unreachable_server_is_a_connection_error(dead_port: int) -> None:
    port = dead_port
    async with WavesSSEClient(f"ws://127.0.0.1:{port}{PATH}", KEY) as sse:
        with pytest.raises(WavesConnectionError) as caught:
            await collect(speak(sse))
        assert str(caught.value) == f"cannot connect to http://127.0.0.1:{port}{PATH}: ConnectError"
        with pytest.raises(WavesConnectionError) as warm:
            await sse.prewarm(1)
        assert str(warm.value).startswith(f"cannot connect to http://127.0.0.1:{port}/")


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "kind", "message"),
    [
        (
            Answer(403, [b"Forbidden"]),
            WavesForbiddenError,
            "the Waves API key lacks access (HTTP 403)",
        ),
        (
            Answer(429, [b"{}"], {"retry-after": "7"}),
            WavesRateLimited,
            "Waves concurrency limit reached (HTTP 429)",
        ),
        (
            Answer(
                400,
                [
                    b'{"error":[{"code":"custom","path":["voice_id"],',
                    b'"message":"Invalid Voice ID"}]}',
                ],
                {"content-type": "application/json"},
            ),
            WavesServerError,
            "Waves rejected the request (HTTP 400): voice_id: Invalid Voice ID",
        ),
        (
            Answer(500, [b"upstream\n exploded"]),
            WavesServerError,
            "Waves answered HTTP 500: upstream exploded",
        ),
        (Answer(204, []), WavesServerError, "Waves answered HTTP 204"),
        (
            Answer(200, [b'{"message": "quota used up"}'], {"content-type": "application/json"}),
            WavesServerError,
            "Waves answered application/json instead of an event stream: quota used up",
        ),
    ],
)
async def test_http_refusals_are_typed(
    client: WavesSSEClient, waves: FakeWaves, answer: Answer, kind: type[TTSError], message: str
) -> None:
    waves.answers.append(answer)
    with pytest.raises(TTSError) as caught:
        await collect(speak(client))
    assert type(caught.value) is kind
    assert str(caught.value) == message
    if isinstance(caught.value, WavesRateLimited):
        assert caught.value.retry_after == 7.0
    assert await collect(speak(client)) == PIECES  # the client goes on


async def test_wrong_key_is_an_auth_error(waves: FakeWaves) -> None:
    async with WavesSSEClient(waves.url, "sk_wrong_key_000000") as sse:
        with pytest.raises(WavesAuthError) as caught:
            await collect(speak(sse))
    assert str(caught.value) == "Waves refused the API key (HTTP 401): check WAVES_API_KEY"


async def test_a_huge_error_body_is_not_read_whole(
    client: WavesSSEClient, waves: FakeWaves
) -> None:
    waves.answers.append(Answer(502, [b"x" * 65536, HOLD]))  # then nothing, and never an end
    started = time.monotonic()
    with pytest.raises(WavesServerError) as caught:
        await collect(speak(client))
    assert str(caught.value) == "Waves answered HTTP 502: " + "x" * 297 + "..."
    assert time.monotonic() - started < 2.5  # not held by the endless body
    await asyncio.wait_for(waves.left.wait(), 3)


# --- broken streams --------------------------------------------------------------------------


async def test_stream_ending_before_done_is_truncated(
    client: WavesSSEClient, waves: FakeWaves
) -> None:
    waves.answers.append(Answer(writes=[audio_event(b"abc"), audio_event(b"de")]))
    got: list[bytes] = []
    with pytest.raises(WavesTruncated) as caught:
        async for chunk in speak(client):
            got.append(chunk)
    assert got == [b"abc", b"de"]
    assert str(caught.value) == "Waves ended the stream before done"


async def test_stream_ending_mid_event_is_truncated(
    client: WavesSSEClient, waves: FakeWaves
) -> None:
    waves.answers.append(Answer(writes=[audio_event(b"abc"), audio_event(b"de")[:30]]))
    got: list[bytes] = []
    with pytest.raises(WavesTruncated) as caught:
        async for chunk in speak(client):
            got.append(chunk)
    assert got == [b"abc"]
    assert str(caught.value) == "Waves ended the stream in the middle of an event"


async def test_done_without_the_last_blank_line_completes(
    client: WavesSSEClient, waves: FakeWaves
) -> None:
    waves.answers.append(Answer(writes=[audio_event(b"abc"), b'data: {"done": true}']))
    assert await collect(speak(client)) == [b"abc"]


@pytest.mark.parametrize(
    ("write", "kind", "message"),
    [
        (
            b"data: {not json\n\n",
            WavesServerError,
            "Waves sent an SSE event that is not valid JSON",
        ),
        (
            b'data: {"audio": "###", "done": false}\n\n',
            WavesServerError,
            "Waves sent an SSE event whose audio is not valid base64",
        ),
        (
            b'data: {"status": "500", "error": "boom"}\n\n',
            WavesServerError,
            "Waves: boom (code 500)",
        ),
        (
            b'data: {"status": "error", "message": "concurrency limit reached"}\n\n',
            WavesRateLimited,
            "Waves: concurrency limit reached",
        ),
    ],
)
async def test_bad_or_error_events_fail_after_the_audio_before_them(
    client: WavesSSEClient, waves: FakeWaves, write: bytes, kind: type[TTSError], message: str
) -> None:
    # The bad event shares a write with audio before it and after it.
    waves.answers.append(
        Answer(writes=[audio_event(b"one"), audio_event(b"two") + write + audio_event(b"3"), DONE])
    )
    got: list[bytes] = []
    with pytest.raises(TTSError) as caught:
        async for chunk in speak(client):
            got.append(chunk)
    assert got == [b"one", b"two"]
    assert type(caught.value) is kind
    assert str(caught.value) == message


async def test_slow_first_chunk_times_out(waves: FakeWaves) -> None:
    # Pings (comments) are no audio: they do not hold the clock back.
    waves.answers.append(Answer(writes=[b": ping\n\n", HOLD]))
    async with WavesSSEClient(waves.url, KEY, first_chunk_timeout=0.2) as sse:
        started = time.monotonic()
        with pytest.raises(WavesTimeout) as caught:
            await collect(speak(sse))
        assert time.monotonic() - started < 0.9
    assert str(caught.value) == "no audio from Waves within 0.2 s"
    await asyncio.wait_for(waves.left.wait(), 3)  # the response was closed


async def test_no_answer_at_all_times_out(waves: FakeWaves) -> None:
    waves.answers.append(Answer(hold_first=True))
    async with WavesSSEClient(waves.url, KEY, first_chunk_timeout=0.2) as sse:
        started = time.monotonic()
        with pytest.raises(WavesTimeout) as caught:
            await collect(speak(sse))
        assert time.monotonic() - started < 0.9  # counted from the request, not from connecting
    assert str(caught.value) == "no audio from Waves within 0.2 s"
    await asyncio.wait_for(waves.left.wait(), 3)


async def test_stalled_stream_times_out(waves: FakeWaves) -> None:
    waves.answers.append(Answer(writes=[audio_event(b"ab"), b": ping\n\n", HOLD]))
    heard = 0.0
    async with WavesSSEClient(waves.url, KEY, stall_timeout=0.2) as sse:
        got: list[bytes] = []
        with pytest.raises(WavesTimeout) as caught:
            async for chunk in speak(sse):
                got.append(chunk)
                heard = time.monotonic()
        assert time.monotonic() - heard < 0.9  # the stall clock, not the first chunk's (5 s)
    assert got == [b"ab"]
    assert str(caught.value) == "Waves stopped sending audio for 0.2 s"


async def test_slow_consumer_is_not_a_stall(waves: FakeWaves) -> None:
    async with WavesSSEClient(waves.url, KEY, stall_timeout=0.1) as sse:
        got = []
        async for chunk in speak(sse):
            got.append(chunk)
            await asyncio.sleep(0.15)  # the consumer's own time between chunks
    assert got == PIECES


async def test_body_kept_open_after_done_still_completes(
    client: WavesSSEClient, waves: FakeWaves
) -> None:
    waves.answers.append(Answer(writes=[audio_event(b"ab"), DONE, HOLD]))
    assert await collect(speak(client)) == [b"ab"]
    await asyncio.wait_for(waves.left.wait(), 3)  # that connection was given up ...
    assert await collect(speak(client)) == PIECES
    assert waves.connections == 2  # ... and the next prompt opened another


# --- interrupting ----------------------------------------------------------------------------


async def test_aclose_mid_stream_closes_that_response(
    client: WavesSSEClient, waves: FakeWaves
) -> None:
    waves.answers.append(Answer(writes=[audio_event(b"first"), HOLD]))
    async with aclosing(speak(client)) as audio:
        async for chunk in audio:
            assert chunk == b"first"
            break
    await asyncio.wait_for(waves.left.wait(), 3)
    assert await collect(speak(client)) == PIECES
    assert waves.connections == 2  # the interrupted connection was not reused


async def test_cancelling_the_consumer_closes_the_response(
    client: WavesSSEClient, waves: FakeWaves
) -> None:
    waves.answers.append(Answer(writes=[audio_event(b"first"), HOLD]))
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in speak(client):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(waves.left.wait(), 3)


# --- a raw socket server, for connections that break ----------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A TCP server speaking HTTP by hand; the handler gets each connection's 1-based index."""
    counter = itertools.count(1)
    tasks: set[asyncio.Task[None]] = set()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer, next(counter))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}{PATH}"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return await reader.readexactly(length)


def sse_response(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


async def test_connection_cut_mid_stream_is_truncated() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        event = audio_event(b"abc")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
        writer.write(b"transfer-encoding: chunked\r\n\r\n")
        writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
        writer.write(b"40\r\ndata: {")  # the next chunk, cut short
        await writer.drain()

    async with raw_server(handler) as url, WavesSSEClient(url, KEY) as sse:
        got: list[bytes] = []
        with pytest.raises(WavesTruncated) as caught:
            async for chunk in speak(sse):
                got.append(chunk)
    assert got == [b"abc"]
    assert str(caught.value) == "Waves closed the connection before the request completed"


async def test_a_dead_pooled_connection_is_replaced_once() -> None:
    seen: list[int] = []

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while True:
            await read_request(reader)
            seen.append(index)
            if index == 1 and seen.count(1) == 2:
                return  # the pooled connection dies with this request unanswered
            writer.write(sse_response(audio_event(f"c{index}".encode()) + DONE))
            await writer.drain()

    async with raw_server(handler) as url, WavesSSEClient(url, KEY) as sse:
        assert await collect(speak(sse)) == [b"c1"]
        assert await collect(speak(sse)) == [b"c2"]
    assert seen == [1, 1, 2]


async def test_a_fresh_connection_closed_without_answer_is_not_retried() -> None:
    seen: list[int] = []

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await read_request(reader)
        seen.append(index)

    async with raw_server(handler) as url, WavesSSEClient(url, KEY) as sse:
        with pytest.raises(WavesConnectionError) as caught:
            await collect(speak(sse))
    assert str(caught.value).endswith(f"{PATH}: RemoteProtocolError")
    assert str(caught.value).startswith("no answer from http://127.0.0.1:")
    assert seen == [1]


# --- the key and the log ---------------------------------------------------------------------


async def test_key_never_in_errors_or_logs(
    waves: FakeWaves, caplog: pytest.LogCaptureFixture, dead_port: int
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = KEY.encode()
    waves.answers += [
        Answer(400, [b'{"error":[{"path":["voice_id"],"message":"bad ' + echo + b'"}]}']),
        Answer(500, [b"Authorization: Bearer " + echo]),
        Answer(403, [echo]),
        Answer(429, [echo], {"retry-after": "1"}),
        Answer(writes=[b'data: {"status": "500", "error": "key ' + echo + b' is bad"}\n\n']),
        Answer(writes=[b'data: {"audio": "' + echo + b'"}\n\n']),
        Answer(writes=[audio_event(b"x")]),
        Answer(writes=[b": " + echo + b"\n\n", HOLD]),
    ]
    errors: list[BaseException] = []
    async with WavesSSEClient(waves.url, KEY, first_chunk_timeout=0.3) as sse:
        for _ in range(8):
            try:
                await collect(speak(sse))
            except TTSError as exc:
                errors.append(exc)
        assert await collect(speak(sse)) == PIECES
        await sse.prewarm(1)
    async with WavesSSEClient(waves.url, KEY + "x") as wrong:
        with pytest.raises(WavesAuthError) as refused:
            await collect(speak(wrong))
        errors.append(refused.value)
    async with WavesSSEClient(f"ws://127.0.0.1:{dead_port}{PATH}", KEY) as unreachable:
        with pytest.raises(WavesConnectionError) as unreached:
            await collect(speak(unreachable))
        errors.append(unreached.value)
    assert [type(e).__name__ for e in errors] == [
        "WavesServerError",
        "WavesServerError",
        "WavesForbiddenError",
        "WavesRateLimited",
        "WavesServerError",
        "WavesServerError",
        "WavesTruncated",
        "WavesTimeout",
        "WavesAuthError",
        "WavesConnectionError",
    ]
    assert str(errors[0]) == "Waves rejected the request (HTTP 400): voice_id: bad [redacted]"
    for error in errors:
        chain: BaseException | None = error
        while chain is not None:
            assert KEY not in str(chain) and KEY not in repr(chain)
            chain = chain.__cause__ or chain.__context__
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("HTTP Request: POST") for m in messages)  # httpx logged too
    assert any(r.name.startswith("httpcore") for r in caplog.records)
    for message in messages:
        assert KEY not in message


async def test_logs_each_request(client: WavesSSEClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="telebridge.tts.sse")
    await collect(speak(client, request_id="r-1"))
    await collect(speak(client, request_id="r-2"))
    lines = [r.getMessage() for r in caplog.records if r.name == "telebridge.tts.sse"]
    assert len(lines) == 2
    assert lines[0].startswith("sse r-1: complete on a new connection, 4 chunks, 649 bytes, ")
    assert lines[1].startswith("sse r-2: complete on a pooled connection, 4 chunks, 649 bytes, ")
    assert lines[1].endswith(" ms")
