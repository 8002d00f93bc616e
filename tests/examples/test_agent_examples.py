"""The example agents in examples/ against a stand-in for the bridge: a `websockets` client that
signs its handshake as the bridge does, sends the bridge's messages and checks the answers. The
language-model agent talks to a fake OpenAI-compatible endpoint on a loopback port, which streams
its tokens as SSE chunks and can hold them back, hang or fail.

The examples are scripts, not a package, so they are loaded from their files.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import importlib.util
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK, InvalidStatus

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRET = "test-agent-secret-0123456789"
TIMEOUT = 5  # seconds: a bound on every wait, never reached when things work


def _load(name: str) -> ModuleType:
    """examples/<name>.py as the module `name` (registered, so the examples import each other)."""
    path = EXAMPLES / f"{name}.py"
    loaded = sys.modules.get(name)
    if loaded is not None and Path(loaded.__file__ or "") == path:
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


common = _load("agent_common")
echo = _load("agent_echo")
llm = _load("agent_llm")


def signature(url: str, t: int | None = None, secret: str = SECRET) -> str:
    """Written out here rather than taken from the examples, so that a mistake is not shared."""
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.{url}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


@contextlib.asynccontextmanager
async def agent_server(
    handler: Any, secret: str | None = SECRET, public_url: str | None = None
) -> AsyncIterator[str]:
    """The agent listening on a free loopback port; yields its base URL."""
    server = await common.start_server(handler, "127.0.0.1", 0, secret, public_url)
    port = next(iter(server.sockets)).getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


class Bridge:
    """The bridge's side of one agent connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, kind: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"type": kind, **fields}))

    async def start(self) -> None:
        await self.send(
            "start", call_id="call-1", carrier="plivo", direction="inbound",
            caller="+14155550100", callee="+14155550199", flow="agent", step="assistant",
            vars={}, audio={"encoding": "pcm16", "rate": 8000},
        )  # fmt: skip

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            raw = await self.ws.recv()
        assert isinstance(raw, str)
        data = json.loads(raw)
        assert isinstance(data, dict)
        return data

    async def utterance(self) -> tuple[str, list[str]]:
        """The next utterance: its id and its pieces, checking they form one utterance."""
        first = await self.recv()
        assert first["type"] == "text", first
        uid, pieces = first["id"], [first["text"]]
        message = first
        while not message.get("last"):
            message = await self.recv()
            assert message["type"] == "text", message
            assert message["id"] == uid
            pieces.append(message["text"])
        return uid, pieces

    async def closed(self) -> None:
        """The agent closes the socket normally, with nothing more said."""
        with pytest.raises(ConnectionClosedOK):
            await self.recv()


@contextlib.asynccontextmanager
async def bridge(base: str, path: str = "/call?id=1") -> AsyncIterator[Bridge]:
    url = base + path
    async with connect(url, additional_headers={"X-Telebridge-Signature": signature(url)}) as ws:
        yield Bridge(ws)


# -- the handshake signature -----------------------------------------------------------------


def test_verify_signature_accepts_the_bridges_header() -> None:
    url = "ws://127.0.0.1:8765/call?x=1"
    now = 1_700_000_000
    assert common.verify_signature(signature(url, now), url, SECRET, now)
    assert echo.verify_signature is common.verify_signature  # the echo agent's, shared
    assert common.sign(SECRET, url, now) == signature(url, now)
    # Clock drift up to five minutes either way.
    assert common.verify_signature(signature(url, now - 300), url, SECRET, now)
    assert common.verify_signature(signature(url, now + 300), url, SECRET, now)
    assert common.verify_signature(signature(url, now).replace(",", ", "), url, SECRET, now)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "t=1700000000",
        "v1=00",
        "t=abc,v1=00",
        "t=1700000000,v1=",
        "t=1700000000,v1=zz",
        "t=-1700000000,v1=00",
        "t=1699999699," + signature("ws://127.0.0.1:8765/call?x=1", 1699999699).split(",")[1],
        signature("ws://127.0.0.1:8765/call?x=2", 1_700_000_000),
        signature("ws://127.0.0.1:8765/call?x=1", 1_700_000_000, secret="another secret"),
        signature("ws://127.0.0.1:8765/call?x=1", 1_700_000_301),
    ],
)
def test_verify_signature_refuses(header: str | None) -> None:
    assert not common.verify_signature(header, "ws://127.0.0.1:8765/call?x=1", SECRET,
                                       1_700_000_000)  # fmt: skip


async def test_a_handshake_without_a_valid_signature_is_refused_with_403() -> None:
    async with agent_server(echo.handle) as base:
        url = base + "/call?id=1"
        for headers in (
            {},
            {"X-Telebridge-Signature": signature(url, secret="wrong")},
            {"X-Telebridge-Signature": signature(url, int(time.time()) - 301)},
            {"X-Telebridge-Signature": signature(base + "/call?id=2")},  # another query
        ):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 403
        async with bridge(base) as b:  # and a good one gets through
            await b.start()
            assert (await b.utterance())[0] == "greet"


