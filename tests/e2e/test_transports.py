"""The three Waves transports end to end: calls heard exactly over HTTP streaming (SSE), `auto`
moving prompts to SSE when the WebSocket is refused and back when it returns, prompts rendered
ahead through HTTP sync and played while Waves refuses everything, and the same bounded
reactions to bad answers over SSE as over the WebSocket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from telebridge.simulator.bridge import SIM_PLIVO_AUTH_ID, SIM_PLIVO_AUTH_TOKEN, LocalBridge
from telebridge.simulator.carrier import CallScript
from telebridge.tts.sse import WavesSSEClient
from telebridge.tts.standin import StandinServer
from tests.e2e.conftest import FLOWS, MakeBridge, mulaw_of
from tests.e2e.test_calls import Carrier
from tests.e2e.test_faults import FAILING, apology_at, hello, two_calls
from tests.outbound.fixtures import run_cli

GREETING = "Hello from the test line."
PLIVO = Carrier("plivo")
VONAGE = Carrier("vonage", 16000)
both_carriers = pytest.mark.parametrize("carrier", [PLIVO, VONAGE], ids=["plivo", "vonage"])


def settings_for(tmp_path: Path, standin: StandinServer, **overrides: Any) -> dict[str, Any]:
    """A bridge that assembles its own Waves client (as `telebridge serve` does)."""
    return {
        "waves_api_key": standin.api_key,
        "waves_url": standin.url,
        "telebridge_flows_dir": FLOWS,
        "telebridge_flow": "greet",
        "telebridge_db": tmp_path / "calls.db",
        "telebridge_mark_timeout": 2.0,
        "telebridge_cache_mb": 0,  # every prompt goes to Waves: the transport is what is tested
        **overrides,
    }


def spoken_over_http(standin: StandinServer, text: str) -> int:
    return sum(1 for r in standin.http_requests if text in str((r["body"] or {}).get("text")))


def spoken_over_ws(standin: StandinServer, text: str) -> int:
    return sum(1 for r in standin.requests if text in str(r.get("text")))


def metric(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


@both_carriers
async def test_calls_over_sse_hear_exactly_what_waves_made(
    tmp_path: Path, standin: StandinServer, carrier: Carrier
) -> None:
    settings = settings_for(tmp_path, standin, waves_transport="sse", **carrier.settings())
    async with LocalBridge(**settings) as lb:
        results = await asyncio.gather(*(lb.run(carrier.call(lb)) for _ in range(3)))
        metrics = (await lb.http.get(f"{lb.url}/metrics")).text
    for result in results:
        assert result.violations == []
        assert result.heard == carrier.audio(GREETING)
    assert standin.requests == []  # no WebSocket request at all
    assert spoken_over_http(standin, GREETING) >= 3
    assert metric(metrics, 'telebridge_waves_transport{transport="sse"}') == 1.0


@both_carriers
async def test_auto_speaks_over_sse_while_the_websocket_is_refused_then_goes_back(
    tmp_path: Path, standin: StandinServer, carrier: Carrier
) -> None:
    standin.faults.refuse_status = 503  # a proxy that refuses upgrades: not the key
    settings = settings_for(tmp_path, standin, waves_transport="auto", **carrier.settings())
    async with LocalBridge(**settings) as lb:
        first = await lb.run(carrier.call(lb))
        assert first.violations == []
        assert first.heard == carrier.audio(GREETING)
        assert spoken_over_http(standin, GREETING) >= 1
        assert standin.requests == []
        metrics = (await lb.http.get(f"{lb.url}/metrics")).text
        assert metric(metrics, 'telebridge_waves_transport{transport="sse"}') == 1.0
        assert metric(metrics, 'telebridge_waves_transport_switches_total{to="sse"}') == 1.0

        standin.faults.refuse_status = None  # the WebSocket works again
        async with asyncio.timeout(10):
            while (
                'telebridge_waves_transport{transport="websocket"} 1.0'
                not in (await lb.http.get(f"{lb.url}/metrics")).text
            ):
                await asyncio.sleep(0.1)
        before = spoken_over_http(standin, GREETING)
        second = await lb.run(carrier.call(lb))
        metrics = (await lb.http.get(f"{lb.url}/metrics")).text
    assert second.heard == carrier.audio(GREETING)
    assert spoken_over_ws(standin, GREETING) >= 1
    assert spoken_over_http(standin, GREETING) == before  # back on the WebSocket
    assert metric(metrics, 'telebridge_waves_transport_switches_total{to="websocket"}') == 1.0


async def test_a_refused_key_is_not_a_transport_failure_in_auto(
    tmp_path: Path, standin: StandinServer
) -> None:
    standin.faults.refuse_status = 401
    async with LocalBridge(**settings_for(tmp_path, standin)) as lb:
        result = await lb.run(lb.plivo_call())
        metrics = (await lb.http.get(f"{lb.url}/metrics")).text
    assert result.heard == b"" and result.ended_by == "transferred"  # ended politely
    assert standin.http_requests == []  # SSE was never tried with a refused key
    assert metric(metrics, 'telebridge_waves_transport_switches_total{to="sse"}') == 0.0


# --- bad answers over SSE get the same bounded reactions as over the WebSocket --------------


@pytest.fixture
async def sse_tts(standin: StandinServer) -> AsyncIterator[WavesSSEClient]:
    async with WavesSSEClient(standin.url, standin.api_key, first_chunk_timeout=1.2) as client:
        yield client


async def test_a_failed_first_try_over_sse_is_retried_and_heard_once(
    make_bridge: MakeBridge, standin: StandinServer, sse_tts: WavesSSEClient
) -> None:
    lb = await make_bridge(telebridge_flow="vars", tts=sse_tts)
    standin.faults.error_message = "synthesis failed"  # a 400 body
    standin.faults.error_count = 1
    standin.faults.only_for = FAILING
    _, failing = await two_calls(lb)
    assert failing.violations == []
    assert failing.heard == hello(FAILING)
    assert spoken_over_http(standin, FAILING) == 2
    assert failing.ended_by == "rest-hangup"


async def test_sse_server_errors_end_the_call_politely_within_3_seconds(
    make_bridge: MakeBridge, standin: StandinServer, sse_tts: WavesSSEClient
) -> None:
    lb = await make_bridge(telebridge_flow="vars", tts=sse_tts)
    standin.faults.error_message = "synthesis failed"
    standin.faults.only_for = FAILING  # every try fails
    _, failing = await two_calls(lb)
    assert failing.heard == b"" and failing.ended_by == "transferred"
    assert apology_at(lb, failing) < 3.0


async def test_http_500_on_sse_ends_the_call_politely(
    make_bridge: MakeBridge, standin: StandinServer, sse_tts: WavesSSEClient
) -> None:
    lb = await make_bridge(telebridge_flow="greet", tts=sse_tts)
    standin.faults.http_status = 500
    result = await lb.run(lb.plivo_call())
    assert result.heard == b"" and result.ended_by == "transferred"
    assert apology_at(lb, result) < 3.0
    assert lb.bridge is not None and lb.bridge.calllog is not None
    await asyncio.sleep(0.2)
    record = await asyncio.to_thread(lb.bridge.calllog.get, "plivo", result.call_id)
    assert record is not None and record.outcome == "error:tts server_error"


async def test_a_truncated_sse_stream_plays_what_came_then_apologises(
    make_bridge: MakeBridge, standin: StandinServer, sse_tts: WavesSSEClient
) -> None:
    lb = await make_bridge(telebridge_flow="vars", tts=sse_tts)
    standin.faults.drop_after_bytes = 8000
    standin.faults.only_for = FAILING
    _, failing = await two_calls(lb)
    assert failing.violations == []
    assert 0 < len(failing.heard) <= 8000 // 2 + 160
    assert hello(FAILING).startswith(failing.heard)
    assert failing.ended_by == "transferred"
    assert apology_at(lb, failing) < 3.0


async def test_sse_down_for_one_call_leaves_the_others_exact(
    make_bridge: MakeBridge, standin: StandinServer, sse_tts: WavesSSEClient
) -> None:
    lb = await make_bridge(telebridge_flow="vars", tts=sse_tts)
    standin.faults.first_chunk_delay = 10.0
    standin.faults.only_for = FAILING
    calls = [lb.plivo_call(CallScript(caller=c)) for c in ("14155550000", FAILING)]
    healthy, failing = await asyncio.gather(*(lb.run(c) for c in calls))
    assert healthy.heard == mulaw_of("Hello 14155550000, this is plivo.")
    assert failing.heard == b"" and failing.ended_by == "transferred"
    assert apology_at(lb, failing) < 3.0


# --- prompts made ahead through HTTP sync --------------------------------------------------


async def test_prompts_rendered_ahead_play_while_waves_refuses_everything(
    tmp_path: Path, standin: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "prompts"
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "TELEBRIDGE_CACHE_DIR": str(folder),
        "TELEBRIDGE_FLOWS_DIR": str(FLOWS),
        "TELEBRIDGE_FLOW": "greet",
        "WAVES_API_KEY": standin.api_key,
        "WAVES_URL": standin.url,
        "PLIVO_AUTH_ID": SIM_PLIVO_AUTH_ID,
        "PLIVO_AUTH_TOKEN": SIM_PLIVO_AUTH_TOKEN,
    }.items():
        monkeypatch.setenv(name, value)
    code, out, err = await asyncio.to_thread(run_cli, ["prompts", "render", "greet"])
    assert code == 0, out + err
    assert out.splitlines()[-1] == "prompts: 1 made, 0 already there, 0 failed"
    assert [r["path"] for r in standin.http_requests] == ["/waves/v1/tts"]
    again = await asyncio.to_thread(run_cli, ["prompts", "render", "greet"])
    assert again[1].splitlines()[-1] == "prompts: 0 made, 1 already there, 0 failed"

    standin.faults.refuse_status = 503  # Waves down on every transport
    standin.faults.http_status = 503
    asked = (len(standin.requests), len(standin.http_requests))
    settings = settings_for(tmp_path, standin, telebridge_cache_dir=folder)
    async with LocalBridge(**settings) as lb:
        result = await lb.run(lb.plivo_call())
    assert result.violations == []
    assert result.heard == mulaw_of(GREETING)
    assert result.ended_by == "rest-hangup"
    # Only start-up's connection attempts: no prompt was asked of Waves.
    assert len(standin.requests) == asked[0]
    assert [r for r in standin.http_requests[asked[1] :] if r["body"]] == []
