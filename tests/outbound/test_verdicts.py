"""What became of an outbound call: carriers' hangup causes as outcomes, and the call log row of
a placed call found by its attempt id."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from telebridge.calllog import CallLog
from telebridge.outbound.verdicts import find_call, hangup_outcome, verdict_of
from tests.outbound.fixtures import FROM, TO


@pytest.mark.parametrize(
    ("carrier", "cause", "outcome"),
    [
        ("plivo", "Busy Line", "busy"),
        ("plivo", "USER_BUSY", "busy"),
        ("plivo", "No Answer", "no-answer"),
        ("plivo", "Ring Timeout Reached", "no-answer"),
        ("plivo", "NO_USER_RESPONSE", "no-answer"),
        ("plivo", "Rejected", "busy"),
        ("plivo", "Invalid Destination Address", "failed"),
        ("plivo", "Normal Hangup", "failed"),  # answered, yet never streamed
        ("vonage", "busy", "busy"),
        ("vonage", "timeout", "no-answer"),
        ("vonage", "unanswered", "no-answer"),
        ("vonage", "cancelled", "no-answer"),
        ("vonage", "rejected", "failed"),
        ("vonage", "failed", "failed"),
        ("vonage", "", "failed"),
    ],
)
def test_hangup_causes_map_to_outcomes(carrier: str, cause: str, outcome: str) -> None:
    assert hangup_outcome(carrier, cause) == outcome


def test_the_call_log_row_is_found_by_its_attempt_id(tmp_path: Path) -> None:
    with CallLog(tmp_path / "calls.db") as log:
        recorder = log.start_call(
            carrier="plivo", call_id="uuid-1", direction="outbound", from_number=FROM,
            to_number=TO, flow="demo", variables={"attempt": "a-1", "direction": "outbound"},
        )  # fmt: skip
        assert find_call(log, "plivo", "a-1", "request-1") is not None
        assert verdict_of(find_call(log, "plivo", "a-1", None)) is None  # type: ignore[arg-type]
        recorder.digits_collected("menu", "1")
        recorder.finish("completed")
        record = find_call(log, "plivo", "a-1", None)
        assert record is not None
        verdict = verdict_of(record)
        assert verdict is not None
        assert (verdict.outcome, verdict.flow_outcome, verdict.digits) == (
            "answered",
            "completed",
            "1",
        )
        assert find_call(log, "vonage", "a-1", None) is None  # another carrier's row
        # Only calls from when the attempt was placed on are searched.
        assert find_call(log, "plivo", "a-1", None, since=time.time() - 60) is not None
        assert find_call(log, "plivo", "a-1", None, since=time.time() + 3600) is None
        assert find_call(log, "plivo", "a-2", None) is None

        # Vonage: found by the uuid create_call answered, before any variables reach the log.
        log.record_hangup("vonage", "leg-1", "busy", 0)
        record = find_call(log, "vonage", "a-3", "leg-1")
        assert record is not None and verdict_of(record) is not None
        assert verdict_of(record).outcome == "busy"  # type: ignore[union-attr]