async def test_the_signed_url_is_the_public_one_when_set() -> None:
    public = "wss://agent.example.com"
    async with agent_server(echo.handle, public_url=public + "/") as base:
        url = base + "/call?id=7"
        header = {"X-Telebridge-Signature": signature(public + "/call?id=7")}
        async with connect(url, additional_headers=header) as ws:
            b = Bridge(ws)
            await b.start()
            assert (await b.utterance())[0] == "greet"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers={"X-Telebridge-Signature": signature(url)}):
                pass
        assert refused.value.response.status_code == 403


async def test_without_a_secret_every_connection_is_accepted() -> None:
    async with agent_server(echo.handle, secret=None) as base, connect(base + "/call") as ws:
        b = Bridge(ws)
        await b.start()
        assert (await b.utterance())[0] == "greet"


# -- the echo agent --------------------------------------------------------------------------


async def test_echo_greets_in_pieces_and_says_keys_back() -> None:
    async with agent_server(echo.handle) as base, bridge(base) as b:
        await b.send("dtmf", digit="9")  # before start: ignored
        await b.start()
        uid, pieces = await b.utterance()
        assert uid == "greet"
        assert len(pieces) > 2
        assert "".join(pieces) == echo.GREETING
        await b.send("played", id="greet")
        await b.send("dtmf", digit="5")
        assert await b.utterance() == ("key-1", ["You pressed 5."])
        await b.send("dtmf", digit="0")
        uid, pieces = await b.utterance()
        assert (uid, "".join(pieces)) == ("key-2", "You pressed 0.")
        assert await b.recv() == {"type": "dtmf", "digits": "0"}
        await b.send("dtmf", digit="*")
        assert await b.recv() == {"type": "next", "vars": {"echoed": "50"}}
        await b.send("dtmf", digit="7")  # after leaving the step: nothing more is said
        await b.send("end", reason="agent-next")
        await b.closed()


async def test_echo_hangs_up_on_hash_after_its_goodbye() -> None:
    async with agent_server(echo.handle) as base, bridge(base) as b:
        await b.start()
        await b.utterance()
        await b.send("dtmf", digit="#")
        uid, pieces = await b.utterance()
        assert (uid, "".join(pieces)) == ("key-1", "You pressed hash. Goodbye!")
        assert await b.recv() == {"type": "hangup", "reason": "caller pressed hash"}
        await b.send("end", reason="hangup")
        await b.closed()


async def test_echo_apologises_only_for_an_early_interruption() -> None:
    async with agent_server(echo.handle) as base, bridge(base) as b:
        await b.start()
        await b.utterance()
        await b.send("interrupted", id="greet", heard_ms=900)  # most of it heard: quiet
        await b.send("dtmf", digit="1")
        assert (await b.utterance())[0] == "key-1"
        await b.send("interrupted", id="key-1", heard_ms=120)
        uid, pieces = await b.utterance()
        assert (uid, "".join(pieces)) == ("sorry-1", "Sorry, go ahead.")
        await b.send("interrupted", id="sorry-1", heard_ms=50)  # no apology for the apology
        await b.send("dtmf", digit="2")
        assert (await b.utterance())[0] == "key-2"


