"""Vonage REST through the SDK against a local TLS fake, call control, and one call end to end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from telebridge.carriers import vonage_http, vonage_rest
from telebridge.carriers.vonage import transfer_ncco
from telebridge.carriers.vonage_http import VonageCallControl
from telebridge.carriers.vonage_rest import VonageRest, VonageRestError
from telebridge.server import Bridge
from telebridge.settings import Settings
from telebridge.simulator.fake_vonage_api import VonageApiFake
from telebridge.simulator.serving import ServedApp, bind_loopback
from telebridge.tts import SpeechOptions

APP_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
SECRET = "vonage-signature-secret-of-40-characters"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey, fmt: serialization.PrivateFormat) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


@pytest.fixture
def pkcs1(rsa_key: rsa.RSAPrivateKey) -> str:
    return pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL)


@pytest.fixture
async def api(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[VonageApiFake]:
    async with VonageApiFake() as fake:
        # The SDK offers no CA option; requests honours this variable for every session.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake.ca_path)
        yield fake


def test_region_hosts_are_only_vonage_hosts(pkcs1: str) -> None:
    rest = VonageRest(APP_ID, pkcs1, "api.nexmo.com")
    assert rest.region_host("https://api-eu-3.vonage.com") == "api-eu-3.vonage.com"
    assert rest.region_host("https://API-US-1.nexmo.com/") == "api-us-1.nexmo.com"
    assert rest.region_host("api-ap-4.vonage.com") == "api-ap-4.vonage.com"
    assert rest.region_host(None) == "api.nexmo.com"
    assert rest.region_host("") == "api.nexmo.com"
    # A forged region would receive our application's JWT: ignored.
    assert rest.region_host("https://evil.example.com") == "api.nexmo.com"
    assert rest.region_host("https://vonage.com.evil.example") == "api.nexmo.com"
    assert rest.region_host("https://evil.example#.vonage.com") == "api.nexmo.com"
    assert rest.region_host("https://evil.example?.vonage.com") == "api.nexmo.com"
    assert rest.region_host("https://evil.example\\.vonage.com") == "api.nexmo.com"
    assert rest.region_host("https://api.vonage.com@evil.example") == "api.nexmo.com"


# --- REST against the fake --------------------------------------------------------------


async def test_hangup_puts_hangup_with_an_application_jwt(
    api: VonageApiFake, rsa_key: rsa.RSAPrivateKey, pkcs1: str
) -> None:
    rest = VonageRest(APP_ID, pkcs1, api.host)
    assert await rest.hangup("CALL-1") is True
    [request] = api.requests
    assert (request.method, request.path, request.json) == (
        "PUT",
        "/v1/calls/CALL-1",
        {"action": "hangup"},
    )
    scheme, _, bearer = request.headers["authorization"].partition(" ")
    claims = jwt.decode(bearer, rsa_key.public_key(), algorithms=["RS256"])
    assert scheme == "Bearer" and claims["application_id"] == APP_ID


async def test_hangup_of_a_call_that_already_ended_is_not_an_error(
    api: VonageApiFake, pkcs1: str
) -> None:
    api.ended.add("CALL-1")
    assert await VonageRest(APP_ID, pkcs1, api.host).hangup("CALL-1") is False


async def test_failures_say_what_failed_and_hold_no_key(api: VonageApiFake, pkcs1: str) -> None:
    api.update_status = 500
    rest = VonageRest(APP_ID, pkcs1, api.host, max_retries=0)
    with pytest.raises(VonageRestError) as raised:
        await rest.hangup("CALL-1")
    assert raised.value.status == 500
    assert str(raised.value) == "vonage hangup failed: HTTP 500"
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    dead = VonageRest(APP_ID, pkcs1, f"127.0.0.1:{closed.getsockname()[1]}", max_retries=0)
    with pytest.raises(VonageRestError) as refused:
        await dead.transfer_ncco("CALL-1", transfer_ncco("+14155550123", "447700900000"))
    closed.close()
    assert refused.value.status is None
    for error in (raised.value, refused.value):
        assert "PRIVATE KEY" not in str(error)
        assert pkcs1.splitlines()[1] not in str(error)


async def test_transfer_sends_the_ncco_as_given(api: VonageApiFake, pkcs1: str) -> None:
    ncco = transfer_ncco("+14155550123", "447700900000", 25)
    await VonageRest(APP_ID, pkcs1, api.host).transfer_ncco("CALL-1", ncco)
    [request] = api.requests
    assert (request.method, request.path) == ("PUT", "/v1/calls/CALL-1")
    assert request.json == {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}}
    assert request.json["destination"]["ncco"][0]["endpoint"][0]["number"] == "14155550123"


async def test_requests_go_to_the_region_host_given(api: VonageApiFake, pkcs1: str) -> None:
    async with VonageApiFake(ca=api.ca) as region:
        rest = VonageRest(APP_ID, pkcs1, api.host)
        assert await rest.hangup("CALL-1", region.host) is True
    assert api.requests == []
    assert [r.path for r in region.requests] == ["/v1/calls/CALL-1"]


# --- call control -----------------------------------------------------------------------


class Closer:
    def __init__(self) -> None:
        self.closed = 0

    async def __call__(self) -> None:
        self.closed += 1


def control(rest: VonageRest | None, closer: Closer, host: str | None = None) -> VonageCallControl:
    return VonageCallControl(
        rest, "CALL-1", region_host=host, caller_id="447700900000", close=closer
    )


async def test_control_hangs_up_through_rest_and_leaves_the_socket(
    api: VonageApiFake, pkcs1: str
) -> None:
    closer = Closer()
    await control(VonageRest(APP_ID, pkcs1, api.host), closer).hangup()
    assert [r.json for r in api.requests] == [{"action": "hangup"}]
    assert closer.closed == 0


async def test_control_closes_the_socket_when_rest_fails_or_is_missing(
    api: VonageApiFake, pkcs1: str
) -> None:
    api.update_status = 500
    closer = Closer()
    await control(VonageRest(APP_ID, pkcs1, api.host, max_retries=0), closer).hangup()
    assert closer.closed == 1 and len(api.requests) == 1
    await control(None, closer).hangup()
    assert closer.closed == 2 and len(api.requests) == 1


async def test_control_transfers_with_the_callee_as_caller_id(
    api: VonageApiFake, pkcs1: str
) -> None:
    closer = Closer()
    ctl = control(VonageRest(APP_ID, pkcs1, api.host), closer)
    assert await ctl.transfer("+14155550123", 20) is True
    [request] = api.requests
    [action] = request.json["destination"]["ncco"]
    assert action == {
        "action": "connect",
        "from": "447700900000",
        "timeout": 20,
        "endpoint": [{"type": "phone", "number": "14155550123"}],
    }
    assert await ctl.transfer("reception", 20) is False  # not a number: nothing sent
    assert await control(None, closer).transfer("+14155550123", 20) is False
    assert len(api.requests) == 1 and closer.closed == 0


# --- one call end to end ----------------------------------------------------------------

TONE = bytes(range(256)) * 25  # 6400 bytes: 0.2 s at 16 kHz, five 640-byte frames


class ToneSynthesizer:
    """Speaks every text as the same short PCM, in uneven chunks."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def synthesize(
        self, text: str, *, sample_rate: int, options: SpeechOptions, request_id: str | None = None
    ) -> AsyncIterator[bytes]:
        self.texts.append(text)
        for start in range(0, len(TONE), 1000):
            yield TONE[start : start + 1000]


