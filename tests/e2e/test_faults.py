"""Waves failing under a live call: a bounded reaction, no long dead air, other calls untouched."""

from __future__ import annotations

import asyncio
import logging

import pytest

from telebridge.simulator.carrier import CallScript
from telebridge.tts.standin import StandinServer
from tests.e2e.conftest import MakeBridge, mulaw_of

GREETING = "Hello from the test line."
LONG = (
    "This is a long prompt that keeps talking for several seconds, so that the pacer has "
    "to hold audio back and the lead stays bounded while the carrier plays it out in real time."
)


async def test_a_failed_first_try_is_retried_and_heard_once(
    make_bridge: MakeBridge, standin: StandinServer
) -> None:
    lb = await make_bridge()
    standin.faults.error_message = "synthesis failed"
    standin.faults.error_count = 1
    result = await lb.run(lb.plivo_call())
    assert result.violations == []
    assert result.heard == mulaw_of(GREETING)  # once, not twice
    assert len(standin.requests) == 2
    assert result.ended_by == "rest-hangup"


async def test_waves_down_ends_the_call_politely_within_3_seconds(
    make_bridge: MakeBridge, standin: StandinServer
) -> None:
    lb = await make_bridge()  # the stand-in client waits 1.2 s for a first chunk, as served
    standin.faults.first_chunk_delay = 10.0  # Waves accepts requests but never speaks
    result = await lb.run(lb.plivo_call())

    assert result.heard == b""
    assert result.ended_by == "transferred"
    [update] = [r for r in lb.plivo_api.requests if r.method == "POST"]
    assert update.body["legs"] == "aleg"
    # The apology is spoken by Plivo itself: the bridge serves it as signed XML.
    stream_open = result.stream_opened_at
    assert stream_open is not None and update.at - stream_open < 3.0
    assert "/plivo/transfer?t=" in update.body["aleg_url"]
    assert lb.bridge is not None and lb.bridge.calllog is not None
    await asyncio.sleep(0.2)
    record = await asyncio.to_thread(lb.bridge.calllog.get, "plivo", result.call_id)
    assert record is not None and record.outcome == "error:tts timeout"


async def test_waves_drop_mid_prompt_plays_what_came_then_apologises(
    make_bridge: MakeBridge, standin: StandinServer
) -> None:
    lb = await make_bridge(telebridge_flow="long")
    standin.faults.drop_after_bytes = 8000  # about a quarter second of audio, then the socket dies
    result = await lb.run(lb.plivo_call())
    assert result.violations == []
    # The part Waves produced was played (never repeated), then the carrier took over.
    assert 0 < len(result.heard) <= 8000 // 2 + 160
    assert result.ended_by == "transferred"
    # One request from the call; a second only when the early (answer-time) one had already
    # failed before the stream connected. Either way the caller hears one partial prompt.
    assert len(standin.requests) <= 2
    assert mulaw_of(LONG).startswith(result.heard)


async def test_other_calls_are_untouched_by_a_failing_one(
    make_bridge: MakeBridge, standin: StandinServer
) -> None:
    lb = await make_bridge(telebridge_flow="vars")
    # Synthesis fails for one caller's text only: the others must hear exact audio.
    standin.faults.error_message = "synthesis failed"
    standin.faults.error_only_for = "14155550002"
    calls = [lb.plivo_call(CallScript(caller=f"1415555{i:04d}")) for i in range(4)]
    results = await asyncio.gather(*(lb.run(c) for c in calls))
    for i, result in enumerate(results):
        if i == 2:
            assert result.heard == b"" and result.ended_by == "transferred"
        else:
            assert result.violations == []
            assert result.heard == mulaw_of(f"Hello 1415555{i:04d}, this is plivo.")
            assert result.ended_by == "rest-hangup"


async def test_a_refused_key_ends_calls_politely_is_said_once_and_not_asked_again(
    make_bridge: MakeBridge, standin: StandinServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Refused from the start: no pre-warmed socket slips past the handshake.
    standin.faults.refuse_status = 401  # a configuration error: asking again cannot help
    with caplog.at_level(logging.WARNING):
        lb = await make_bridge()
        refused_at_start = standin.refused
        results = [await lb.run(lb.plivo_call()) for _ in range(2)]
    for result in results:
        assert result.heard == b"" and result.ended_by == "transferred"
        assert result.stream_opened_at is not None
    updates = [r for r in lb.plivo_api.requests if r.method == "POST"]
    assert len(updates) == 2
    for result, update in zip(results, updates, strict=True):
        assert result.stream_opened_at is not None
        assert update.at - result.stream_opened_at < 1.0  # no dead air spent on retries
    assert standin.refused == refused_at_start  # the calls never even knocked
    loud = [r for r in caplog.records if r.levelno >= logging.CRITICAL]
    assert len(loud) == 1 and "HTTP 401" in loud[0].getMessage()
    ready = await lb.http.get(f"{lb.url}/readyz")
    assert ready.status_code == 503 and ready.json()["reason"] == "waves refuses the key"
    metrics = (await lb.http.get(f"{lb.url}/metrics")).text
    assert "telebridge_waves_key_refused 1.0" in metrics


async def test_over_the_waves_limit_a_call_waits_out_the_back_off_and_is_heard(
    make_bridge: MakeBridge, standin: StandinServer
) -> None:
    standin.faults.refuse_status = 429  # the pre-warm at start is refused: a back-off begins
    standin.faults.retry_after = 0.2
    lb = await make_bridge()
    assert lb.bridge is not None
    calls = lb.bridge.calls

    async def lift() -> None:
        # Waves frees a unit while the bridge backs off: the waiting request goes through.
        while not calls:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)
        standin.faults.refuse_status = None

    lifter = asyncio.create_task(lift())
    result = await lb.run(lb.plivo_call())
    await lifter
    assert result.heard == mulaw_of(GREETING)
    assert result.ended_by == "rest-hangup"
    metrics = (await lb.http.get(f"{lb.url}/metrics")).text
    # The call waited for the back-off instead of hammering Waves with a doomed request.
    assert "telebridge_waves_admission_waits 1.0" in metrics
    assert 'telebridge_waves_errors_total{kind="rate_limited"}' not in metrics


async def test_waves_over_its_limit_for_good_ends_that_call_politely_others_are_heard(
    make_bridge: MakeBridge, standin: StandinServer
) -> None:
    lb = await make_bridge(telebridge_flow="vars")
    # Every request for one caller's text is rejected as over the limit (an error frame);
    # the shared back-off delays the other calls' requests but must not spoil their audio.
    standin.faults.error_message = "Too many concurrent requests: rate limit exceeded"
    standin.faults.error_only_for = "14155550001"
    calls = [lb.plivo_call(CallScript(caller=f"1415555{i:04d}")) for i in range(3)]
    results = await asyncio.gather(*(lb.run(c) for c in calls))
    limited = results[1]
    assert limited.heard == b"" and limited.ended_by == "transferred"
    [update] = [r for r in lb.plivo_api.requests if r.method == "POST"]
    assert limited.stream_opened_at is not None
    assert update.at - limited.stream_opened_at < 3.0
    tries = [r for r in standin.requests if "14155550001" in str(r.get("text"))]
    assert 1 <= len(tries) <= 3  # bounded: backed off, never hammered
    for i in (0, 2):
        assert results[i].violations == []
        assert results[i].heard == mulaw_of(f"Hello 1415555{i:04d}, this is plivo.")
        assert results[i].ended_by == "rest-hangup"
