"""Tests for telebridge.flows.fetch, the runner's I/O edge: the webhook POST and audio files."""

import asyncio
import json
import wave
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from telebridge.flows.fetch import KEEPALIVE_S, HttpFlowIO, webhook_client
from telebridge.flows.ports import FetchFailed, FlowRunError
from telebridge.simulator.serving import ServedApp
from tests.flows.fakes import Hook, unused_port

URL = "https://crm.example.com/ivr"


def mocked(transport: httpx.MockTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport)


@pytest.mark.parametrize(
    ("status", "body"), [(200, b'{"vars": {}}'), (503, b"busy"), (404, b""), (302, b"<html>")]
)
async def test_status_and_body_are_passed_through(status: int, body: bytes) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=body)

    async with mocked(httpx.MockTransport(answer)) as http:
        got = await HttpFlowIO(http).post_json(URL, {"step": "menu", "n": 1}, 1.0)
    assert got == (status, body)
    [request] = seen
    assert (request.method, str(request.url)) == ("POST", URL)
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"step": "menu", "n": 1}


async def test_an_httpx_timeout_is_no_answer_within_the_timeout() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with mocked(httpx.MockTransport(answer)) as http:
        with pytest.raises(FetchFailed, match=r"^no answer within 0\.3 s$"):
            await HttpFlowIO(http).post_json(URL, {}, 0.3)


async def test_the_whole_exchange_is_bounded_by_the_timeout() -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)  # httpx's own timeouts do not apply to a transport
        return httpx.Response(200)

    async with mocked(httpx.MockTransport(answer)) as http:
        started = asyncio.get_running_loop().time()
        with pytest.raises(FetchFailed, match=r"^no answer within 0\.05 s$"):
            await HttpFlowIO(http).post_json(URL, {}, 0.05)
    assert asyncio.get_running_loop().time() - started < 2


async def test_a_refused_connection_names_the_exception_type() -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        with pytest.raises(FetchFailed, match=r"^ConnectError$"):
            await HttpFlowIO(http).post_json(f"http://127.0.0.1:{unused_port()}/ivr", {}, 2.0)


async def test_another_transport_error_names_its_type() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("broken", request=request)

    async with mocked(httpx.MockTransport(answer)) as http:
        with pytest.raises(FetchFailed, match=r"^RemoteProtocolError$"):
            await HttpFlowIO(http).post_json(URL, {}, 1.0)


async def test_without_a_client_it_opens_its_own_and_aclose_closes_it(hook: Hook) -> None:
    hook.answers["/ivr"] = (200, b"{}")
    io = HttpFlowIO()
    assert await io.post_json(hook.url + "/ivr", {"a": 1}, 2.0) == (200, b"{}")
    own = io._own
    assert own is not None and not own.is_closed
    assert await io.post_json(hook.url + "/ivr", {"a": 2}, 2.0) == (200, b"{}")
    assert io._own is own  # one client for the call, not one per request
    await io.aclose()
    assert own.is_closed
    await io.aclose()  # again: nothing to do
    assert [body for *_, body in hook.requests] == [{"a": 1}, {"a": 2}]


async def test_aclose_leaves_a_given_client_open() -> None:
    async with mocked(httpx.MockTransport(lambda request: httpx.Response(204))) as http:
        io = HttpFlowIO(http)
        assert await io.post_json(URL, {}, 1.0) == (204, b"")
        await io.aclose()
        assert not http.is_closed
        assert await io.post_json(URL, {}, 1.0) == (204, b"")


async def test_load_audio_reads_16_bit_mono(tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "a.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\x01\x02" * 80)
    assert await HttpFlowIO().load_audio(tmp_path / "a.wav") == (b"\x01\x02" * 80, 8000)


async def test_load_audio_of_the_wrong_format_is_a_flow_run_error(tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "a.wav"), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\x00" * 320)
    with pytest.raises(FlowRunError, match=r"a\.wav: not 16-bit mono PCM WAV$"):
        await HttpFlowIO().load_audio(tmp_path / "a.wav")


@pytest.mark.parametrize("content", [None, b"RIFF"])
async def test_load_audio_of_a_missing_or_broken_file_is_a_flow_run_error(
    tmp_path: Path, content: bytes | None
) -> None:
    if content is not None:
        (tmp_path / "a.wav").write_bytes(content)
    with pytest.raises(FlowRunError, match=r"a\.wav: cannot read audio: "):
        await HttpFlowIO().load_audio(tmp_path / "a.wav")


async def test_the_webhook_client_gives_up_an_idle_connection_before_servers_close_it() -> None:
    # uvicorn (like Node's http server) closes a keep-alive connection idle 5 s; a request sent
    # on it just then fails with a ReadError. The client reuses a connection only while it is
    # younger than KEEPALIVE_S, well inside that.
    ports: list[int] = []

    async def answer(request: Request) -> JSONResponse:
        assert request.client is not None
        ports.append(request.client.port)
        return JSONResponse({})

    app = Starlette(routes=[Route("/ivr", answer, methods=["POST"])])
    assert KEEPALIVE_S <= 2.5
    async with ServedApp(app, lifespan="off") as served, webhook_client() as http:
        io = HttpFlowIO(http)
        for pause in (0.0, 0.2, KEEPALIVE_S + 0.3):
            await asyncio.sleep(pause)
            assert await io.post_json(served.url + "/ivr", {}, 2.0) == (200, b"{}")
    assert ports[0] == ports[1] != ports[2]  # reused after 0.2 s, not after KEEPALIVE_S
