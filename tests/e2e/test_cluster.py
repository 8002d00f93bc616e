"""Two bridges joined through one real Redis (`TELEBRIDGE_REDIS_URL`): a call streaming on one is
listed, spoken to and hung up through the other; `WAVES_MAX_IN_FLIGHT` holds for both together;
Redis lost mid-call leaves the call going, `/readyz` saying so and control of local calls working.
What the caller hears is compared byte for byte with the stand-in's rendering.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from telebridge.simulator.bridge import LocalBridge
from telebridge.simulator.carrier import CallScript, SimResult, SimulatedCall
from telebridge.tts import SpeechOptions, Synthesizer
from tests.e2e.conftest import MakeBridge
from tests.e2e.test_calls import Carrier
from tests.servers.redis import RedisServer

KEY = "cluster-api-key-0123456789abcdef"
PLIVO = Carrier("plivo")
HOLD = "Please hold while we find someone who can help you with that today."
NOTICE = "This is a notice."


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, within: float = 10) -> None:
    """Poll until `condition` holds; fails naming `what` (never a sleep as an assertion)."""
    async with asyncio.timeout(within):
        while not await condition():
            await asyncio.sleep(0.05)
    assert await condition(), what


def client(lb: LocalBridge) -> httpx.AsyncClient:
    return lb.client(key=KEY, timeout=15)


async def listed(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await api.get("/v1/calls")
    assert response.status_code == 200, response.text
    return {call["call_id"]: call for call in response.json()["calls"]}


async def hearing(call: SimulatedCall) -> None:
    async with asyncio.timeout(10):
        while not call.playout.heard():
            await asyncio.sleep(0.02)


def start(lb: LocalBridge, script: CallScript) -> tuple[SimulatedCall, asyncio.Task[SimResult]]:
    call = lb.plivo_call(script)
    return call, asyncio.create_task(lb.run(call))


@pytest.fixture
async def joined(
    make_bridge: MakeBridge, private_redis: RedisServer, tmp_path: Any
) -> Callable[..., Awaitable[LocalBridge]]:
    async def join(name: str, **overrides: Any) -> LocalBridge:
        values: dict[str, Any] = {
            "telebridge_redis_url": private_redis.url,
            "telebridge_process_id": name,
            "telebridge_api_key": KEY,
            "telebridge_flow": "hold",
            "telebridge_db": tmp_path / f"{name}.db",
        }
        return await make_bridge(**{**values, **overrides})

    return join


async def test_a_call_on_one_bridge_is_listed_spoken_to_and_hung_up_through_another(
    joined: Callable[..., Awaitable[LocalBridge]],
) -> None:
    a, b = await joined("a"), await joined("b")
    async with client(a) as api_a, client(b) as api_b:
        # Hear the prompt out, then press 1 during the notice said through B.
        call, running = start(a, CallScript(digits="w1"))
        await hearing(call)
        call_id = call.result.call_id

        async def on_b_at_wait() -> bool:
            return (await listed(api_b)).get(call_id, {}).get("step") == "wait"

        await wait_for(on_b_at_wait, "B lists A's call at its step")
        shown_on_a = (await listed(api_a))[call_id]
        assert (await listed(api_b))[call_id] == shown_on_a
        one = await api_b.get(f"/v1/calls/{call_id}")
        assert one.status_code == 200 and one.json()["state"] == "streaming", one.text
        assert shown_on_a["state"] == "streaming" and shown_on_a["flow"] == "hold"

        said = await api_b.post(f"/v1/calls/{call_id}/say", json={"text": NOTICE})
        assert said.status_code == 202, said.text
        result = await running
        assert result.violations == []
        assert result.heard == PLIVO.audio(HOLD) + PLIVO.audio(NOTICE) + PLIVO.audio("Done.")

        async def gone_from_b() -> bool:
            return call_id not in await listed(api_b)

        await wait_for(gone_from_b, "the ended call leaves the cluster's list")
        late = await api_b.post(f"/v1/calls/{call_id}/say", json={"text": "Hello?"})
        assert late.status_code == 404

        call, running = start(a, CallScript())
        await hearing(call)
        call_id = call.result.call_id

        async def on_b() -> bool:
            return call_id in await listed(api_b)

        await wait_for(on_b, "B lists A's second call")
        gone = await api_b.post(f"/v1/calls/{call_id}/hangup", json={"reason": "from b"})
        assert gone.status_code == 202, gone.text
        result = await running
        assert result.violations == []
        assert result.ended_by == PLIVO.ended_by
        assert result.heard == PLIVO.audio(HOLD)

        unknown = await api_b.post("/v1/calls/CA-nobody/say", json={"text": "Hi."})
        assert (unknown.status_code, unknown.json()["error"]) == (
            404,
            "no such call live on this bridge",
        )


class CountingSynthesizer:
    """The stand-in's client, counting the requests in flight at once across every bridge."""

    def __init__(self, inner: Synthesizer) -> None:
        self._inner = inner
        self.now = self.most = self.total = 0

    def synthesize(
        self,
        text: str,
        *,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None = None,
    ) -> AsyncIterator[bytes]:
        return self._run(text, sample_rate, options, request_id)

    async def _run(
        self, text: str, sample_rate: int, options: SpeechOptions, request_id: str | None
    ) -> AsyncGenerator[bytes, None]:
        self.now += 1
        self.total += 1
        self.most = max(self.most, self.now)
        try:
            # Widens each request, so requests on two bridges would overlap without a shared cap.
            await asyncio.sleep(0.2)
            chunks = self._inner.synthesize(
                text, sample_rate=sample_rate, options=options, request_id=request_id
            )
            async for chunk in chunks:
                yield chunk
        finally:
            self.now -= 1


