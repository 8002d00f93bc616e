"""The Waves stand-in, spoken to with a raw WebSocket client: protocol, validation, faults."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from telebridge.tts import espeak
from telebridge.tts import standin as standin_module
from telebridge.tts.standin import VOICES, StandinServer, default_chunk_bytes, render

AUTH = {"Authorization": "Bearer sk_standin"}


@pytest.fixture
async def ws(standin: StandinServer) -> AsyncIterator[ClientConnection]:
    async with connect(standin.url, additional_headers=AUTH) as conn:
        yield conn


def request(text: object, **fields: Any) -> str:
    body: dict[str, Any] = {"voice_id": "emily", "text": text, "sample_rate": 8000}
    body.update(fields)
    return json.dumps(body)


async def frame(conn: ClientConnection, limit: float = 3.0) -> dict[str, Any]:
    async with asyncio.timeout(limit):
        body = json.loads(await conn.recv())
    assert isinstance(body, dict)
    return body


async def until_complete(conn: ClientConnection) -> tuple[list[dict[str, Any]], bytes]:
    frames = []
    while True:
        body = await frame(conn)
        frames.append(body)
        if body["status"] != "chunk":
            break
    audio = b"".join(base64.b64decode(f["data"]["audio"]) for f in frames[:-1])
    return frames, audio


async def test_chunks_then_complete(ws: ClientConnection, standin: StandinServer) -> None:
    await ws.send(request("Hello there.", request_id="mine-1"))
    frames, audio = await until_complete(ws)
    chunks, complete = frames[:-1], frames[-1]
    assert audio == render("Hello there.", sample_rate=8000)
    assert all(len(base64.b64decode(f["data"]["audio"])) % 2 == 1 for f in chunks[:-1])
    assert {f["external_request_id"] for f in chunks} == {"mine-1"}
    server_ids = {f["request_id"] for f in chunks}
    assert len(server_ids) == 1 and server_ids != {"mine-1"}
    assert complete["status"] == "complete"
    assert complete["request_id"] in server_ids
    assert complete["session_id"] == chunks[0]["session_id"]
    assert standin.requests[0]["request_id"] == "mine-1"
    # The socket stays open for the next request.
    await ws.send(request("Again."))
    _, again = await until_complete(ws)
    assert again == render("Again.", sample_rate=8000)
    assert standin.connections == 1


async def test_sample_rate_defaults_to_44100(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"voice_id": "emily", "text": "Hi."}))
    _, audio = await until_complete(ws)
    assert audio == render("Hi.", sample_rate=44100)


async def test_continue_and_flush_buffer_per_request(ws: ClientConnection) -> None:
    await ws.send(request("Good ", request_id="a", **{"continue": True}))
    await ws.send(request("Other words", request_id="b", **{"continue": True}))
    await ws.send(request("morning.", request_id="a", **{"continue": True}))
    await ws.send(request("", request_id="a", flush=True))
    frames, audio = await until_complete(ws)
    assert audio == render("Good morning.", sample_rate=8000)
    assert {f.get("external_request_id") for f in frames[:-1]} == {"a"}
    await ws.send(request(" here.", request_id="b"))  # no `continue`: speak now
    _, audio = await until_complete(ws)
    assert audio == render("Other words here.", sample_rate=8000)


async def test_empty_flush_yields_nothing(ws: ClientConnection) -> None:
    await ws.send(request("", request_id="empty", flush=True))
    await ws.send(request("   ", request_id="blank"))
    await ws.send(request("Next.", request_id="next"))
    first = await frame(ws)
    assert first["external_request_id"] == "next"


@pytest.mark.parametrize(
    ("fields", "wording"),
    [
        ({"voice_id": "nobody"}, "Invalid Voice ID"),
        ({"voice_id": None}, "voice_id is required"),
        ({"text": 5}, "text is required"),
        ({"sample_rate": 22050}, "sample_rate"),
        ({"sample_rate": True}, "sample_rate"),
        ({"speed": 2.5}, "speed"),
        ({"speed": 0.4}, "speed"),
        ({"model": "lightning_v2"}, "model"),
        ({"request_id": "has space"}, "request_id"),
        ({"flush": "yes"}, "flush"),
    ],
)
async def test_invalid_requests_get_an_error_frame(
    ws: ClientConnection, fields: dict[str, Any], wording: str
) -> None:
    body = {"text": "Hi.", **fields}
    await ws.send(request(**body))
    error = await frame(ws)
    assert error["status"] == "error"
    assert wording in error["error"]["message"]
    await ws.send(request("Still here."))  # the socket survives a bad request
    _, audio = await until_complete(ws)
    assert audio == render("Still here.", sample_rate=8000)


async def test_not_json_gets_an_error_frame(ws: ClientConnection) -> None:
    await ws.send("{oops")
    assert (await frame(ws))["status"] == "error"


async def test_upgrade_needs_the_path_and_the_key(standin: StandinServer) -> None:
    wrong_path = standin.url.replace("/waves/v1/tts/live", "/other")
    for url, headers, status in [
        (wrong_path, AUTH, 404),
        (standin.url, {}, 401),
        (standin.url, {"Authorization": "Bearer sk_other"}, 401),
        (standin.url, {"Authorization": "sk_standin"}, 401),
    ]:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(url, additional_headers=headers):
                pass
        assert caught.value.response.status_code == status
    assert standin.connections == 0


async def test_refusal_fault_with_retry_after(standin: StandinServer) -> None:
    standin.faults.refuse_status = 429
    standin.faults.retry_after = 3
    with pytest.raises(InvalidStatus) as caught:
        async with connect(standin.url, additional_headers=AUTH):
            pass
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "3"


async def test_idle_timeout_sends_flat_error_and_closes() -> None:
    async with (
        StandinServer(idle_timeout=0.2) as server,
        connect(server.url, additional_headers=AUTH) as conn,
    ):
        error = await frame(conn)
        assert error == {
            "status": "error",
            "message": "Connection timed out after 0.2 seconds of inactivity",
        }
        with pytest.raises(ConnectionClosed):
            await frame(conn)


async def test_timeout_query_parameter_overrides_idle_timeout(standin: StandinServer) -> None:
    async with connect(standin.url + "?timeout=0.1", additional_headers=AUTH) as conn:
        error = await frame(conn, limit=1.0)
        assert "0.1 seconds of inactivity" in error["message"]


async def test_close_after_complete(ws: ClientConnection, standin: StandinServer) -> None:
    standin.faults.close_after_complete = True
    await ws.send(request("Bye."))
    frames, _ = await until_complete(ws)
    assert frames[-1]["status"] == "complete"
    with pytest.raises(ConnectionClosed):
        await frame(ws)


async def test_drop_after_bytes_closes_without_complete(
    ws: ClientConnection, standin: StandinServer
) -> None:
    standin.faults.drop_after_bytes = 1001
    await ws.send(request("Hello there, how are you?"))
    audio = b""
    with pytest.raises(ConnectionClosed):
        while True:
            body = await frame(ws)
            assert body["status"] == "chunk"
            audio += base64.b64decode(body["data"]["audio"])
    assert audio == render("Hello there, how are you?", sample_rate=8000)[:1001]


async def test_error_fault_shapes(ws: ClientConnection, standin: StandinServer) -> None:
    standin.faults.error_message = "Injected"
    await ws.send(request("Hi.", request_id="e1"))
    nested = await frame(ws)
    assert nested["error"] == {"message": "Injected", "code": "standin_fault"}
    assert nested["external_request_id"] == "e1"
    standin.faults.flat_error = True
    await ws.send(request("Hi."))
    assert await frame(ws) == {"status": "error", "message": "Injected"}


async def test_chunk_size_and_delay_faults(ws: ClientConnection, standin: StandinServer) -> None:
    standin.faults.chunk_bytes = 100
    standin.faults.first_chunk_delay = 0.3
    loop = asyncio.get_running_loop()
    started = loop.time()
    await ws.send(request("Hi."))
    frames, audio = await until_complete(ws)
    assert loop.time() - started >= 0.3
    assert {len(base64.b64decode(f["data"]["audio"])) for f in frames[:-2]} == {100}
    assert audio == render("Hi.", sample_rate=8000)


async def test_synthesis_does_not_block_other_sockets(
    standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow_render(text: str, **kwargs: Any) -> bytes:
        if text == "slow":
            time.sleep(0.5)  # a blocking synthesizer: must run off the server's loop
        return render(text, **kwargs)

    monkeypatch.setattr(standin_module, "render", slow_render)
    order: list[str] = []

    async def speak(conn: ClientConnection, text: str) -> None:
        await conn.send(request(text))
        await until_complete(conn)
        order.append(text)

    async with (
        connect(standin.url, additional_headers=AUTH) as slow,
        connect(standin.url, additional_headers=AUTH) as quick,
    ):
        slow_task = asyncio.create_task(speak(slow, "slow"))
        await asyncio.sleep(0.1)
        await speak(quick, "Hi.")
        await slow_task
    assert order == ["Hi.", "slow"]


def test_default_chunk_is_about_150ms_and_odd() -> None:
    for rate in (8000, 16000, 24000, 44100):
        size = default_chunk_bytes(rate)
        assert size % 2 == 1
        assert abs(size / (rate * 2) - 0.15) < 0.001


def test_render_knows_only_the_listed_voices() -> None:
    for espeak_voice in VOICES.values():
        assert espeak.has_voice(espeak_voice)
    assert render("Hi.", sample_rate=8000, voice_id="james") != render("Hi.", sample_rate=8000)
    with pytest.raises(ValueError):
        render("Hi.", sample_rate=8000, voice_id="nobody")


async def test_module_entry_point_serves_until_interrupted() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telebridge.tts.standin",
        "--port",
        "0",
        "--api-key",
        "sk_cli",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            line = (await proc.stdout.readline()).decode()
        url = line.split()[3]
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/waves/v1/tts/live")
        headers = {"Authorization": "Bearer sk_cli"}
        async with connect(url, additional_headers=headers) as conn:
            await conn.send(request("Hi."))
            _, audio = await until_complete(conn)
        assert audio == render("Hi.", sample_rate=8000)
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
