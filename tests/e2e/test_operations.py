"""Operating the bridge: call limits, readiness, metrics, draining, SIGTERM and clean logs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from telebridge.logs import redact
from telebridge.simulator.bridge import SIM_PLIVO_AUTH_ID, SIM_PLIVO_AUTH_TOKEN, LocalBridge
from telebridge.simulator.carrier import CallScript
from telebridge.simulator.plivo import PlivoCall
from telebridge.simulator.serving import bind_loopback
from telebridge.tts.standin import StandinServer
from tests.e2e.conftest import FLOWS, MakeBridge, mulaw_of

LONG = (
    "This is a long prompt that keeps talking for several seconds, so that the pacer has "
    "to hold audio back and the lead stays bounded while the carrier plays it out in real time."
)


async def released(lb: LocalBridge) -> None:
    assert lb.bridge is not None
    for _ in range(100):
        if not lb.bridge.calls:
            return
        await asyncio.sleep(0.02)
    assert lb.bridge.calls == {}


async def _streaming(lb_calls: dict[str, object]) -> None:
    for _ in range(200):
        if lb_calls:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the call never started streaming")


async def test_beyond_max_calls_the_answer_is_a_polite_busy(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_flow="long", telebridge_max_calls=1)
    assert lb.bridge is not None
    first = asyncio.create_task(lb.run(lb.plivo_call(CallScript(hangup_after=2.0))))
    await _streaming(lb.bridge.calls)  # type: ignore[arg-type]
    second = lb.plivo_call()
    result = await lb.run(second)
    assert result.stream_opened_at is None
    assert '<Hangup reason="busy"/>' in second.answer_xml and "<Speak>" in second.answer_xml
    vonage = await lb.run(lb.vonage_call())
    assert vonage.stream_opened_at is None and vonage.answer_status == 200
    await first
    metrics = (await lb.http.get(f"{lb.url}/metrics")).text
    assert 'telebridge_calls_refused_total{carrier="plivo",reason="capacity"} 1.0' in metrics


async def test_metrics_and_readiness(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_flow="menu")
    await lb.run(lb.plivo_call(CallScript(digits="1", press_after=0.4)))
    await asyncio.sleep(0.1)
    ready = await lb.http.get(f"{lb.url}/readyz")
    assert ready.status_code == 200
    text = (await lb.http.get(f"{lb.url}/metrics")).text
    assert 'telebridge_calls_total{carrier="plivo",outcome="hangup"} 1.0' in text
    assert 'telebridge_barge_ins_total{carrier="plivo"} 1.0' in text
    assert 'telebridge_time_to_first_audio_seconds_count{carrier="plivo"} 1.0' in text
    assert 'telebridge_added_latency_seconds_count{carrier="plivo"} 3.0' in text
    assert 'telebridge_active_calls{carrier="plivo"} 0.0' in text
    assert lb.bridge is not None
    lb.bridge.draining = True
    assert (await lb.http.get(f"{lb.url}/readyz")).status_code == 503


async def test_drain_lets_a_call_finish_then_refuses_new_ones(make_bridge: MakeBridge) -> None:
    lb = await make_bridge()
    assert lb.bridge is not None
    call = asyncio.create_task(lb.run(lb.plivo_call()))
    await _streaming(lb.bridge.calls)  # type: ignore[arg-type]
    drain = asyncio.create_task(lb.bridge.drain(timeout=10))
    late = lb.plivo_call()
    assert (await lb.run(late)).stream_opened_at is None
    result = await call
    await drain
    assert result.heard == mulaw_of("Hello from the test line.")  # finished, not cut
    assert result.ended_by == "rest-hangup"


async def test_drain_timeout_ends_a_long_call_after_its_prompt(
    make_bridge: MakeBridge, standin: StandinServer
) -> None:
    lb = await make_bridge(telebridge_flow="long")
    assert lb.bridge is not None
    # Waves speaks slowly enough that the drain timeout falls in the middle of synthesis.
    standin.faults.chunk_interval = 0.05
    call = asyncio.create_task(lb.run(lb.plivo_call()))
    await _streaming(lb.bridge.calls)  # type: ignore[arg-type]
    await lb.bridge.drain(timeout=0.5)
    result = await call
    await released(lb)
    # Shutdown never cuts a prompt: it played to its end, then the call was hung up.
    assert result.heard == mulaw_of(LONG)
    assert result.ended_by == "rest-hangup"


def test_redact_removes_tokens_keys_and_bearers() -> None:
    line = (
        "WebSocket /plivo/stream?token=abc.def&x=1 Authorization: Bearer eyJhbGc.x.y "
        "key sk_live_1234567890 /plivo/transfer?t=zzz"
    )
    cleaned = redact(line)
    for secret in ("abc.def", "eyJhbGc", "sk_live_1234567890", "zzz"):
        assert secret not in cleaned
    assert "x=1" in cleaned


async def test_serve_drains_on_sigterm_and_never_logs_tokens(tmp_path: Path) -> None:
    sock = bind_loopback()
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WAVES_", "PLIVO_", "VONAGE_", "TELEBRIDGE_"))
    }
    env.update(
        TELEBRIDGE_PUBLIC_URL=url,
        TELEBRIDGE_PORT=str(port),
        TELEBRIDGE_HOST="127.0.0.1",
        TELEBRIDGE_FLOWS_DIR=str(FLOWS),
        TELEBRIDGE_FLOW="greet",
        TELEBRIDGE_DB=str(tmp_path / "calls.db"),
        PLIVO_AUTH_ID=SIM_PLIVO_AUTH_ID,
        PLIVO_AUTH_TOKEN=SIM_PLIVO_AUTH_TOKEN,
        PLIVO_API_URL="http://127.0.0.1:9",  # nothing there: hangup falls back to closing
        TELEBRIDGE_LOG_FORMAT="json",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "telebridge", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                try:
                    if (await http.get(f"{url}/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
            call = PlivoCall(url, SIM_PLIVO_AUTH_TOKEN, CallScript())
            running = asyncio.create_task(call.run(http))
            while call.result.first_audio_at is None and not running.done():
                await asyncio.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            busy = PlivoCall(url, SIM_PLIVO_AUTH_TOKEN, CallScript())
            assert (await busy.run(http)).stream_opened_at is None
            assert "busy" in busy.answer_xml
            result = await asyncio.wait_for(running, 20)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate()
    log = err.decode()
    assert code == 0, log
    assert result.heard == mulaw_of("Hello from the test line.")
    assert "offline synthesizer" in log
    assert "start-up objects out of the garbage collector" in log  # serve froze its heap
    assert "/plivo/stream" in log and "[redacted]" in log
    token = next(e for e in call.answer_xml.split("token=")[1:])
    assert token.split("<")[0][:20] not in log