async def test_the_waves_cap_holds_for_both_bridges_together(
    joined: Callable[..., Awaitable[LocalBridge]], tts: Synthesizer
) -> None:
    counting = CountingSynthesizer(tts)
    # No prompt cache: every call asks Waves itself.
    settings = {"tts": counting, "waves_max_in_flight": 1, "telebridge_cache_mb": 0}
    a = await joined("a", telebridge_flow="hi", **settings)
    b = await joined("b", telebridge_flow="hi", **settings)
    runs = [start(lb, CallScript())[1] for lb in (a, b, a)]
    results = await asyncio.gather(*runs)
    for result in results:
        assert result.violations == []
        assert result.heard == PLIVO.audio("Hi.")
    assert (counting.total, counting.most) == (3, 1)


async def test_redis_lost_mid_call_the_call_goes_on_and_local_control_works(
    joined: Callable[..., Awaitable[LocalBridge]],
    private_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = await joined("a", waves_max_in_flight=1)
    await joined("b")
    caplog.set_level(logging.WARNING, logger="telebridge.server.cluster_link")
    async with client(a) as api_a:
        call, running = start(a, CallScript(digits="w1"))
        await hearing(call)
        call_id = call.result.call_id
        private_redis.stop()

        async def degraded() -> bool:
            body = (await api_a.get("/readyz")).json()
            return any(d.startswith("cluster: ") for d in body.get("degraded", []))

        await wait_for(degraded, "/readyz lists the cluster as degraded")
        ready = await api_a.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert call_id in await listed(api_a)
        said = await api_a.post(f"/v1/calls/{call_id}/say", json={"text": NOTICE})
        assert said.status_code == 202, said.text
        result = await running
    assert result.violations == []
    assert result.heard == PLIVO.audio(HOLD) + PLIVO.audio(NOTICE) + PLIVO.audio("Done.")
    fell_back = [r for r in caplog.records if "cluster unavailable" in r.getMessage()]
    assert len(fell_back) == 1


async def test_when_redis_is_back_the_call_is_the_clusters_again(
    joined: Callable[..., Awaitable[LocalBridge]], private_redis: RedisServer
) -> None:
    a, b = await joined("a"), await joined("b")
    async with client(a) as api_a, client(b) as api_b:
        call, running = start(a, CallScript())  # stays in its gather until hung up
        await hearing(call)
        call_id = call.result.call_id
        private_redis.stop()

        async def degraded() -> bool:
            return "degraded" in (await api_a.get("/readyz")).json()

        await wait_for(degraded, "A says the cluster is degraded")
        private_redis.start()  # empty: A's heartbeat must write its call again

        async def back() -> bool:
            return not await degraded() and call_id in await listed(api_b)

        await wait_for(back, "A's call is listed on B again")
        # B's bus and A's subscription came back too: B's hangup reaches the call on A.
        gone = await api_b.post(f"/v1/calls/{call_id}/hangup", json={})
        assert gone.status_code == 202, gone.text
        result = await running
    assert result.violations == []
    assert result.ended_by == PLIVO.ended_by


async def test_the_state_a_call_shows_is_the_same_on_every_bridge(
    joined: Callable[..., Awaitable[LocalBridge]],
) -> None:
    # Polled until the prompt under way has played out: above the API's default rate.
    a, b = await joined("a", telebridge_api_rate=100), await joined("b", telebridge_api_rate=100)
    # Plivo holds A's hangup request 3 s: meanwhile the call is ending on A.
    a.plivo_api.delay, a.plivo_api.fail_only = 3.0, "DELETE .*/Call/"
    async with client(a) as api_a, client(b) as api_b:
        call, running = start(a, CallScript())
        await hearing(call)
        call_id = call.result.call_id

        async def shown_on_b(state: str) -> bool:
            return (await listed(api_b)).get(call_id, {}).get("state") == state

        await wait_for(lambda: shown_on_b("streaming"), "B lists A's call as streaming")
        gone = await api_b.post(f"/v1/calls/{call_id}/hangup", json={})
        assert gone.status_code == 202, gone.text
        await wait_for(lambda: shown_on_b("ending"), "B lists A's call as ending")
        assert (await listed(api_a))[call_id]["state"] == "ending"
        one = await api_b.get(f"/v1/calls/{call_id}")
        assert one.json()["state"] == "ending", one.text
        result = await running
    assert result.violations == []
    assert result.ended_by == PLIVO.ended_by


async def test_a_call_placed_on_one_bridge_and_still_ringing_is_cancelled_through_another(
    joined: Callable[..., Awaitable[LocalBridge]],
) -> None:
    a, b = await joined("a"), await joined("b")
    a.plivo_api.on_create = None  # nobody answers: the call keeps ringing
    async with client(a) as api_a, client(b) as api_b:
        body = {"carrier": "plivo", "to": "+14155550100", "from": "+14155550199"}
        response = await api_a.post("/v1/calls", json=body)
        assert response.status_code == 201, response.text
        request_uuid = response.json()["call_id"]
        assert (await listed(api_b))[request_uuid]["state"] == "queued"
        said = await api_b.post(f"/v1/calls/{request_uuid}/say", json={"text": NOTICE})
        assert (said.status_code, said.json()["error"]) == (
            409,
            "the call has not been answered yet",
        )
        gone = await api_b.post(f"/v1/calls/{request_uuid}/hangup", json={})
        assert gone.status_code == 202, gone.text
        # B cancelled it with the carrier itself (each bridge here has its own fake Plivo API).
        cancels = [r for r in b.plivo_api.requests if r.method == "DELETE"]
        assert [r.path.rstrip("/").rsplit("/", 1)[-1] for r in cancels] == [request_uuid]

        async def ended_on_a() -> bool:
            found: dict[str, Any] = (await api_a.get(f"/v1/calls/{request_uuid}")).json()
            return found.get("state") == "ended"

        await wait_for(ended_on_a, "A sees the cancelled call ended")
        assert request_uuid not in await listed(api_a)
        again = await api_a.post(f"/v1/calls/{request_uuid}/hangup", json={})
        assert again.status_code == 409, again.text


async def test_with_redis_lost_a_call_placed_here_is_still_known_here(
    joined: Callable[..., Awaitable[LocalBridge]], private_redis: RedisServer
) -> None:
    a = await joined("a")
    a.plivo_api.on_create = None  # nobody answers: the call keeps ringing
    async with client(a) as api_a:
        private_redis.stop()

        async def degraded() -> bool:
            return "degraded" in (await api_a.get("/readyz")).json()

        await wait_for(degraded, "A says the cluster is degraded")
        body = {"carrier": "plivo", "to": "+14155550100", "from": "+14155550199"}
        response = await api_a.post("/v1/calls", json=body)
        assert response.status_code == 201, response.text
        request_uuid = response.json()["call_id"]
        found = await api_a.get(f"/v1/calls/{request_uuid}")
        assert (found.status_code, found.json()["state"]) == (200, "queued"), found.text
        assert (await listed(api_a))[request_uuid]["state"] == "queued"
        gone = await api_a.post(f"/v1/calls/{request_uuid}/hangup", json={})
        assert gone.status_code == 202, gone.text
        found = await api_a.get(f"/v1/calls/{request_uuid}")
        assert found.json()["state"] == "ended", found.text