@contextlib.asynccontextmanager
async def vonage_bridge(
    tmp_path: Path, flow: str, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Bridge]]:
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "test.yaml").write_text(flow)
    sock = bind_loopback()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    values: dict[str, Any] = {
        "telebridge_public_url": base,
        "telebridge_flows_dir": flows,
        "telebridge_flow": "test",
        "telebridge_mark_timeout": 2.0,
        "vonage_signature_secret": None,
        "vonage_allow_unsigned": True,
    }
    values.update(overrides)
    bridge = Bridge.from_settings(Settings(**values))
    bridge.tts = ToneSynthesizer()
    app = Starlette(routes=vonage_http.routes(bridge))
    async with ServedApp(app, sock, lifespan="off"), httpx.AsyncClient(base_url=base) as client:
        yield client, bridge


async def act_as_vonage(
    client: httpx.AsyncClient, answer: dict[str, str], stop: asyncio.Event | None = None
) -> tuple[list[bytes], int | None]:
    """Answer, open the socket, echo every notify; returns the audio heard and the close code."""
    response = await client.post("/vonage/answer", json=answer)
    assert response.status_code == 200
    endpoint = response.json()[-1]["endpoint"][0]
    heard: list[bytes] = []
    async with connect(endpoint["uri"]) as ws:
        await ws.send(
            json.dumps(
                {
                    "event": "websocket:connected",
                    "content-type": endpoint["content-type"],
                    **endpoint["headers"],
                }
            )
        )
        try:
            async with asyncio.timeout(10):
                while stop is None or not stop.is_set():
                    try:
                        async with asyncio.timeout(0.05):
                            message = await ws.recv()
                    except TimeoutError:
                        continue
                    if isinstance(message, bytes):
                        heard.append(message)
                        continue
                    data = json.loads(message)
                    if data.get("action") == "notify":
                        reply = {"event": "websocket:notify", "payload": data["payload"]}
                        await ws.send(json.dumps(reply))
        except ConnectionClosed:
            pass
        return heard, ws.close_code


