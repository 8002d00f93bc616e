"""Vonage without I/O (stream protocol, NCCOs, signed webhooks) and its webhook routes."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from telebridge.call.audio import FrameEncoder
from telebridge.call.events import CallerAudio, Cleared, Digit, Played, ProtocolError, Started
from telebridge.carriers import vonage, vonage_http
from telebridge.carriers.vonage import (
    VonageStream,
    answer_ncco,
    talk_ncco,
    transfer_ncco,
    verify_signed_webhook,
)
from telebridge.server import Bridge
from telebridge.settings import Settings
from telebridge.simulator.serving import ServedApp, bind_loopback
from telebridge.tokens import (
    CALL_VARS,
    STREAM_TOKEN,
    StreamGrant,
    mint_stream_token,
    read_stream_token,
    sign_call_variables,
)

SECRET = "vonage-signature-secret-of-40-characters"
FLOWS = Path(__file__).resolve().parents[2] / "config" / "flows"
FRAME = {8000: 320, 16000: 640, 24000: 960}


def connected(rate: int = 16000, **headers: Any) -> str:
    return json.dumps(
        {"event": "websocket:connected", "content-type": f"audio/l16;rate={rate}", **headers}
    )


def started_stream(rate: int = 16000) -> VonageStream:
    stream = VonageStream(rate)
    stream.receive(connected(rate, call_id="CALL-1"))
    return stream


# --- the stream -------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_connected_names_the_call_from_our_header(rate: int) -> None:
    stream = VonageStream(rate)
    events = stream.receive(connected(rate, call_id="CALL-1", extra="x", n=3))
    assert events == [Started(call_id="CALL-1", stream_id="")]
    assert stream.call_id == "CALL-1"
    assert (stream.carrier, stream.codec, stream.sample_rate) == ("vonage", "l16", rate)
    assert stream.max_frames_per_message == 1


def test_connected_falls_back_to_a_uuid_header() -> None:
    [event] = VonageStream().receive(connected(uuid="LEG-9"))
    assert isinstance(event, Started) and event.call_id == "LEG-9"


def test_connected_accepts_spacing_and_case_in_the_content_type() -> None:
    message = json.dumps(
        {"event": "websocket:connected", "content-type": "Audio/L16; rate=16000", "call_id": "C"}
    )
    assert VonageStream().receive(message)[0] == Started("C", "")


@pytest.mark.parametrize(
    "message",
    [
        connected(8000, call_id="C"),  # rate other than the configured one
        json.dumps({"event": "websocket:connected", "call_id": "C"}),  # no content type
        json.dumps({"event": "websocket:connected", "content-type": "audio/pcmu", "call_id": "C"}),
        connected(),  # no call id header
        connected(call_id=""),
        connected(call_id=7),
    ],
)
def test_bad_connected_messages_are_protocol_errors(message: str) -> None:
    stream = VonageStream(16000)
    with pytest.raises(ProtocolError):
        stream.receive(message)
    assert stream.call_id is None


def test_connected_must_come_first_and_once() -> None:
    stream = VonageStream()
    with pytest.raises(ProtocolError, match="before websocket:connected"):
        stream.receive(json.dumps({"event": "websocket:dtmf", "digit": "1"}))
    with pytest.raises(ProtocolError, match="audio before"):
        stream.receive(bytes(640))
    stream.receive(connected(call_id="C"))
    with pytest.raises(ProtocolError, match="second"):
        stream.receive(connected(call_id="C"))


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_binary_frames_are_caller_audio_and_wrong_sizes_are_dropped(rate: int) -> None:
    stream = started_stream(rate)
    frame = bytes(range(256)) * 4
    assert stream.receive(frame[: FRAME[rate]]) == [CallerAudio(frame[: FRAME[rate]])]
    for size in (0, 1, FRAME[rate] - 2, FRAME[rate] + 2, 2 * FRAME[rate]):
        with pytest.raises(ProtocolError, match="caller audio"):
            stream.receive(bytes(size))
    # A dropped message does not break the stream.
    assert stream.receive(bytes(FRAME[rate])) == [CallerAudio(bytes(FRAME[rate]))]


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_only_well_formed_caller_audio_after_connected_is_ignorable(rate: int) -> None:
    frame = bytes(FRAME[rate])
    assert not VonageStream(rate).ignorable(frame, text=False)  # before connected: reported
    stream = started_stream(rate)
    assert stream.ignorable(frame, text=False)
    for size in (0, 1, FRAME[rate] - 2, FRAME[rate] + 2):
        assert not stream.ignorable(bytes(size), text=False)  # receive reports the wrong size
    dtmf = json.dumps({"event": "websocket:dtmf", "digit": "5"}).encode()
    assert not stream.ignorable(dtmf, text=True)


@pytest.mark.parametrize(
    ("message", "digit"),
    [
        ({"event": "websocket:dtmf", "digit": "5", "duration": 260}, "5"),
        ({"event": "websocket:dtmf", "dtmf": "#"}, "#"),
        ({"event": "websocket:dtmf", "dtmf": {"digit": "*", "duration": 100}}, "*"),
        ({"event": "websocket:dtmf", "digit": "a"}, "A"),
        ({"event": "websocket:dtmf", "digit": 7}, "7"),
    ],
)
def test_every_dtmf_shape_is_a_digit(message: dict[str, Any], digit: str) -> None:
    assert started_stream().receive(json.dumps(message)) == [Digit(digit)]


@pytest.mark.parametrize(
    "message",
    [
        {"event": "websocket:dtmf"},
        {"event": "websocket:dtmf", "digit": "12"},
        {"event": "websocket:dtmf", "digit": "x"},
        {"event": "websocket:dtmf", "dtmf": {"duration": 5}},
        {"event": "websocket:dtmf", "digit": True},
    ],
)
def test_bad_dtmf_is_a_protocol_error(message: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match="dtmf"):
        started_stream().receive(json.dumps(message))


def test_cleared_notify_and_unknown_events(caplog: pytest.LogCaptureFixture) -> None:
    stream = started_stream()
    assert stream.receive('{"event":"websocket:cleared"}') == [Cleared()]
    notify = {"event": "websocket:notify", "payload": {"mark": "utterance-3"}}
    assert stream.receive(json.dumps(notify)) == [Played("utterance-3")]
    with caplog.at_level(logging.INFO, logger="telebridge.carriers.vonage"):
        assert stream.receive('{"event":"websocket:notify","payload":{"other":1}}') == []
        assert stream.receive('{"event":"websocket:something-new","x":1}') == []
    assert "websocket:something-new" in caplog.text
    assert "CALL-1" in caplog.text


@pytest.mark.parametrize("message", ["{not json", "[1, 2]", '"text"', "null"])
def test_text_that_is_not_a_json_object_is_a_protocol_error(message: str) -> None:
    with pytest.raises(ProtocolError):
        started_stream().receive(message)


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_play_sends_one_binary_message_per_frame(rate: int) -> None:
    stream = started_stream(rate)
    size = FRAME[rate]
    audio = bytes(range(256)) * (3 * size // 256 + 1)
    audio = audio[: 3 * size]
    messages = stream.play(audio)
    assert messages == [audio[:size], audio[size : 2 * size], audio[2 * size :]]
    assert stream.play(b"") == []
    for bad in (1, size - 1, size + 2, 3 * size - 2):
        with pytest.raises(ValueError, match="whole 20 ms frames"):
            stream.play(bytes(bad))


def test_mark_and_clear_messages() -> None:
    stream = started_stream()
    [mark] = stream.mark("utterance-1")
    assert isinstance(mark, str)
    assert json.loads(mark) == {"action": "notify", "payload": {"mark": "utterance-1"}}
    [clear] = stream.clear()
    assert isinstance(clear, str) and json.loads(clear) == {"action": "clear"}


def test_only_vonage_rates_are_accepted() -> None:
    with pytest.raises(ValueError, match="8000, 16000 or 24000"):
        VonageStream(44100)


@settings(max_examples=150, deadline=None)
@given(
    rate=st.sampled_from([8000, 16000, 24000]),
    pcm=st.binary(max_size=5000),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=12),
)
def test_any_chunking_through_the_encoder_yields_whole_single_frames(
    rate: int, pcm: bytes, cuts: list[int]
) -> None:
    stream = started_stream(rate)
    encoder = FrameEncoder(src_rate=rate, dst_rate=rate, codec=stream.codec)
    bounds = sorted({0, len(pcm), *(c for c in cuts if c <= len(pcm))})
    messages: list[str | bytes] = []
    for start, end in itertools.pairwise(bounds):
        messages += stream.play(encoder.feed(pcm[start:end]))
    messages += stream.play(encoder.flush())
    for message in messages:
        assert isinstance(message, bytes)
        assert len(message) == FRAME[rate]
    heard = b"".join(m for m in messages if isinstance(m, bytes))
    # Exactly the audio, in order, then silence up to the frame boundary.
    assert heard[: len(pcm)] == pcm
    assert heard[len(pcm) :] == bytes(len(heard) - len(pcm))
    assert len(heard) - len(pcm) < FRAME[rate]


# --- NCCOs ------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_answer_ncco_connects_to_our_websocket(rate: int) -> None:
    uri = "wss://bridge.example.com/vonage/stream?token=abc.def"
    ncco = answer_ncco(uri, rate, {"call_id": "CALL-1"})
    assert json.loads(json.dumps(ncco)) == ncco  # plain JSON, no enums left
    assert ncco[-1] == {
        "action": "connect",
        "randomFromNumber": False,
        "endpoint": [
            {
                "type": "websocket",
                "uri": uri,
                "content-type": f"audio/l16;rate={rate}",
                "headers": {"call_id": "CALL-1"},
            }
        ],
    }


def test_answer_ncco_refuses_oversized_headers_and_odd_rates() -> None:
    with pytest.raises(ValueError, match="512"):
        answer_ncco("wss://x/vonage/stream", 16000, {"call_id": "x" * 600})
    with pytest.raises(ValueError):
        answer_ncco("wss://x/vonage/stream", 11025, {"call_id": "c"})


def test_transfer_ncco_connects_to_the_number() -> None:
    assert transfer_ncco("+14155550123", "+447700900000", 30) == [
        {
            "action": "connect",
            "from": "447700900000",
            "timeout": 30,
            "endpoint": [{"type": "phone", "number": "14155550123"}],
        }
    ]
    [action] = transfer_ncco("004915112345678", "447700900000")
    assert action["endpoint"] == [{"type": "phone", "number": "4915112345678"}]
    assert "timeout" not in action


def test_transfer_ncco_without_a_usable_caller_id_uses_an_application_number() -> None:
    for caller_id in ("", "Unknown", "sip:alice@example.com"):
        [action] = transfer_ncco("+14155550123", caller_id)
        assert action["randomFromNumber"] is True
        assert "from" not in action


@pytest.mark.parametrize("to", ["", "reception", "+0123456", "+1 415 555"])
def test_transfer_ncco_refuses_non_numbers(to: str) -> None:
    with pytest.raises(ValueError, match=r"E\.164"):
        transfer_ncco(to, "447700900000")


def test_talk_ncco_speaks_and_nothing_follows() -> None:
    assert talk_ncco("Sorry.") == [{"action": "talk", "text": "Sorry."}]


# --- signed webhooks --------------------------------------------------------------------


def token(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm=algorithm)


def signed_header(
    body: bytes = b"", *, now: float | None = None, secret: str = SECRET, **extra: Any
) -> str:
    claims: dict[str, Any] = {
        "iat": int(time.time() if now is None else now),
        "jti": "j-1",
        "iss": "Vonage",
        "application_id": "app",
        "payload_hash": hashlib.sha256(body).hexdigest(),
    }
    claims.update(extra)
    claims = {k: v for k, v in claims.items() if v is not None}
    return "Bearer " + token(claims, secret)


BODY = b'{"uuid":"CALL-1","status":"answered","to":"447700900000"}'
NOW = 1_800_000_000.0


def check(header: str | None, body: bytes = BODY, **kwargs: Any) -> str | None:
    return verify_signed_webhook(header, body, SECRET, 300, now=NOW, **kwargs)


def test_a_genuine_signed_webhook_passes() -> None:
    assert check(signed_header(BODY, now=NOW)) is None
    assert check(signed_header(BODY, now=NOW - 299)) is None
    assert check(signed_header(BODY, now=NOW + 30)) is None  # a little clock skew


def test_forged_tampered_and_badly_timed_webhooks_fail() -> None:
    assert check(signed_header(BODY, now=NOW, secret="another-secret-that-is-long-enough!!")) == (
        "bad signature"
    )
    assert check(signed_header(BODY, now=NOW), BODY.replace(b"answered", b"completed")) == (
        "payload_hash does not match the request"
    )
    assert check(signed_header(BODY, now=NOW - 301)) == "token too old"
    assert check(signed_header(BODY, now=NOW + 61)) == "token issued in the future"
    assert check(signed_header(BODY, now=NOW, exp=int(NOW) - 10)) == "token expired"
    assert check(signed_header(BODY, now=NOW, exp=int(NOW) + 10)) is None


def test_missing_and_garbage_authorization_fails() -> None:
    assert check(None) == "no Authorization header"
    assert check("") == "no Authorization header"
    assert check("Basic dXNlcjpwYXNz") == "Authorization is not a Bearer token"
    assert check("Bearer") == "Authorization is not a Bearer token"
    assert check("Bearer not.a.jwt") == "malformed token"
    assert check("Bearer ....") == "malformed token"
    assert check("Bearer " + "a" * 9000) == "token too long"


def test_tokens_not_made_the_vonage_way_fail() -> None:
    body_hash = hashlib.sha256(BODY).hexdigest()
    unsigned = jwt.encode({"iat": int(NOW), "payload_hash": body_hash}, "", algorithm="none")
    assert check("Bearer " + unsigned) is not None
    hs512 = token({"iat": int(NOW), "payload_hash": body_hash}, algorithm="HS512")
    assert check("Bearer " + hs512) is not None
    assert check(signed_header(BODY, now=NOW, iat=None)) == "token without iat"
    assert check(signed_header(BODY, now=NOW, iat="yesterday")) is not None
    assert check(signed_header(BODY, now=NOW, payload_hash=None)) == "token without payload_hash"
    assert check(signed_header(BODY, now=NOW, payload_hash=12)) == "malformed payload_hash"


def test_payload_hash_of_the_compact_json_is_accepted() -> None:
    spaced = b'{"uuid": "CALL-1", "status": "answered"}'
    compact = json.dumps(json.loads(spaced), separators=(",", ":")).encode()
    header = signed_header(compact, now=NOW)
    assert check(header, spaced) is None
    assert check(header, spaced.replace(b"answered", b"completed")) is not None


def test_get_webhooks_hash_their_query_or_omit_the_hash() -> None:
    query = [("uuid", "CALL-1"), ("from", "447700900001"), ("to", "447700900000")]
    query_hash = hashlib.sha256(json.dumps(dict(query), separators=(",", ":")).encode())
    assert (
        check(signed_header(now=NOW, payload_hash=query_hash.hexdigest()), b"", query=query) is None
    )
    tampered = [("uuid", "CALL-2"), *query[1:]]
    assert check(signed_header(now=NOW, payload_hash=query_hash.hexdigest()), b"", query=tampered)
    raw = hashlib.sha256(b"uuid=CALL-1&from=447700900001&to=447700900000").hexdigest()
    assert check(signed_header(now=NOW, payload_hash=raw), b"", query=query) is None
    assert check(signed_header(now=NOW, payload_hash=raw), b"", query=tampered)
    # A GET has no body: a token without payload_hash is accepted (documented choice).
    assert check(signed_header(now=NOW, payload_hash=None), b"", query=query) is None


def test_short_secrets_verify_without_warnings() -> None:
    header = signed_header(BODY, now=NOW, secret="short")
    assert verify_signed_webhook(header, BODY, "short", 300, now=NOW) is None


# --- routes (a real server on loopback) --------------------------------------------------


@contextlib.asynccontextmanager
async def running(**overrides: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Bridge]]:
    sock = bind_loopback()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    values: dict[str, Any] = {
        "telebridge_public_url": base,
        "telebridge_flows_dir": FLOWS,
        "telebridge_flow": "demo",
        "vonage_signature_secret": SECRET,
        "vonage_audio_rate": 16000,
    }
    values.update(overrides)
    bridge = Bridge.from_settings(Settings(**values))
    app = Starlette(routes=vonage_http.routes(bridge))
    async with ServedApp(app, sock), httpx.AsyncClient(base_url=base) as client:
        yield client, bridge


def grant_of(ncco: list[dict[str, Any]], bridge: Bridge) -> StreamGrant:
    endpoint = ncco[-1]["endpoint"][0]
    base, _, tok = endpoint["uri"].partition("?token=")
    assert base == bridge.settings.public_ws_url("/vonage/stream")
    return read_stream_token(bridge.keys.key(STREAM_TOKEN, "vonage"), tok, carrier="vonage")


def auth(body: bytes = b"", **kwargs: Any) -> dict[str, str]:
    return {"Authorization": signed_header(body, **kwargs)}


ANSWER_QUERY = "uuid=CALL-1&conversation_uuid=CON-1&from=447700900001&to=447700900000"
OTHER_SECRET = "another-secret-that-is-long-enough!!"


async def test_signed_get_answer_returns_the_stream_ncco() -> None:
    async with running(vonage_audio_rate=8000) as (client, bridge):
        response = await client.get(f"/vonage/answer?{ANSWER_QUERY}", headers=auth())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    ncco = response.json()
    endpoint = ncco[-1]["endpoint"][0]
    assert ncco[-1]["action"] == "connect"
    assert endpoint["type"] == "websocket"
    assert endpoint["content-type"] == "audio/l16;rate=8000"
    assert endpoint["headers"] == {"call_id": "CALL-1"}
    grant = grant_of(ncco, bridge)
    assert (grant.call_id, grant.flow, grant.caller, grant.callee) == (
        "CALL-1",
        "demo",
        "447700900001",
        "447700900000",
    )


async def test_signed_post_answer_with_flow_and_signed_vars() -> None:
    body = json.dumps(
        {
            "uuid": "CALL-2",
            "from": "447700900001",
            "to": "447700900000",
            "region_url": "https://api-eu-3.vonage.com",
        }
    ).encode()
    async with running() as (client, bridge):
        vars_token = sign_call_variables(bridge.keys.key(CALL_VARS, "vonage"), {"name": "Ada"}, 60)
        response = await client.post(
            f"/vonage/answer?flow=survey&vars={vars_token}", content=body, headers=auth(body)
        )
    assert response.status_code == 200
    grant = grant_of(response.json(), bridge)
    assert (grant.call_id, grant.flow, grant.variables) == ("CALL-2", "survey", {"name": "Ada"})


async def test_answer_with_forged_or_expired_vars_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = b'{"uuid":"CALL-3","from":"447700900001","to":"447700900000"}'
    async with running() as (client, bridge):
        key = bridge.keys.key(CALL_VARS, "vonage")
        good = sign_call_variables(key, {"name": "Ada"}, 60)
        refused = {
            "forged": good[:-3] + ("xyz" if not good.endswith("xyz") else "abc"),
            "expired": sign_call_variables(key, {"name": "Ada"}, -1),
            "for plivo": sign_call_variables(bridge.keys.key(CALL_VARS, "plivo"), {}, 60),
            "not a token": "nonsense",
        }
        for what, token in refused.items():
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="telebridge.server.bridge"):
                response = await client.post(
                    f"/vonage/answer?vars={token}", content=body, headers=auth(body)
                )
            assert response.status_code == 403, what
            lines = [r.getMessage() for r in caplog.records]
            assert len(lines) == 1 and "CALL-3" in lines[0], (what, lines)
        assert bridge.pending == {}  # no stream was granted


async def test_unsigned_forged_tampered_and_stale_webhooks_are_refused() -> None:
    body = b'{"uuid":"CALL-1","from":"1","to":"2"}'
    async with running() as (client, _):
        for path in ("/vonage/answer", "/vonage/event"):
            assert (await client.post(path, content=body)).status_code == 403
            forged = await client.post(path, content=body, headers=auth(body, secret=OTHER_SECRET))
            assert forged.status_code == 403
            tampered = body.replace(b"CALL-1", b"CALL-X")
            assert (
                await client.post(path, content=tampered, headers=auth(body))
            ).status_code == 403
            stale = auth(body, now=time.time() - 3600)
            assert (await client.post(path, content=body, headers=stale)).status_code == 403
        assert (await client.get(f"/vonage/answer?{ANSWER_QUERY}")).status_code == 403


async def test_unsigned_webhooks_are_accepted_only_when_allowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="telebridge.carriers.vonage_http"):
        async with running(vonage_signature_secret=None, vonage_allow_unsigned=True) as (
            client,
            _,
        ):
            response = await client.get(f"/vonage/answer?{ANSWER_QUERY}")
    assert "VONAGE_ALLOW_UNSIGNED" in caplog.text
    assert response.status_code == 200
    assert response.json()[-1]["action"] == "connect"


async def test_a_secret_wins_over_allow_unsigned() -> None:
    async with running(vonage_allow_unsigned=True) as (client, _):
        assert (await client.get(f"/vonage/answer?{ANSWER_QUERY}")).status_code == 403


async def test_without_secret_or_opt_out_vonage_is_disabled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="telebridge.carriers.vonage_http"):
        async with running(vonage_signature_secret=None, vonage_allow_unsigned=False) as (
            client,
            bridge,
        ):
            responses = [
                await client.get(f"/vonage/answer?{ANSWER_QUERY}"),
                await client.post("/vonage/event", content=b"{}"),
            ]
            grant = StreamGrant(carrier="vonage", call_id="CALL-1", flow="demo")
            with pytest.raises(InvalidStatus) as refused:
                async with connect(bridge.stream_url("/vonage/stream", grant)):
                    pass
    assert "Vonage is disabled" in caplog.text
    for response in responses:
        assert response.status_code == 503
        assert "VONAGE_SIGNATURE_SECRET" in response.text
        assert "VONAGE_ALLOW_UNSIGNED" in response.text
    assert refused.value.response.status_code == 403


async def test_answer_without_uuid_or_json_and_unknown_flow() -> None:
    async with running() as (client, _):
        no_uuid = await client.get("/vonage/answer?from=1", headers=auth())
        not_json = await client.post("/vonage/answer", content=b"nope", headers=auth(b"nope"))
        unknown = await client.get(
            f"/vonage/answer?flow=no-such-flow&{ANSWER_QUERY}", headers=auth()
        )
    assert no_uuid.status_code == 400
    assert not_json.status_code == 400
    assert unknown.status_code == 200
    assert unknown.json() == [{"action": "talk", "text": vonage_http.REFUSAL_TEXT}]


async def test_events_are_acknowledged_whatever_their_status() -> None:
    async with running() as (client, _):
        for status in ("started", "answered", "completed", "human", "brand-new-status"):
            body = json.dumps({"uuid": "CALL-1", "status": status, "duration": "12"}).encode()
            response = await client.post("/vonage/event", content=body, headers=auth(body))
            assert response.status_code == 200, status


async def test_events_that_are_not_json_objects_are_bad_requests() -> None:
    async with running() as (client, _):
        for body in (b"status=answered", b"[1]"):
            response = await client.post("/vonage/event", content=body, headers=auth(body))
            assert response.status_code == 400


async def test_oversized_webhooks_are_refused() -> None:
    body = b'{"uuid":"' + b"x" * 70_000 + b'"}'
    async with running() as (client, _):
        response = await client.post("/vonage/event", content=body, headers=auth(body))
    assert response.status_code == 413


async def test_stream_without_a_valid_token_is_refused() -> None:
    async with running() as (_, bridge):
        plivo_grant = StreamGrant(carrier="plivo", call_id="CALL-1", flow="demo")
        wrong_carrier = mint_stream_token(bridge.keys.key(STREAM_TOKEN, "vonage"), plivo_grant, 60)
        vonage_grant = StreamGrant(carrier="vonage", call_id="CALL-1", flow="demo")
        plivo_key = mint_stream_token(bridge.keys.key(STREAM_TOKEN, "plivo"), vonage_grant, 60)
        base = bridge.settings.public_ws_url("/vonage/stream")
        for query in ("", "?token=garbage", f"?token={wrong_carrier}", f"?token={plivo_key}"):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(base + query):
                    pass
            assert refused.value.response.status_code == 403


@pytest.mark.parametrize(
    "first",
    [
        connected(16000, call_id="CALL-OTHER"),  # the token is for CALL-1
        connected(8000, call_id="CALL-1"),  # not the configured rate
        '{"event":"websocket:dtmf","digit":"1"}',
    ],
)
async def test_stream_whose_opening_does_not_match_the_token_is_closed(first: str) -> None:
    async with running() as (_, bridge):
        grant = StreamGrant(carrier="vonage", call_id="CALL-1", flow="demo")
        async with connect(bridge.stream_url("/vonage/stream", grant)) as ws:
            await ws.send(first)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008


def test_module_constants_match_the_protocol() -> None:
    assert vonage.frame_bytes(8000) == 320
    assert vonage.frame_bytes(16000) == 640
    assert vonage.frame_bytes(24000) == 960
    assert vonage.CALL_HEADER == "call_id"
