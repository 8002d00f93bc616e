"""The ops routes: /healthz, /readyz (and why not ready), /metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import httpx
from starlette.applications import Starlette

from telebridge.calllog import CallLog
from telebridge.server import Bridge
from telebridge.server.ops import ops_routes
from telebridge.settings import Settings
from telebridge.tts import Synthesizer
from telebridge.tts.errors import WavesAuthError
from telebridge.tts.guard import WavesGuard
from tests.calllog.support import wait_until
from tests.servers.postgres import PostgresServer

FLOWS = Path(__file__).resolve().parents[2] / "config" / "flows"


async def get(bridge: Bridge, path: str) -> httpx.Response:
    app = Starlette(routes=ops_routes(bridge))
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
        return await client.get(path)


def make_bridge() -> Bridge:
    values: dict[str, Any] = {"telebridge_flows_dir": FLOWS, "telebridge_flow": "demo"}
    return Bridge.from_settings(Settings(**values))


async def test_healthz_answers_ok_even_while_draining() -> None:
    bridge = make_bridge()
    bridge.draining = True
    response = await get(bridge, "/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_says_ready_then_draining() -> None:
    bridge = make_bridge()
    ready = await get(bridge, "/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "calls": 0})
    bridge.draining = True
    draining = await get(bridge, "/readyz")
    assert draining.status_code == 503
    assert draining.json() == {"status": "unavailable", "reason": "draining"}


async def test_readyz_names_a_refused_key_and_failing_waves() -> None:
    bridge = make_bridge()
    for _ in range(3):
        bridge.notify("C", "tts_error", {"error": "timeout"})
    assert (await get(bridge, "/readyz")).json()["reason"] == "waves failing"
    bridge.guard = WavesGuard(cast(Synthesizer, object()), max_in_flight=1, queue_timeout=1.0)
    bridge.guard.observe_failure(WavesAuthError("401"))
    assert (await get(bridge, "/readyz")).json()["reason"] == "waves refuses the key"


async def test_readyz_says_the_call_log_is_degraded_while_its_database_is_away(
    pg_url: str, postgres_server: PostgresServer
) -> None:
    bridge = make_bridge()
    bridge.calllog = log = CallLog(pg_url)
    try:
        assert "degraded" not in (await get(bridge, "/readyz")).json()
        postgres_server.stop()
        log.record_hangup("plivo", "c-1", "busy")
        await asyncio.to_thread(wait_until, lambda: log.degraded is not None)
        ready = await get(bridge, "/readyz")
        assert ready.status_code == 200  # calls go on; their records wait
        [why] = ready.json()["degraded"]
        assert why.startswith("call log: cannot reach postgresql://")
        postgres_server.start()
        await asyncio.to_thread(wait_until, lambda: log.degraded is None, 15)
        assert (await get(bridge, "/readyz")).json() == {"status": "ready", "calls": 0}
    finally:
        log.close()


async def test_metrics_are_prometheus_text() -> None:
    bridge = make_bridge()
    bridge.notify("C", "started", {"carrier": "plivo", "flow": "demo"})
    bridge.notify("C", "tts_error", {"error": "timeout"})
    response = await get(bridge, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'telebridge_active_calls{carrier="plivo"} 1.0' in response.text
    assert 'telebridge_waves_errors_total{kind="timeout"} 1.0' in response.text
