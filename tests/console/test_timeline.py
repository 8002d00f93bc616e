"""A call's timeline: `CallLog.timeline` over a real log file (with a clock the test moves), and
the console's view of it (prompts joined with their time to first byte, notes by kind)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from telebridge.calllog import CallLog
from telebridge.console.routes import console_timeline


def test_the_timeline_holds_every_event_in_order_with_its_time(tmp_path: Path) -> None:
    now = [datetime(2024, 5, 1, 9, 30, tzinfo=UTC)]

    def tick() -> datetime:
        now[0] += timedelta(milliseconds=250)
        return now[0]

    with CallLog(tmp_path / "calls.db", clock=tick) as log:
        assert log.timeline("plivo", "c1") is None
        recorder = log.start_call(carrier="plivo", call_id="c1", direction="inbound",
                                  from_number="14155550100", to_number="14155550199",
                                  flow="menu")  # fmt: skip
        recorder.step_entered("menu")
        recorder.note("prompt", text="Press 1.", utterance=1)
        recorder.note("tts_first_byte", utterance=1, ms=120.5)
        recorder.note("barge_in")
        recorder.digits_collected("menu", "1")
        recorder.step_entered("hook")
        recorder.webhook_result("hook", False, "timed out")
        recorder.vars_set({"tier": "gold"})
        recorder.note("tts_first_byte", utterance=2, ms=80.0)  # streamed: no prompt event
        recorder.note("played", mark="utterance-2")
        recorder.note("reconnected_somewhere", detail="x")
        recorder.note("hangup", reason="done")
        recorder.finish("hangup")
        raw = log.timeline("plivo", "c1")
        assert log.timeline("vonage", "c1") is None
    assert raw is not None
    assert [e["kind"] for e in raw] == [
        "started", "step", "note", "note", "note", "digits", "step", "webhook", "vars", "note",
        "note", "note", "note", "ended",
    ]  # fmt: skip
    assert raw[0] == {"at": "2024-05-01T09:30:00.250Z", "kind": "started", "step": None,
                      "direction": "inbound", "from": "14155550100", "to": "14155550199",
                      "flow": "menu"}  # fmt: skip
    assert raw[2] == {"at": "2024-05-01T09:30:00.750Z", "kind": "note", "step": "menu",
                      "note": "prompt", "data": {"text": "Press 1.", "utterance": 1}}  # fmt: skip
    assert raw[-1]["kind"] == "ended" and raw[-1]["outcome"] == "hangup"
    times = [e["at"] for e in raw]
    assert times == sorted(times) and len(set(times)) == len(times)

    shown = console_timeline(raw)
    assert [e["kind"] for e in shown] == [
        "started", "step", "prompt", "barge_in", "digits", "step", "webhook", "note",
        "prompt", "mark", "note", "hangup", "ended",
    ]  # fmt: skip
    assert shown[2] == {"at": "2024-05-01T09:30:00.750Z", "step": "menu", "kind": "prompt",
                        "text": "Press 1.", "utterance": 1, "ttfb_ms": 120.5}  # fmt: skip
    assert shown[4]["digits"] == "1"
    assert shown[6]["ok"] is False and shown[6]["detail"] == "timed out"
    assert shown[7]["note"] == "vars" and shown[7]["values"] == {"tier": "gold"}
    assert shown[8]["text"] is None and shown[8]["ttfb_ms"] == 80.0
    assert shown[9]["mark"] == "utterance-2"
    assert shown[10] == {"at": shown[10]["at"], "step": "hook", "kind": "note",
                         "note": "reconnected_somewhere", "detail": "x"}  # fmt: skip
    assert shown[11]["reason"] == "done"


def test_a_prompt_that_never_spoke_has_no_time_to_first_byte(tmp_path: Path) -> None:
    with CallLog(tmp_path / "calls.db") as log:
        recorder = log.start_call(carrier="vonage", call_id="v1", direction="inbound",
                                  from_number="1", to_number="2", flow="greet")  # fmt: skip
        recorder.note("prompt", text="Hello.", utterance=1)
        recorder.note("tts_error", error="timeout", attempt=1)
        raw = log.timeline("vonage", "v1")
    assert raw is not None
    prompt, error = console_timeline(raw)[1:]
    assert prompt["kind"] == "prompt" and prompt["ttfb_ms"] is None
    assert error["kind"] == "note" and error["note"] == "tts_error" and error["attempt"] == 1
    assert raw[-1]["kind"] == "note"  # still live: no end yet