async def test_echo_survives_bad_messages_and_counts_audio(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agent_echo")
    async with agent_server(echo.handle) as base, bridge(base) as b:
        await b.start()
        await b.utterance()
        for bad in ("not json", "[1, 2]", '{"no": "type"}', '{"type": 5}'):
            await b.ws.send(bad)
        await b.send("dtmf")
        await b.send("dtmf", digit="55")
        await b.send("interrupted", id="greet", heard_ms="soon")
        await b.send("interrupted", id="greet", heard_ms=None)
        await b.send("mystery", value=1)
        await b.send("error", message="text: 'id' must match ...")
        await b.send("start")  # a second start is ignored
        for _ in range(3):
            await b.ws.send(bytes(320))
        await b.send("dtmf", digit="7")
        assert await b.utterance() == ("key-1", ["You pressed 7."])
        await b.send("end", reason="caller-hangup")
        await b.closed()
    assert any("end: caller-hangup, 3 audio frames" in r.getMessage() for r in caplog.records)


def test_pieces_join_back_to_the_text() -> None:
    for text in ("", "One", "One two three", "One two three four.", "  spaced  out  "):
        assert "".join(echo.pieces(text)) == text


# -- the language-model agent ----------------------------------------------------------------


@dataclass
class Reply:
    """How the fake endpoint answers one request."""

    tokens: list[str] = field(default_factory=list)
    status: int = 200
    hold_last: asyncio.Event | None = None  # the last token waits for this
    hang: bool = False  # after the tokens, keep the stream open until the client leaves


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeChat:
    """An OpenAI-compatible `/v1/chat/completions` on a loopback port: raw HTTP/1.1, the
    stream as chunked SSE."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[Seen] = []
        self.left = asyncio.Event()  # a client went away in the middle of a hanging stream
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def __aenter__(self) -> FakeChat:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        request_line, *lines = head.split("\r\n")
        headers: dict[str, str] = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))))
        self.requests.append(Seen(request_line.split(" ")[1], headers, body))
        reply = self.replies.pop(0)
        if reply.status != 200:
            error = json.dumps({"error": {"message": "the model is overloaded"}}).encode()
            writer.write(
                f"HTTP/1.1 {reply.status} Oops\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(error)}\r\nConnection: close\r\n\r\n".encode()
                + error
            )
            await writer.drain()
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        self._chunk(writer, {"choices": [{"delta": {"role": "assistant"}}]})
        for i, token in enumerate(reply.tokens):
            if i == len(reply.tokens) - 1 and reply.hold_last is not None:
                await reply.hold_last.wait()
            self._chunk(writer, {"choices": [{"index": 0, "delta": {"content": token}}]})
            await writer.drain()
            await asyncio.sleep(0.005)  # tokens come one by one, as from a model
        if reply.hang:
            await reader.read()  # until the client closes the connection
            self.left.set()
            return
        self._chunk(writer, {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        writer.write(self._frame(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()

    @staticmethod
    def _frame(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    def _chunk(self, writer: asyncio.StreamWriter, chunk: dict[str, Any]) -> None:
        writer.write(self._frame(f"data: {json.dumps(chunk)}\n\n".encode()))


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake endpoint is on loopback; a proxy from the environment must not get in between."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def config(base_url: str, **overrides: Any) -> Any:
    fields = {"base_url": base_url, "api_key": "sk-test", "model": "test-model",
              "system_prompt": "Be brief.", "timeout": 5.0}  # fmt: skip
    return llm.LlmConfig(**{**fields, **overrides})


async def test_llm_streams_each_token_as_it_arrives() -> None:
    hold = asyncio.Event()
    tokens = ["Hello", " there", ",", " caller", "!"]
    async with (
        FakeChat(Reply(tokens, hold_last=hold)) as chat,
        agent_server(llm.make_handler(config(chat.base_url))) as base,
        bridge(base) as b,
    ):
        await b.start()
        first = await b.recv()
        # The last token is still held back by the endpoint: this piece did not wait for it.
        assert first == {"type": "text", "text": "Hello", "id": "r1"}
        hold.set()
        rest = [await b.recv() for _ in tokens[1:]]
        assert [m["text"] for m in rest] == tokens[1:]
        assert all(m["id"] == "r1" and "last" not in m for m in rest)
        assert await b.recv() == {"type": "text", "text": "", "id": "r1", "last": True}

    (request,) = chat.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body["model"] == "test-model"
    assert request.body["stream"] is True
    assert request.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": llm.GREETING_REQUEST},
    ]


async def test_llm_keys_make_a_turn_and_history_is_trimmed_to_what_was_heard() -> None:
    greeting = "Welcome to the demo line. Press some keys and then the hash key."
    words = [w if i == 0 else " " + w for i, w in enumerate(greeting.split(" "))]
    async with (
        FakeChat(Reply(words), Reply(["You", " typed", " twelve."]),
                 Reply(["Ok."])) as chat,
        agent_server(llm.make_handler(config(chat.base_url))) as base,
        bridge(base) as b,
    ):  # fmt: skip
        await b.start()
        assert await b.utterance() == ("r1", [*words, ""])
        await b.send("interrupted", id="r1", heard_ms=1000)  # about 15 characters heard
        for key in "12#":
            await b.send("dtmf", digit=key)
        uid, pieces = await b.utterance()
        assert (uid, "".join(pieces)) == ("r2", "You typed twelve.")
        await b.send("played", id="r2")
        await b.send("dtmf", digit="#")
        assert (await b.utterance())[0] == "r3"  # nothing was playing: no clear
        await b.send("played", id="r3")
        await b.send("dtmf", digit="*")  # leave the step
        assert await b.recv() == {"type": "next"}
        await b.send("dtmf", digit="#")  # too late: no new turn
        await b.send("end", reason="agent-next")
        await b.closed()

    second, third = chat.requests[1].body["messages"], chat.requests[2].body["messages"]
    assert second[2:] == [
        {"role": "assistant", "content": "Welcome to the…"},
        {"role": "user", "content": "The caller pressed: 12"},
    ]
    assert third[4:] == [
        {"role": "assistant", "content": "You typed twelve."},
        {"role": "user", "content": "The caller pressed the hash key without any digits."},
    ]


async def test_llm_a_new_turn_while_streaming_cancels_the_stream_and_clears() -> None:
    async with (
        FakeChat(Reply(["Hi", " there"], hang=True), Reply(["Sure", "."]), Reply(["Ok."])) as chat,
        agent_server(llm.make_handler(config(chat.base_url))) as base,
        bridge(base) as b,
    ):
        await b.start()
        assert [(await b.recv())["text"] for _ in range(2)] == ["Hi", " there"]
        await b.send("dtmf", digit="4")
        await b.send("dtmf", digit="#")
        # The open utterance is ended, then the bridge is told to stop speaking.
        assert await b.recv() == {"type": "text", "text": "", "id": "r1", "last": True}
        assert await b.recv() == {"type": "clear"}
        async with asyncio.timeout(TIMEOUT):
            await chat.left.wait()  # the HTTP stream was abandoned
        await b.send("interrupted", id="r1", heard_ms=0)
        assert await b.utterance() == ("r2", ["Sure", ".", ""])
        await b.send("played", id="r2")
        await b.send("dtmf", digit="#")
        assert (await b.utterance())[0] == "r3"

    second, third = chat.requests[1].body["messages"], chat.requests[2].body["messages"]
    assert second[2:] == [
        {"role": "assistant", "content": "Hi there…"},  # cut off while being written
        {"role": "user", "content": "The caller pressed: 4"},
    ]
    assert third[2] == {"role": "assistant", "content": "…"}  # and nothing of it was heard


@pytest.mark.parametrize("failure", ["status", "timeout", "refused"])
async def test_llm_an_endpoint_failure_is_an_apology(failure: str) -> None:
    replies = {"status": Reply(status=503), "timeout": Reply(hang=True)}
    async with FakeChat(*[replies[failure]] if failure in replies else []) as chat:
        url = chat.base_url
        if failure == "refused":
            await chat.__aexit__()  # nothing listens there any more
        handler = llm.make_handler(config(url, timeout=0.3))
        async with agent_server(handler) as base, bridge(base) as b:
            await b.start()
            uid, pieces = await b.utterance()
            assert (uid, "".join(pieces)) == ("sorry-1", llm.APOLOGY)
            await b.send("end", reason="caller-hangup")
            await b.closed()


async def test_llm_a_stream_cut_off_midway_ends_the_utterance_then_apologises() -> None:
    async with (
        FakeChat(Reply(["Half", " an"], hang=True)) as chat,
        agent_server(llm.make_handler(config(chat.base_url, timeout=0.3))) as base,
        bridge(base) as b,
    ):
        await b.start()
        assert await b.utterance() == ("r1", ["Half", " an", ""])
        uid, pieces = await b.utterance()
        assert (uid, "".join(pieces)) == ("sorry-1", llm.APOLOGY)


def test_trim_to_heard() -> None:
    text = "Welcome to the demo line. Press some keys."
    assert llm.trim_to_heard(text, 1000) == "Welcome to the…"  # 15 characters at 15 per second
    assert llm.trim_to_heard(text, 0) == "…"
    assert llm.trim_to_heard(text, 60_000) == text
    assert llm.trim_to_heard("Supercalifragilistic", 500) == "Superca…"  # one long word


def test_sse_lines() -> None:
    assert llm.sse_data("data: [DONE]") == "[DONE]"
    assert llm.sse_data(": keep-alive") is None
    assert llm.sse_data("") is None
    assert llm.delta_content('{"choices":[{"delta":{"content":"Hi"}}]}') == "Hi"
    assert llm.delta_content('{"choices":[{"delta":{"role":"assistant"}}]}') == ""
    assert llm.delta_content('{"choices":[],"usage":{"total_tokens":3}}') == ""
    with pytest.raises(llm.EndpointError):
        llm.delta_content('{"error":{"message":"bad key"}}')
    with pytest.raises(llm.EndpointError):
        llm.delta_content("not json")


def test_llm_config_from_the_environment() -> None:
    assert llm.LlmConfig.from_env({}) == llm.LlmConfig()
    assert llm.LlmConfig().base_url == "https://api.openai.com/v1"
    assert llm.LlmConfig().model == "gpt-4o-mini"
    env = {"OPENAI_BASE_URL": "http://localhost:11434/v1", "OPENAI_API_KEY": "k",
           "OPENAI_MODEL": "llama3", "AGENT_SYSTEM_PROMPT": "Be a pirate."}  # fmt: skip
    assert llm.LlmConfig.from_env(env) == llm.LlmConfig(
        "http://localhost:11434/v1", "k", "llama3", "Be a pirate."
    )