HANGUP_FLOW = 'start: bye\nsteps:\n  bye:\n    say: "Goodbye."\n    hangup: true\n'
ANSWER = {"uuid": "CALL-1", "from": "447700900001", "to": "447700900000"}


async def test_a_call_plays_whole_frames_then_hangs_up_on_its_region(
    api: VonageApiFake, pkcs1: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Loopback stands in for a regional Vonage host here.
    monkeypatch.setattr(vonage_rest, "VONAGE_DOMAINS", (*vonage_rest.VONAGE_DOMAINS, "127.0.0.1"))
    async with (
        VonageApiFake(ca=api.ca) as region,
        vonage_bridge(
            tmp_path,
            HANGUP_FLOW,
            vonage_application_id=APP_ID,
            vonage_private_key=pkcs1,
            vonage_api_host=api.host,
        ) as (client, bridge),
    ):
        answer = {**ANSWER, "region_url": f"https://{region.host}"}
        heard, _ = await act_as_vonage(client, answer)
    assert all(len(frame) == 640 for frame in heard)
    assert b"".join(heard) == TONE
    assert api.requests == []
    assert [(r.path, r.json) for r in region.requests] == [
        ("/v1/calls/CALL-1", {"action": "hangup"})
    ]
    assert bridge.calls == {}


async def test_without_rest_credentials_the_bridge_ends_the_call_by_closing(
    tmp_path: Path,
) -> None:
    async with vonage_bridge(tmp_path, HANGUP_FLOW) as (client, _):
        heard, code = await act_as_vonage(client, ANSWER)
    assert b"".join(heard) == TONE
    assert code == 1000


async def test_a_transfer_connects_the_caller_from_the_called_number(
    api: VonageApiFake, pkcs1: str, tmp_path: Path
) -> None:
    flow = 'start: agent\nsteps:\n  agent:\n    transfer: {to: "+14155550123", timeout: 15}\n'
    stop = asyncio.Event()
    async with vonage_bridge(
        tmp_path,
        flow,
        vonage_application_id=APP_ID,
        vonage_private_key=pkcs1,
        vonage_api_host=api.host,
    ) as (client, _):

        async def vonage_moves_the_caller() -> None:
            await api.received.wait()
            stop.set()  # Vonage takes the caller elsewhere; its socket goes away

        watcher = asyncio.create_task(vonage_moves_the_caller())
        await act_as_vonage(client, ANSWER, stop)
        await watcher
    [request] = api.requests
    assert request.path == "/v1/calls/CALL-1"
    assert request.json["action"] == "transfer"
    [action] = request.json["destination"]["ncco"]
    assert action["from"] == "447700900000" and action["timeout"] == 15
    assert action["endpoint"] == [{"type": "phone", "number": "14155550123"}]
