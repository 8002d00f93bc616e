"""Tests for recording calls through CallLog and CallRecorder, and reading them back."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from telebridge.calllog import NO_STREAM, CallLog
from telebridge.flows.loader import parse_flow
from telebridge.flows.ports import AgentEnd, AgentLink
from telebridge.flows.runner import FlowRecorder, FlowRunner, SpeechOverrides
from tests.calllog.support import CALL, T0, Clock, count

# --- recording ----------------------------------------------------------------------------

BANK = """\
start: welcome
steps:
  welcome:
    set: {greeting: "Hello {{caller}}"}
    say: "{{greeting}}. Press 1 for your balance."
    gather: {max_digits: 1, timeout: 0.01}
    routes: {"1": pin}
    default: goodbye
  pin:
    say: "Enter your PIN, then hash."
    gather: {max_digits: 8, timeout: 0.01, finish_on_key: "#"}
    next: goodbye
  goodbye:
    say: "Goodbye."
    hangup: true
"""


class ScriptedPort:
    """The least call a FlowRunner needs: keys are pressed as scripted, audio plays at once."""

    def __init__(self, keys: str) -> None:
        self.keys = list(keys)
        self.hung_up = False

    async def say(self, text: str, *, barge_in: bool, overrides: SpeechOverrides) -> None:
        pass

    async def play(self, pcm: bytes, sample_rate: int, *, barge_in: bool) -> None:
        pass

    async def pause(self, seconds: float) -> None:
        pass

    async def wait_played(self) -> bool:
        return True

    def take_digits(self) -> str:
        return ""

    async def next_digit(self, timeout: float) -> str | None:  # noqa: ASYNC109
        return self.keys.pop(0) if self.keys else None

    async def transfer(self, to: str, timeout: float) -> bool:  # noqa: ASYNC109
        return False

    async def hangup(self, reason: str) -> None:
        self.hung_up = True

    async def converse(
        self, link: AgentLink, start: dict[str, Any], *, listen: bool, barge_in: bool
    ) -> AgentEnd:
        raise NotImplementedError


async def test_a_call_run_by_the_flow_runner_is_recorded_and_read_back(
    log: CallLog, clock: Clock
) -> None:
    flow, problems = parse_flow(BANK, "bank")
    assert flow is not None, problems
    variables = {"caller": "+15550001111", "account": "A-7"}
    recorder = log.start_call(**CALL | {"flow": "bank"}, variables=variables)
    as_protocol: FlowRecorder = recorder  # the runner's protocol, checked by mypy
    port = ScriptedPort("1" + "4321#")
    outcome = await FlowRunner(flow, port, variables=variables, recorder=as_protocol).run()
    assert outcome == "hangup"
    recorder.webhook_result("pin", False, "https://crm.example.com/ivr: HTTP 500")
    recorder.webhook_result("pin", True, "HTTP 200")
    recorder.note("tts", first_chunk_ms=120, voice="emily")
    clock.advance(42.5)
    recorder.finish(outcome)

    record = log.get("plivo", "c-1")
    assert record is not None
    assert record.steps == ["welcome", "pin", "goodbye"]
    assert record.digits == "1,4321"  # one entry per gather; the finish key is not a digit
    assert record.variables == {
        "caller": "+15550001111",
        "account": "A-7",
        "greeting": "Hello +15550001111",
    }
    assert [(w["step"], w["ok"], w["detail"]) for w in record.webhooks] == [
        ("pin", False, "https://crm.example.com/ivr: HTTP 500"),
        ("pin", True, "HTTP 200"),
    ]
    assert record.notes == [
        {
            "at": "2024-05-01T09:00:00.000Z",
            "step": "goodbye",
            "kind": "tts",
            "data": {"first_chunk_ms": 120, "voice": "emily"},
        }
    ]
    assert record.outcome == "hangup"
    assert (record.started_at, record.ended_at) == (
        "2024-05-01T09:00:00.000Z",
        "2024-05-01T09:00:42.500Z",
    )
    assert (record.direction, record.from_number, record.to_number, record.flow) == (
        "inbound",
        "+15550001111",
        "+15550002222",
        "bank",
    )
    assert (record.hangup_cause, record.duration) == (None, None)


def test_events_keep_their_order_and_repeats(log: CallLog) -> None:
    recorder = log.start_call(**CALL)
    for step in ["menu", "menu", "hours", "menu", "goodbye"]:
        recorder.step_entered(step)
    recorder.digits_collected("menu", "2")
    recorder.digits_collected("menu", "")
    recorder.digits_collected("menu", "1")
    record = log.get("plivo", "c-1")
    assert record is not None
    assert record.steps == ["menu", "menu", "hours", "menu", "goodbye"]
    assert record.digits == "2,,1"
    assert record.outcome is None and record.ended_at is None  # still going


def test_hangup_after_finish_keeps_the_outcome_and_adds_the_cause(
    log: CallLog, clock: Clock
) -> None:
    log.start_call(**CALL).finish("hangup")
    clock.advance(3)
    log.record_hangup("plivo", "c-1", "NORMAL_CLEARING", 12)
    record = log.get("plivo", "c-1")
    assert record is not None
    assert (record.outcome, record.hangup_cause, record.duration) == (
        "hangup",
        "NORMAL_CLEARING",
        12,
    )
    assert record.ended_at == "2024-05-01T09:00:00.000Z"  # the first end seen


def test_hangup_before_finish_sets_the_end_and_finish_the_outcome(
    log: CallLog, clock: Clock
) -> None:
    recorder = log.start_call(**CALL)
    clock.advance(5)
    log.record_hangup("plivo", "c-1", "ORIGINATOR_CANCEL", 5)
    during = log.get("plivo", "c-1")
    assert during is not None
    assert (during.outcome, during.ended_at) == (None, "2024-05-01T09:00:05.000Z")
    clock.advance(1)
    recorder.finish("caller hung up")
    record = log.get("plivo", "c-1")
    assert record is not None
    assert (record.outcome, record.hangup_cause) == ("caller hung up", "ORIGINATOR_CANCEL")
    assert record.ended_at == "2024-05-01T09:00:05.000Z"


def test_a_call_that_never_streamed_gets_a_row_from_its_hangup(log: CallLog) -> None:
    log.record_hangup(
        "vonage", "v-9", "busy", 0, direction="outbound", from_number="+1", to_number="+2"
    )
    record = log.get("vonage", "v-9")
    assert record is not None
    assert (record.outcome, record.hangup_cause, record.duration) == (NO_STREAM, "busy", 0)
    assert (record.direction, record.from_number, record.to_number) == ("outbound", "+1", "+2")
    assert record.started_at is None
    assert record.ended_at == "2024-05-01T09:00:00.000Z"
    assert log.get("plivo", "v-9") is None  # the key is carrier and call id


def test_a_reconnect_continues_the_same_row(log: CallLog, target: Path | str, clock: Clock) -> None:
    first = log.start_call(**CALL, variables={"caller": "+15550001111"})
    first.step_entered("menu")
    first.vars_set({"tries": "1"})
    clock.advance(10)
    first.finish("stream closed")
    clock.advance(1)
    second = log.start_call(**CALL, variables={"resumed": "yes"})
    during = log.get("plivo", "c-1")
    assert during is not None
    assert (during.outcome, during.ended_at) == (None, None)  # live again
    second.step_entered("menu")
    second.step_entered("goodbye")
    clock.advance(1)
    second.finish("hangup")
    record = log.get("plivo", "c-1")
    assert record is not None
    assert record.steps == ["menu", "menu", "goodbye"]
    assert record.variables == {"caller": "+15550001111", "tries": "1", "resumed": "yes"}
    assert record.started_at == "2024-05-01T09:00:00.000Z"
    assert (record.outcome, record.ended_at) == ("hangup", "2024-05-01T09:00:12.000Z")
    assert [n["kind"] for n in record.notes] == ["reconnected"]
    assert count(target, "SELECT COUNT(*) FROM calls") == 1
    # The same call id on another carrier is another call.
    log.start_call(**CALL | {"carrier": "vonage"})
    assert len(log.list_calls()) == 2


def test_finish_twice_is_a_bug(log: CallLog) -> None:
    recorder = log.start_call(**CALL)
    recorder.finish("hangup")
    with pytest.raises(RuntimeError, match="finish"):
        recorder.finish("hangup")


def test_list_calls_filters_by_time_carrier_flow_and_outcome_prefix(
    log: CallLog, clock: Clock
) -> None:
    calls = [
        ("plivo", "a", "demo", "hangup"),
        ("vonage", "b", "demo", "caller-hangup"),
        ("plivo", "c", "survey", "hangup_50%_done"),  # LIKE's wildcards, matched literally
        ("plivo", "d", "demo", "error:tts"),
    ]
    for carrier, call_id, flow, outcome in calls:
        recorder = log.start_call(**{**CALL, "carrier": carrier, "call_id": call_id, "flow": flow})
        recorder.finish(outcome)
        clock.advance(60)

    def ids(**filters: Any) -> list[str]:
        return [r.call_id for r in log.list_calls(**filters)]

    assert ids() == ["a", "b", "c", "d"]
    assert ids(carrier="plivo") == ["a", "c", "d"]
    assert ids(flow="demo", carrier="plivo") == ["a", "d"]
    assert ids(outcome="hangup") == ["a", "c"]
    assert ids(outcome="hangup_5") == ["c"]
    assert ids(outcome="hangup%") == []
    assert ids(since=T0 + timedelta(seconds=60), until=T0 + timedelta(seconds=180)) == ["b", "c"]
    assert ids(limit=2) == ["c", "d"]


def test_a_timeline_is_every_event_in_time_order(log: CallLog, clock: Clock) -> None:
    assert log.timeline("plivo", CALL["call_id"]) is None
    recorder = log.start_call(**CALL)
    clock.advance(1)
    recorder.step_entered("menu")
    recorder.note("prompt", text="Press 1.", utterance=1)
    clock.advance(1)
    recorder.digits_collected("menu", "1")
    recorder.finish("hangup")
    found = log.timeline("plivo", CALL["call_id"])
    assert found is not None
    assert [(e["kind"], e["step"]) for e in found] == [
        ("started", None), ("step", "menu"), ("note", "menu"), ("digits", "menu"), ("ended", None)
    ]  # fmt: skip
    assert found[2]["note"] == "prompt" and found[2]["data"] == {"text": "Press 1.", "utterance": 1}
    assert found[3]["digits"] == "1" and found[-1]["outcome"] == "hangup"
    assert [e["at"] for e in found] == sorted(e["at"] for e in found)
