"""Waves failing under a live call: a bounded reaction, no long dead air, other calls untouched."""

from __future__ import annotations

import asyncio
import logging

import pytest

from telebridge.simulator.bridge import LocalBridge
from telebridge.simulator.carrier import CallScript, SimResult
from telebridge.tts.standin import StandinServer
from tests.e2e.conftest import MakeBridge, mulaw_of

GREETING = "Hello from the test line."


FAILING = "14155550001"  # the caller whose prompts the stand-in fails; 14155550000 is healthy


def hello(caller: str) -> bytes:
    return mulaw_of(f"Hello {caller}, this is plivo.")


async def two_calls(lb: LocalBridge) -> tuple[SimResult, SimResult]:
    """A healthy call and a failing one, side by side, on the `vars` flow (text per caller)."""
    healthy, failing = await asyncio.gather(
        lb.run(lb.plivo_call(CallScript(caller="14155550000"))),
        lb.run(lb.plivo_call(CallScript(caller=FAILING))),
    )
    # Whatever happened to the other call, this one heard exactly its prompt.
    assert healthy.violations == []
    assert healthy.heard == hello("14155550000")
    assert healthy.ended_by == "rest-hangup"
    return healthy, failing


def apology_at(lb: LocalBridge, failing: SimResult) -> float:
    """Seconds from the failing call's stream opening to the carrier being asked to apologise."""
    [update] = [r for r in lb.plivo_api.requests if r.method == "POST"]
    assert update.body["legs"] == "aleg"
    # The apology is spoken by Plivo itself: the bridge serves it as signed XML.
    assert "/plivo/transfer?t=" in update.body["aleg_url"]
    assert failing.stream_opened_at is not None
    return update.at - failing.stream_opened_at


async def test_a_failed_first_try_is_retried_and_heard_once(
    make_bridge: MakeBridge, standin: StandinServer
) -> None:
    lb = await make_bridge(telebridge_flow="vars")
    standin.faults.error_message = "synthesis failed"
    standin.faults.error_count = 1
    standin.faults.only_for = FAILING
    _, failing = await two_calls(lb)
    assert failing.violations == []
    assert failing.heard == hello(FAILING)  # once, not twice
    assert len([r for r in standin.requests if FAILING in str(r.get("text"))]) == 2
    assert failing.ended_by == "rest-hangup"


async def test_waves_down_ends_the_call_politely_within_3_seconds(
    make_bridge: MakeBridge, standin: StandinServer
) -> None:
    lb = await make_bridge(telebridge_flow="vars")  # the client waits 1.2 s for a first chunk
    standin.faults.first_chunk_delay = 10.0  # Waves accepts the requests but never speaks
    standin.faults.only_for = FAILING
    _, failing = await two_calls(lb)
    assert failing.heard == b""
    assert failing.ended_by == "transferred"
    assert apology_at(lb, failing) < 3.0
    assert lb.bridge is not None and lb.bridge.calllog is not None
    await asyncio.sleep(0.2)
    record = await asyncio.to_thread(lb.bridge.calllog.get, "plivo", failing.call_id)
    assert record is not None and record.outcome == "error:tts timeout"


async def test_waves_drop_mid_prompt_plays_what_came_then_apologises(
    make_bridge: MakeBridge, standin: StandinServer
) -> None:
    lb = await make_bridge(telebridge_flow="vars")
    standin.faults.drop_after_bytes = 8000  # about a quarter second of audio, then the socket dies
    standin.faults.only_for = FAILING
    _, failing = await two_calls(lb)
    assert failing.violations == []
    # The part Waves produced was played (never repeated), then the carrier took over.
    assert 0 < len(failing.heard) <= 8000 // 2 + 160
    assert hello(FAILING).startswith(failing.heard)
    assert failing.ended_by == "transferred"
    assert apology_at(lb, failing) < 3.0
    # One request from the call; a second only when the early (answer-time) one had already
    # failed before the stream connected. Either way the caller hears one partial prompt.
    assert len([r for r in standin.requests if FAILING in str(r.get("text"))]) <= 2


async def test_other_calls_are_untouched_by_a_failing_one(
    make_bridge: MakeBridge, standin: StandinServer
) -> None:
    lb = await make_bridge(telebridge_flow="vars")
    # Synthesis fails for one caller's text only: the others must hear exact audio.
    standin.faults.error_message = "synthesis failed"
    standin.faults.only_for = "14155550002"
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
    # the shared back-off delays the other call's request but must not spoil its audio.
    standin.faults.error_message = "Too many concurrent requests: rate limit exceeded"
    standin.faults.only_for = FAILING
    _, limited = await two_calls(lb)
    assert limited.heard == b"" and limited.ended_by == "transferred"
    assert apology_at(lb, limited) < 3.0
    tries = [r for r in standin.requests if FAILING in str(r.get("text"))]
    assert 1 <= len(tries) <= 3  # bounded: backed off, never hammered
