"""Plivo calls end to end: real server and WebSockets, the Waves stand-in, a fake Plivo API."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from telebridge.simulator.bridge import SIM_PLIVO_AUTH_TOKEN, LocalBridge
from telebridge.simulator.carrier import CallScript
from telebridge.simulator.plivo import PlivoCall, signed_headers
from telebridge.tokens import STREAM_TOKEN, StreamGrant, mint_stream_token
from tests.e2e.conftest import MakeBridge, mulaw_of


async def released(lb: LocalBridge) -> None:
    """The bridge lets go of every call shortly after the carrier's side has closed."""
    assert lb.bridge is not None
    for _ in range(100):
        if not lb.bridge.calls:
            return
        await asyncio.sleep(0.02)
    assert lb.bridge.calls == {}


GREETING = "Hello from the test line."
MENU = "Press 1 for hours, or 2 to hear this again. This prompt is long enough to be cut off."


async def test_caller_hears_exactly_the_greeting_then_rest_hangup(make_bridge: MakeBridge) -> None:
    lb = await make_bridge()
    result = await lb.run(lb.plivo_call())

    assert result.violations == []
    assert [p.mark for p in result.prompts] == ["utterance-1"]
    assert result.prompts[0].audio == mulaw_of(GREETING)
    assert result.heard == mulaw_of(GREETING)
    assert result.marks_played == ["utterance-1"]
    assert result.ended_by == "rest-hangup"
    # The checkpoint came back before the bridge asked Plivo to end the call.
    [delete] = [r for r in lb.plivo_api.requests if r.method == "DELETE"]
    assert delete.path.endswith(f"/Call/{result.call_id}/")
    played_at = next(e["at"] for e in result.timeline if e["event"] == "played")
    assert played_at <= delete.at
    await released(lb)


async def test_flow_query_parameter_picks_the_flow(make_bridge: MakeBridge) -> None:
    lb = await make_bridge()
    result = await lb.run(lb.plivo_call(CallScript(flow="vars")))
    assert result.heard == mulaw_of(f"Hello {CallScript().caller}, this is plivo.")


async def test_unknown_flow_is_refused_politely(make_bridge: MakeBridge) -> None:
    lb = await make_bridge()
    call = lb.plivo_call(CallScript(flow="nope"))
    result = await lb.run(call)
    assert result.answer_status == 200
    assert "<Hangup" in call.answer_xml and "<Stream" not in call.answer_xml


# --- webhooks: signatures -------------------------------------------------------------


def _answer_params(call_id: str = "c0ffee00-0000-4000-8000-000000000001") -> dict[str, str]:
    return {
        "CallUUID": call_id,
        "From": "14155550100",
        "To": "14155550199",
        "CallStatus": "ringing",
    }


async def test_unsigned_and_forged_answers_get_403(make_bridge: MakeBridge) -> None:
    lb = await make_bridge()
    url = f"{lb.url}/plivo/answer"
    params = _answer_params()
    async with httpx.AsyncClient() as http:
        unsigned = await http.post(url, data=params)
        forged = await http.post(
            url, data=params, headers=signed_headers("POST", url, params, "wrong")
        )
        other_params = await http.post(
            url,
            data={**params, "From": "19995550000"},
            headers=signed_headers("POST", url, params, SIM_PLIVO_AUTH_TOKEN),
        )
        good = await http.post(
            url, data=params, headers=signed_headers("POST", url, params, SIM_PLIVO_AUTH_TOKEN)
        )
    assert (unsigned.status_code, forged.status_code, other_params.status_code) == (403, 403, 403)
    assert "<Stream" not in unsigned.text
    assert good.status_code == 200 and "<Stream" in good.text


async def test_signature_is_checked_against_the_public_url_not_the_host_header(
    make_bridge: MakeBridge,
) -> None:
    lb = await make_bridge(telebridge_public_url="https://bridge.example.com")
    params = _answer_params()
    public = "https://bridge.example.com/plivo/answer"
    local = f"{lb.url}/plivo/answer"
    async with httpx.AsyncClient() as http:
        signed_public = await http.post(
            local, data=params, headers=signed_headers("POST", public, params, SIM_PLIVO_AUTH_TOKEN)
        )
        signed_local = await http.post(
            local, data=params, headers=signed_headers("POST", local, params, SIM_PLIVO_AUTH_TOKEN)
        )
    assert signed_public.status_code == 200
    assert "wss://bridge.example.com/plivo/stream?token=" in signed_public.text
    assert signed_local.status_code == 403


