"""The call API end to end: calls placed over `/v1/` through the fake Plivo and Vonage REST APIs,
which then answer as the carriers do (the signed answer webhook, the media stream), and say,
interrupt, hang up and transfer on the live calls. What the caller hears is compared byte for
byte with the stand-in's rendering.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from telebridge.simulator.bridge import SIM_PLIVO_AUTH_TOKEN, LocalBridge
from telebridge.simulator.carrier import CallScript, SimResult, SimulatedCall
from telebridge.simulator.fake_plivo_api import RecordedRequest
from telebridge.simulator.fake_vonage_api import Recorded, VonageApiFake
from telebridge.simulator.plivo import PlivoCall
from telebridge.simulator.vonage import VonageCall
from tests.e2e.conftest import MakeBridge
from tests.e2e.test_calls import Carrier, released

KEY = "test-api-key-0123456789abcdef"
OLD_KEY = "old-api-key-0123456789abcdef"
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
FROM = "+14155550100"
TO = "+14155550199"
TRANSFER_TO = "+14155550123"
PLIVO = Carrier("plivo")
VONAGE = Carrier("vonage", 16000)
both_carriers = pytest.mark.parametrize("carrier", [PLIVO, VONAGE], ids=["plivo", "vonage"])
HOLD = "Please hold while we find someone who can help you with that today."


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
async def vonage_api(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[VonageApiFake]:
    async with VonageApiFake() as fake:
        # The SDK offers no CA option; requests honours this variable for every session.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake.ca_path)
        yield fake


@dataclass
class Carriers:
    """The carriers' side of calls placed through the API: each created call is answered."""

    lb: LocalBridge
    vonage_api: VonageApiFake
    script: CallScript = field(default_factory=CallScript)
    calls: dict[str, SimulatedCall] = field(default_factory=dict)  # by the id the API gave
    results: dict[str, asyncio.Future[SimResult]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lb.plivo_api.on_create = self._plivo_answers
        self.vonage_api.on_create = self._vonage_answers

    def _script(self, to: str, from_: str) -> CallScript:
        return CallScript(**{**self.script.__dict__, "caller": from_, "callee": to})

    async def _plivo_answers(self, request: RecordedRequest, request_uuid: str) -> None:
        body = request.body
        query = urlsplit(body["answer_url"]).query
        script = self._script(body["to"], body["from"])
        call = PlivoCall(self.lb.url, SIM_PLIVO_AUTH_TOKEN, script, answer_query=query)
        await self._run(request_uuid, call)

    async def _vonage_answers(self, request: Recorded, call_uuid: str) -> None:
        body = request.json
        query = urlsplit(body["answer_url"][0]).query
        script = self._script(body["to"][0]["number"], body["from"]["number"])
        secret = self.lb.settings.vonage_signature_secret
        assert secret is not None
        call = VonageCall(
            self.lb.url, secret.get_secret_value(), script, rate=VONAGE.rate, call_id=call_uuid,
            answer_query=query, method="POST", region_url=f"https://{self.vonage_api.host}",
        )  # fmt: skip
        await self._run(call_uuid, call)

    async def _run(self, api_id: str, call: SimulatedCall) -> None:
        self.calls[api_id] = call
        future = self.results.setdefault(api_id, asyncio.get_running_loop().create_future())
        try:
            future.set_result(await self.lb.run(call))
        except Exception as exc:
            future.set_exception(exc)

    async def result(self, api_id: str, timeout: float = 30) -> SimResult:  # noqa: ASYNC109
        future = self.results.setdefault(api_id, asyncio.get_running_loop().create_future())
        async with asyncio.timeout(timeout):
            return await asyncio.shield(future)

    async def hearing(self, api_id: str) -> SimulatedCall:
        """The call, once its caller has heard the start of the first prompt."""
        async with asyncio.timeout(10):
            while api_id not in self.calls or not self.calls[api_id].playout.heard():
                await asyncio.sleep(0.02)
        return self.calls[api_id]


@pytest.fixture
async def api(
    make_bridge: MakeBridge, vonage_api: VonageApiFake, private_key_pem: str
) -> AsyncIterator[tuple[LocalBridge, Carriers, httpx.AsyncClient]]:
    lb = await make_bridge(
        telebridge_api_key=f"{KEY}, {OLD_KEY}",
        vonage_audio_rate=VONAGE.rate,
        vonage_application_id=APP_ID,
        vonage_private_key=private_key_pem,
        vonage_api_host=vonage_api.host,
    )
    async with lb.client(key=KEY, timeout=15) as client:
        yield lb, Carriers(lb, vonage_api), client


async def place(client: httpx.AsyncClient, carrier: Carrier, **fields: Any) -> dict[str, Any]:
    body = {"carrier": carrier.name, "to": TO, "from": FROM, **fields}
    response = await client.post("/v1/calls", json=body)
    assert response.status_code == 201, response.text
    placed: dict[str, Any] = response.json()
    return placed


async def live(client: httpx.AsyncClient, api_id: str) -> dict[str, Any]:
    """The call as GET /v1/calls/{id} shows it once it streams."""
    async with asyncio.timeout(10):
        while True:
            found: dict[str, Any] = (await client.get(f"/v1/calls/{api_id}")).json()
            if found.get("state") == "streaming":
                return found
            await asyncio.sleep(0.05)


async def ended(client: httpx.AsyncClient, lb: LocalBridge, api_id: str) -> dict[str, Any]:
    """The call as GET /v1/calls/{id} shows it once the call log has it finished."""
    await released(lb)
    async with asyncio.timeout(10):
        while True:
            found: dict[str, Any] = (await client.get(f"/v1/calls/{api_id}")).json()
            if found.get("state") == "ended" and found.get("outcome"):
                return found
            await asyncio.sleep(0.05)


# --- placing ------------------------------------------------------------------------------


@both_carriers
async def test_a_call_placed_by_the_api_is_heard_with_its_variables(
    api: tuple[LocalBridge, Carriers, httpx.AsyncClient], carrier: Carrier
) -> None:
    lb, carriers, client = api
    placed = await place(client, carrier, flow="notify", vars={"name": "Ada", "time": 9})
    assert placed == {"call_id": placed["call_id"], "carrier": carrier.name, "to": TO,
                      "from": FROM, "flow": "notify", "status": "queued"}  # fmt: skip
    result = await carriers.result(placed["call_id"])

    assert result.violations == []
    assert result.heard == carrier.audio("Hello Ada, your table is at 9.")
    record = await ended(client, lb, placed["call_id"])
    assert record["outcome"] == "hangup"
    assert record["steps"] == ["hello"]
    assert record["direction"] == "outbound"
    assert record["variables"]["name"] == "Ada"
    assert (record["from"], record["to"]) == (FROM, TO)
    if carrier.name == "vonage":
        assert record["call_id"] == placed["call_id"]  # Vonage's uuid is the call's id
    else:
        assert record["request_id"] == placed["call_id"]  # Plivo's request_uuid, then
        assert record["call_id"] == result.call_id  # its CallUUID


async def test_a_retried_request_with_the_same_idempotency_key_places_one_call(
    api: tuple[LocalBridge, Carriers, httpx.AsyncClient],
) -> None:
    lb, carriers, client = api
    body = {"carrier": "plivo", "to": TO, "from": FROM, "flow": "notify", "vars": {"name": "Bo"}}
    headers = {"Idempotency-Key": "order-1234"}
    first, second = await asyncio.gather(
        client.post("/v1/calls", json=body, headers=headers),
        client.post("/v1/calls", json=body, headers=headers),
    )
    third = await client.post("/v1/calls", json=body, headers=headers)
    assert first.status_code == second.status_code == third.status_code == 201
    assert first.json() == second.json() == third.json()
    assert third.headers["idempotent-replayed"] == "true"
    assert len(lb.plivo_api.calls_to("/Call/")) == 1
    other = await client.post("/v1/calls", json={**body, "to": TRANSFER_TO}, headers=headers)
    assert other.status_code == 422
    assert "different request" in other.json()["error"]
    await carriers.result(first.json()["call_id"])


async def test_the_carriers_refusal_is_named_in_the_answer(
    api: tuple[LocalBridge, Carriers, httpx.AsyncClient], vonage_api: VonageApiFake
) -> None:
    lb, _, client = api
    lb.plivo_api.create_statuses = [400]
    body = {"carrier": "plivo", "to": TO, "from": FROM}
    refused = await client.post("/v1/calls", json=body)
    assert refused.status_code == 422
    assert refused.json()["error"].startswith("plivo refused the call: HTTP 400")
    assert refused.json()["placed"] == "no"

    lb.plivo_api.fail_status, lb.plivo_api.fail_only = 500, "POST .*/Call/$"
    broken = await client.post("/v1/calls", json=body)
    assert broken.status_code == 502
    assert broken.json()["placed"] == "maybe"
    assert "may have been placed" in broken.json()["error"]

    vonage_api.fail_status, vonage_api.fail_only = 400, "POST /v1/calls"
    bad = await client.post("/v1/calls", json={**body, "carrier": "vonage"})
    assert bad.status_code == 422
    reason = "vonage refused the call: HTTP 400: Failed: the fake was told to fail"
    assert bad.json() == {"error": reason, "carrier": "vonage", "placed": "no",
                          "carrier_status": 400}  # fmt: skip
    vonage_api.fail_status = 401
    wrong = await client.post("/v1/calls", json={**body, "carrier": "vonage"})
    assert wrong.status_code == 502
    assert "VONAGE_APPLICATION_ID" in wrong.json()["error"]
    assert lb.bridge is not None and not lb.bridge.calls


# --- acting on live calls -----------------------------------------------------------------


@both_carriers
async def test_say_is_spoken_after_the_prompt_and_the_flow_goes_on(
    api: tuple[LocalBridge, Carriers, httpx.AsyncClient], carrier: Carrier
) -> None:
    lb, carriers, client = api
    carriers.script = CallScript(digits="w1")  # hear the prompt out, press 1 in the notice
    placed = await place(client, carrier, flow="hold")
    api_id = placed["call_id"]
    await carriers.hearing(api_id)
    shown = await live(client, api_id)
    assert (shown["step"], shown["flow"], shown["carrier"]) == ("wait", "hold", carrier.name)
    [listed] = (await client.get("/v1/calls")).json()["calls"]
    assert listed == {
        "call_id": shown["call_id"], "request_id": api_id, "carrier": carrier.name,
        "direction": "outbound", "from": FROM, "to": TO, "flow": "hold", "step": "wait",
        "started_at": shown["started_at"], "state": "streaming",
    }  # fmt: skip

    said = await client.post(f"/v1/calls/{api_id}/say", json={"text": "This is a notice."})
    assert said.status_code == 202
    result = await carriers.result(api_id)

    assert result.violations == []
    assert result.heard == (
        carrier.audio(HOLD) + carrier.audio("This is a notice.") + carrier.audio("Done.")
    )
    record = await ended(client, lb, api_id)
    assert (record["steps"], record["digits"], record["outcome"]) == (
        ["wait", "done"],
        "1",
        "hangup",
    )


@both_carriers
async def test_interrupt_cuts_the_prompt_and_hangup_lets_the_notice_finish(
    api: tuple[LocalBridge, Carriers, httpx.AsyncClient], carrier: Carrier
) -> None:
    lb, carriers, client = api
    placed = await place(client, carrier, flow="hold")
    api_id = placed["call_id"]
    call = await carriers.hearing(api_id)
    await asyncio.sleep(0.5)
    said = await client.post(
        f"/v1/calls/{api_id}/say", json={"text": "Sorry, we must go.", "interrupt": True}
    )
    assert said.status_code == 202
    # At once: the goodbye was asked for first, so it plays out before the call ends.
    gone = await client.post(f"/v1/calls/{api_id}/hangup", json={"reason": "closing time"})
    assert gone.status_code == 202
    again = await client.post(f"/v1/calls/{api_id}/hangup", json={})
    assert again.status_code == 409
    result = await carriers.result(api_id)

    assert result.violations == []
    [cut, rest] = [p.audio for p in _pieces(result)]
    hold = carrier.audio(HOLD)
    assert 0 < len(cut) < len(hold) and hold.startswith(cut)
    assert rest == carrier.audio("Sorry, we must go.")
    assert result.ended_by == carrier.ended_by
    record = await ended(client, lb, api_id)
    assert record["outcome"] == "api-hangup"
    notes = {n["kind"]: n["data"] for n in record["notes"]}
    assert notes["ended_by"] == {"by": "api", "reason": "closing time"}
    assert call.result.call_id == record["call_id"]


def _pieces(result: SimResult) -> list[Any]:
    """The prompts as heard: audio cut off by a clear, then each marked utterance."""
    return [p for p in result.prompts if p.audio]


async def test_transfer_on_plivo_updates_the_live_call(
    api: tuple[LocalBridge, Carriers, httpx.AsyncClient],
) -> None:
    lb, carriers, client = api
    placed = await place(client, PLIVO, flow="hold")
    api_id = placed["call_id"]
    call = await carriers.hearing(api_id)
    moved = await client.post(f"/v1/calls/{api_id}/transfer", json={"to": "+1 415 555 0123"})
    assert moved.status_code == 202
    assert moved.json()["to"] == TRANSFER_TO
    result = await carriers.result(api_id)

    assert result.ended_by == "transferred"
    assert result.heard == PLIVO.audio(HOLD)  # the prompt under way was not cut
    path = f"/Call/{call.result.call_id}/"
    [update] = [r for r in lb.plivo_api.requests if r.method == "POST" and r.path.endswith(path)]
    assert update.body["legs"] == "aleg"
    record = await ended(client, lb, api_id)
    assert record["outcome"] == "transfer"


async def test_transfer_on_vonage_puts_a_connect_ncco(
    api: tuple[LocalBridge, Carriers, httpx.AsyncClient], vonage_api: VonageApiFake
) -> None:
    lb, carriers, client = api
    placed = await place(client, VONAGE, flow="hold")
    api_id = placed["call_id"]
    call = await carriers.hearing(api_id)
    count = len(vonage_api.requests)
    moved = await client.post(f"/v1/calls/{api_id}/transfer", json={"to": TRANSFER_TO})
    assert moved.status_code == 202
    async with asyncio.timeout(15):
        while len(vonage_api.requests) == count:
            await asyncio.sleep(0.05)
    await call.end("transferred")  # Vonage takes the caller to the new NCCO
    result = await carriers.result(api_id)

    [request] = vonage_api.requests[count:]
    assert (request.method, request.path) == ("PUT", f"/v1/calls/{api_id}")
    ncco = request.json["destination"]["ncco"]
    assert ncco[0]["endpoint"] == [{"type": "phone", "number": TRANSFER_TO.lstrip("+")}]
    assert result.heard == VONAGE.audio(HOLD)
    record = await ended(client, lb, api_id)
    assert record["outcome"] == "transfer"


async def test_acting_on_calls_that_are_not_live(
    api: tuple[LocalBridge, Carriers, httpx.AsyncClient],
) -> None:
    lb, carriers, client = api
    for path in ("say", "hangup", "transfer"):
        body = (
            {"text": "hi"} if path == "say" else {"to": TRANSFER_TO} if path == "transfer" else {}
        )
        missing = await client.post(f"/v1/calls/no-such-call/{path}", json=body)
        assert missing.status_code == 404, path
        assert missing.json() == {"error": "no such call live on this bridge"}
    assert (await client.get("/v1/calls/no-such-call")).status_code == 404
    placed = await place(client, PLIVO, flow="notify", vars={"name": "Cy"})
    await carriers.result(placed["call_id"])
    await ended(client, lb, placed["call_id"])
    late = await client.post(f"/v1/calls/{placed['call_id']}/say", json={"text": "Hello?"})
    assert late.status_code == 409
    assert json.loads(late.text)["error"] == "the call has ended"


@both_carriers
async def test_hangup_of_a_call_still_ringing_cancels_it_at_the_carrier(
    api: tuple[LocalBridge, Carriers, httpx.AsyncClient],
    vonage_api: VonageApiFake,
    carrier: Carrier,
) -> None:
    lb, _, client = api
    lb.plivo_api.on_create = None  # nobody answers: the call keeps ringing
    vonage_api.on_create = None
    placed = await place(client, carrier, flow="notify", vars={"name": "Di"})
    api_id = placed["call_id"]
    ringing = (await client.get(f"/v1/calls/{api_id}")).json()
    assert (ringing["state"], ringing["request_id"]) == ("queued", api_id)
    assert [c["call_id"] for c in (await client.get("/v1/calls")).json()["calls"]] == [api_id]
    say = await client.post(f"/v1/calls/{api_id}/say", json={"text": "Hello?"})
    assert say.status_code == 409
    assert say.json()["error"] == "the call has not been answered yet"

    cancelled = await client.post(f"/v1/calls/{api_id}/hangup", json={})
    assert cancelled.status_code == 202
    if carrier.name == "plivo":
        [deleted] = [r for r in lb.plivo_api.requests if r.method == "DELETE"]
        assert deleted.path.endswith(f"/Request/{api_id}/")
    else:
        [put] = [r for r in vonage_api.requests if r.method == "PUT"]
        assert (put.path, put.json) == (f"/v1/calls/{api_id}", {"action": "hangup"})
    assert (await client.get(f"/v1/calls/{api_id}")).json()["state"] == "ended"
    assert (await client.get("/v1/calls")).json() == {"calls": []}
    again = await client.post(f"/v1/calls/{api_id}/hangup", json={})
    assert again.status_code == 409
