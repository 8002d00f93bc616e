"""The call API's gate, over a real port: off without a key, the key, the rate, the size and the
shape of bodies. Every refusal is a JSON error with a fitting 4xx status, never a 500 or a
traceback, and the key never reaches the log."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from telebridge.simulator.bridge import LocalBridge
from tests.e2e.conftest import MakeBridge

KEY = "hostile-test-key-0123456789abcdef"
SECOND = "second-test-key-0123456789abcdef"
GOOD = {"carrier": "plivo", "to": "+14155550199", "from": "+14155550100"}


async def client_for(lb: LocalBridge, key: str | None = KEY) -> httpx.AsyncClient:
    return lb.client(key=key)


@pytest.fixture
async def client(make_bridge: MakeBridge) -> AsyncIterator[httpx.AsyncClient]:
    lb = await make_bridge(telebridge_api_key=f"{KEY},{SECOND}", telebridge_api_rate=1000)
    async with await client_for(lb) as http:
        yield http


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "Traceback" not in response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


async def test_without_a_key_setting_every_route_says_how_to_turn_it_on(
    make_bridge: MakeBridge,
) -> None:
    lb = await make_bridge()
    async with await client_for(lb) as http:
        for method, path in [("GET", "/v1/calls"), ("POST", "/v1/calls"),
                             ("GET", "/v1/calls/abc"), ("POST", "/v1/calls/abc/say"),
                             ("GET", "/v1/openapi.json"), ("GET", "/v1/elsewhere")]:  # fmt: skip
            response = await http.request(method, path, json=GOOD)
            assert "TELEBRIDGE_API_KEY" in error_of(response, 403), path
        assert lb.plivo_api.requests == []


async def test_a_missing_or_wrong_key_is_401_and_every_listed_key_works(
    client: httpx.AsyncClient,
) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"},
                    {"Authorization": f"Basic {KEY}"}, {"Authorization": f"Bearer {KEY}x"},
                    {"Authorization": "Bearer"}):  # fmt: skip
        response = await client.get("/v1/calls", headers=headers)
        assert "API key" in error_of(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
    for key in (KEY, SECOND):
        response = await client.get("/v1/calls", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200
        assert response.json() == {"calls": []}


async def test_the_openapi_description_names_every_route(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/openapi.json", headers={"Authorization": ""})
    assert response.status_code == 200
    description = response.json()
    assert description["openapi"].startswith("3.")
    assert set(description["paths"]) == {
        "/v1/calls", "/v1/calls/{call_id}", "/v1/calls/{call_id}/say",
        "/v1/calls/{call_id}/hangup", "/v1/calls/{call_id}/transfer",
    }  # fmt: skip


async def test_bodies_over_64_kb_are_refused_before_they_are_read(
    client: httpx.AsyncClient,
) -> None:
    big = b'{"text": "' + b"a" * 70_000 + b'"}'
    declared = await client.post("/v1/calls/x/say", content=big,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    assert "64 KB" in error_of(declared, 413)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 8192  # no Content-Length: chunked, counted as it comes

    streamed = await client.post("/v1/calls", content=chunks())
    assert "64 KB" in error_of(streamed, 413)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"not json", 400, "not JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"carrier": 5, "to": "+14155550199", "from": "+14155550100"}', 400, "carrier"),
        (b'{"carrier": "plivo", "to": "+14155550199"}', 400, "from: required"),
        (b'{"carrier": "plivo", "to": "12", "from": "+14155550100"}', 400, "not an E.164"),
        (b'{"carrier": "twilio", "to": "+14155550199", "from": "+14155550100"}', 400, "one of"),
        (b'{"carrier": "plivo", "to": "+14155550199", "from": "+14155550100", "x": 1}', 400,
         "unknown field 'x'"),
        (b'{"carrier": "plivo", "to": "+14155550199", "from": "+14155550100", "vars": []}', 400,
         "vars"),
        (b'{"carrier": "plivo", "to": "+14155550199", "from": "+14155550100", '
         b'"vars": {"attempt": "1"}}', 400, "reserved"),
        (b'{"carrier": "plivo", "to": "+14155550199", "from": "+14155550100", '
         b'"flow": "nope"}', 400, "no flow named 'nope'"),
        (b"\xff\xfe{}", 400, "UTF-8"),
    ],
)  # fmt: skip
async def test_bad_bodies_are_400_naming_the_field(
    client: httpx.AsyncClient, body: bytes, status: int, words: str
) -> None:
    response = await client.post(
        "/v1/calls", content=body, headers={"Content-Type": "application/json"}
    )
    assert words in error_of(response, status)


async def test_wrong_content_type_method_and_route(client: httpx.AsyncClient) -> None:
    form = await client.post("/v1/calls", data={"carrier": "plivo"})
    assert "application/json" in error_of(form, 415)
    wrong = await client.delete("/v1/calls")
    error_of(wrong, 405)
    assert wrong.headers["allow"] == "GET, POST"
    assert "openapi" in error_of(await client.get("/v1/phones"), 404)
    for path in ("/v1/calls/..%2F..%2Fetc", "/v1/calls/" + "a" * 200):
        assert error_of(await client.get(path), 404)
    say = await client.post("/v1/calls/abc/say", json={"text": 5})
    assert "text" in error_of(say, 400)
    speed = await client.post("/v1/calls/abc/say", json={"text": "hi", "speed": True})
    assert "speed" in error_of(speed, 400)
    transfer = await client.post("/v1/calls/abc/transfer", json={"to": "nobody"})
    assert "E.164" in error_of(transfer, 400)


async def test_a_burst_from_one_key_is_rate_limited(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_api_key=f"{KEY},{SECOND}", telebridge_api_rate=2)
    async with await client_for(lb) as http:
        statuses = [(await http.get("/v1/calls")).status_code for _ in range(6)]
        assert statuses[:4] == [200] * 4  # a burst of twice the rate
        assert statuses[4:] == [429, 429]
        limited = await http.get("/v1/calls")
        assert "too many" in error_of(limited, 429)
        assert int(limited.headers["retry-after"]) >= 1
        # Another key has its own budget.
        other = await http.get("/v1/calls", headers={"Authorization": f"Bearer {SECOND}"})
        assert other.status_code == 200
        # Guessing keys spends the guesser's address's budget.
        guesses = [(await http.get("/v1/calls", headers={"Authorization": f"Bearer g{i}"}))
                   .status_code for i in range(6)]  # fmt: skip
        assert guesses[:4] == [401] * 4 and guesses[4:] == [429, 429]


async def test_an_unexpected_failure_is_a_plain_500_and_keys_never_reach_the_log(
    make_bridge: MakeBridge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    lb = await make_bridge(telebridge_api_key=KEY)
    assert lb.bridge is not None

    class BrokenLog:
        def get(self, *args: object) -> None:
            raise RuntimeError("disk on fire")

    lb.bridge.calllog = BrokenLog()  # type: ignore[assignment]
    async with await client_for(lb) as http:
        broken = await http.get("/v1/calls/abc")
        assert error_of(broken, 500) == "internal error: see the bridge's log"
        assert "disk on fire" not in broken.text
        await http.get("/v1/calls", headers={"Authorization": f"Bearer {KEY[:-1]}"})
        await http.post("/v1/calls", json={**GOOD, "vars": {"token": KEY}})
    assert "disk on fire" in caplog.text  # logged, with its traceback, for the operator
    assert KEY not in caplog.text and KEY[:-1] not in caplog.text