async def test_get_answer_and_completed_status(make_bridge: MakeBridge) -> None:
    lb = await make_bridge()
    async with httpx.AsyncClient() as http:
        query = "CallUUID=abc&From=1&To=2&CallStatus=ringing"
        url = f"{lb.url}/plivo/answer?{query}"
        got = await http.get(url, headers=signed_headers("GET", url, {}, SIM_PLIVO_AUTH_TOKEN))
        done_params = {**_answer_params(), "CallStatus": "completed"}
        post_url = f"{lb.url}/plivo/answer"
        done = await http.post(
            post_url,
            data=done_params,
            headers=signed_headers("POST", post_url, done_params, SIM_PLIVO_AUTH_TOKEN),
        )
    assert got.status_code == 200 and "<Stream" in got.text
    assert got.headers["content-type"].startswith("application/xml")
    assert done.status_code == 200 and "<Stream" not in done.text


@pytest.mark.parametrize("path", ["/plivo/hangup", "/plivo/stream-status"])
async def test_callbacks_need_a_signature(make_bridge: MakeBridge, path: str) -> None:
    lb = await make_bridge()
    params = {"CallUUID": "abc", "Duration": "3"}
    url = lb.url + path
    async with httpx.AsyncClient() as http:
        bad = await http.post(url, data=params)
        good = await http.post(
            url, data=params, headers=signed_headers("POST", url, params, SIM_PLIVO_AUTH_TOKEN)
        )
    assert (bad.status_code, good.status_code) == (403, 200)


async def test_oversized_webhook_is_refused(make_bridge: MakeBridge) -> None:
    lb = await make_bridge()
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{lb.url}/plivo/answer", content=b"x" * 200_000)
    assert response.status_code == 413


# --- the stream: tokens ---------------------------------------------------------------


def _start(call_id: str) -> str:
    return PlivoCall("http://unused", "t", call_id=call_id).start_message()


async def test_stream_without_token_is_refused_at_upgrade(make_bridge: MakeBridge) -> None:
    lb = await make_bridge()
    ws_url = lb.url.replace("http://", "ws://") + "/plivo/stream"
    for url in (ws_url, ws_url + "?token=garbage", ws_url + "?token=a.b"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        assert refused.value.response.status_code == 403


async def test_expired_token_is_refused(make_bridge: MakeBridge) -> None:
    lb = await make_bridge()
    assert lb.bridge is not None
    grant = StreamGrant(carrier="plivo", call_id="call-1", flow="greet")
    token = mint_stream_token(lb.bridge.keys.key(STREAM_TOKEN, "plivo"), grant, ttl=-1)
    with pytest.raises(InvalidStatus):
        async with connect(lb.url.replace("http", "ws") + f"/plivo/stream?token={token}"):
            pass


async def test_token_for_another_call_is_closed_with_1008_before_audio(
    make_bridge: MakeBridge,
) -> None:
    lb = await make_bridge()
    assert lb.bridge is not None
    grant = StreamGrant(carrier="plivo", call_id="call-1", flow="greet")
    url = lb.bridge.stream_url("/plivo/stream", grant)
    async with connect(url) as ws:
        await ws.send(_start("call-2"))
        with pytest.raises(ConnectionClosed) as closed:
            message = await asyncio.wait_for(ws.recv(), 5)
            pytest.fail(f"got a message: {message!r}")
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_a_vonage_token_does_not_open_a_plivo_stream(make_bridge: MakeBridge) -> None:
    lb = await make_bridge()
    assert lb.bridge is not None
    grant = StreamGrant(carrier="vonage", call_id="call-1", flow="greet")
    url = lb.bridge.stream_url("/plivo/stream", grant)
    with pytest.raises(InvalidStatus):
        async with connect(url):
            pass


async def test_bad_messages_on_a_stream_are_dropped_and_the_call_goes_on(
    make_bridge: MakeBridge,
) -> None:
    lb = await make_bridge()
    assert lb.bridge is not None
    grant = StreamGrant(carrier="plivo", call_id="call-9", flow="greet")
    async with connect(lb.bridge.stream_url("/plivo/stream", grant)) as ws:
        await ws.send(_start("call-9"))
        for junk in (
            "not json",
            "[]",
            '{"event":"dtmf","dtmf":{"digit":"x"}}',
            b"\x00\x01",
            '{"event":"media","media":{"payload":"***"}}',
            '{"event":"mystery"}',
        ):
            await ws.send(junk)
        audio = 0
        async for message in ws:
            data = json.loads(message)
            if data["event"] == "playAudio":
                audio += 1
            if data["event"] == "checkpoint":
                break
    assert audio > 0
