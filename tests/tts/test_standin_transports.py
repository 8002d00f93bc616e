"""The stand-in's HTTP side, over real sockets: streaming (SSE) and sync answers byte for byte,
keep-alive, refusals in Waves' shapes, every fault, and the WebSocket beside it on the port."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from telebridge.tts.standin import StandinServer, render
from telebridge.tts.standin_http import sse_chunk_bytes

TEXT = "Thank you for calling."


def body(**fields: Any) -> dict[str, Any]:
    return {"voice_id": "emily", "text": TEXT, "sample_rate": 8000, **fields}


@pytest.fixture
async def http(standin: StandinServer) -> AsyncIterator[httpx.AsyncClient]:
    base = standin.url.replace("ws://", "http://").removesuffix("/waves/v1/tts/live")
    headers = {"Authorization": f"Bearer {standin.api_key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
        yield client


def events(raw: bytes) -> list[dict[str, Any]]:
    found = []
    for event in raw.split(b"\n\n"):
        for line in event.split(b"\n"):
            if line.startswith(b"data: "):
                found.append(json.loads(line[6:]))
    return found


async def sse(http: httpx.AsyncClient, **fields: Any) -> tuple[list[bytes], bool]:
    """The audio chunks of one streamed request, and whether it ended with `done`."""
    async with http.stream("POST", "/waves/v1/tts/live", json=body(**fields)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        raw = b""
        try:
            async for part in response.aiter_bytes():
                raw += part
        except httpx.RemoteProtocolError:
            pass  # the connection dropped mid-stream: what came so far
    found = events(raw)
    chunks = [base64.b64decode(e["audio"]) for e in found if "audio" in e]
    assert all(e == {"audio": e["audio"], "done": False, "status": "206"} for e in found[:-1])
    return chunks, bool(found) and found[-1] == {"status": "200", "done": True}


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_sse_streams_exactly_the_rendered_audio_in_small_odd_chunks(
    http: httpx.AsyncClient, rate: int
) -> None:
    chunks, done = await sse(http, sample_rate=rate)
    assert done
    assert b"".join(chunks) == render(TEXT, sample_rate=rate)
    assert {len(c) for c in chunks[:-1]} == {sse_chunk_bytes(rate)}
    assert sse_chunk_bytes(rate) % 2 == 1


async def test_sse_chunk_size_fault(http: httpx.AsyncClient, standin: StandinServer) -> None:
    standin.faults.chunk_bytes = 7
    chunks, done = await sse(http)
    assert done and b"".join(chunks) == render(TEXT, sample_rate=8000)
    assert len(chunks[0]) == 7


async def test_sync_answers_the_whole_pcm(http: httpx.AsyncClient) -> None:
    response = await http.post("/waves/v1/tts", json=body(sample_rate=16000))
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert response.content == render(TEXT, sample_rate=16000)
    mp3 = await http.post("/waves/v1/tts", json=body(output_format="mp3"))
    assert mp3.status_code == 400


async def test_one_connection_serves_request_after_request(
    http: httpx.AsyncClient, standin: StandinServer
) -> None:
    await sse(http)
    await http.post("/waves/v1/tts", json=body())
    await sse(http)
    assert standin.http_connections == 1
    assert [r["path"] for r in standin.http_requests] == [
        "/waves/v1/tts/live", "/waves/v1/tts", "/waves/v1/tts/live",
    ]  # fmt: skip
    assert standin.requests == []  # the WebSocket's own list


async def test_refusals_in_waves_shapes(http: httpx.AsyncClient) -> None:
    anonymous = await http.post("/waves/v1/tts/live", json=body(), headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert (await http.post("/elsewhere", json=body())).status_code == 404
    bad = await http.post("/waves/v1/tts/live", json=body(voice_id="nobody"))
    assert bad.status_code == 400
    assert bad.json() == {"error": [{"code": "custom", "path": ["voice_id"],
                                     "message": "Invalid Voice ID: nobody"}]}  # fmt: skip
    big = await http.post("/waves/v1/tts", content=b"x" * (1024 * 1024 + 10))
    assert big.status_code == 413
    voices = await http.get("/waves/v1/lightning-v3.1/get_voices")
    assert {v["voiceId"] for v in voices.json()["voices"]} >= {"emily", "james"}


async def test_http_status_fault_refuses_http_but_not_the_websocket(
    http: httpx.AsyncClient, standin: StandinServer
) -> None:
    standin.faults.http_status = 429
    standin.faults.retry_after = 3
    refused = await http.post("/waves/v1/tts/live", json=body())
    assert refused.status_code == 429 and refused.headers["retry-after"] == "3"
    standin.faults.http_status = 500
    assert (await http.post("/waves/v1/tts", json=body())).status_code == 500
    headers = {"Authorization": f"Bearer {standin.api_key}"}
    async with connect(standin.url, additional_headers=headers) as ws:
        await ws.send(json.dumps(body()))
        assert json.loads(await ws.recv())["status"] == "chunk"


async def test_injected_errors_are_400s(http: httpx.AsyncClient, standin: StandinServer) -> None:
    standin.faults.error_message = "synthesis failed"
    standin.faults.error_count = 1
    failed = await http.post("/waves/v1/tts/live", json=body())
    assert failed.status_code == 400
    assert failed.json()["error"][0]["message"] == "synthesis failed"
    chunks, done = await sse(http)  # healed after one
    assert done and b"".join(chunks) == render(TEXT, sample_rate=8000)


async def test_a_drop_truncates_the_stream_and_the_sync_body(
    http: httpx.AsyncClient, standin: StandinServer
) -> None:
    standin.faults.drop_after_bytes = 1000
    chunks, done = await sse(http)
    assert not done
    assert b"".join(chunks) == render(TEXT, sample_rate=8000)[:1000]
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post("/waves/v1/tts", json=body())


async def test_first_chunk_delay_holds_the_stream(
    http: httpx.AsyncClient, standin: StandinServer
) -> None:
    standin.faults.first_chunk_delay = 0.3
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with http.stream("POST", "/waves/v1/tts/live", json=body()) as response:
        async for _ in response.aiter_bytes():
            break
    assert loop.time() - started >= 0.3


async def test_a_websocket_is_served_while_a_stream_is_open(
    http: httpx.AsyncClient, standin: StandinServer
) -> None:
    standin.faults.chunk_interval = 0.05  # the stream takes about a second
    streaming = asyncio.create_task(sse(http))
    await asyncio.sleep(0.05)
    headers = {"Authorization": f"Bearer {standin.api_key}"}
    async with connect(standin.url, additional_headers=headers) as ws:
        await ws.send(json.dumps(body(text="Other.")))
        got = b""
        while True:
            frame = json.loads(await ws.recv())
            if frame["status"] == "complete":
                break
            got += base64.b64decode(frame["data"]["audio"])
    assert got == render("Other.", sample_rate=8000)
    chunks, done = await streaming
    assert done and b"".join(chunks) == render(TEXT, sample_rate=8000)


async def test_garbage_closes_that_connection_and_the_server_goes_on(
    http: httpx.AsyncClient, standin: StandinServer
) -> None:
    port = int(standin.url.split(":")[2].split("/")[0])
    for garbage in (b"\x00\x01\x02 nonsense\r\n\r\n", b"POST / HTTP/1.1\r\nbad header\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(garbage)
        await writer.drain()
        async with asyncio.timeout(5):
            await reader.read()  # the stand-in closes it (an answer, or nothing)
        writer.close()
    chunks, done = await sse(http)
    assert done and b"".join(chunks) == render(TEXT, sample_rate=8000)
