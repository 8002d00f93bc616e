"""What became of an outbound call: its outcome (`Verdict`) as the bridge's call log tells it,
and the call log row of a placed call, found by its attempt id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from telebridge.calllog import NO_STREAM, CallLog, CallRecord

OUTCOMES = ("answered", "busy", "no-answer", "failed")
UNKNOWN = "unknown"  # no final word from the bridge in time
CLOCK_MARGIN_S = 120.0  # the bridge may run on another host whose clock is a little off


@dataclass(frozen=True, slots=True)
class Verdict:
    """An outbound call's result as the bridge's call log tells it."""

    outcome: str  # one of OUTCOMES, or UNKNOWN
    flow_outcome: str = ""  # how the flow ended (answered calls)
    digits: str = ""
    hangup_cause: str = ""
    call_id: str = ""  # the carrier's call id (Plivo CallUUID, Vonage uuid)
    detail: str = ""


def hangup_outcome(carrier: str, cause: str | None) -> str:
    """busy / no-answer / failed for a call that ended without ever streaming."""
    words = re.sub(r"[^a-z]+", " ", (cause or "").lower())
    if "busy" in words:
        return "busy"
    if carrier == "plivo" and ("rejected" in words or "declined" in words):
        return "busy"  # the person refused the call (Vonage's "rejected" is its own refusal)
    if any(w in words for w in ("no answer", "unanswered", "timeout", "no user", "cancel")):
        return "no-answer"
    return "failed"  # unreachable numbers, carrier refusals, answered but never streamed


def verdict_of(record: CallRecord) -> Verdict | None:
    """The result a call log row records, or None while the call is still going."""
    if record.outcome is None:
        return None
    cause = record.hangup_cause or ""
    if record.outcome == NO_STREAM and record.started_at is None:
        return Verdict(hangup_outcome(record.carrier, cause), hangup_cause=cause,
                       call_id=record.call_id)  # fmt: skip
    return Verdict("answered", record.outcome, record.digits, cause, record.call_id)


def find_call(
    log: CallLog, carrier: str, attempt: str, request_id: str | None, since: float | None = None
) -> CallRecord | None:
    """The call log row of the call placed with variable `attempt` (blocks: reads the file).

    Rows are found by the attempt id in their variables; a Vonage row also by its uuid, which
    Vonage's create answers (Plivo's create answers a request id, never the CallUUID). `since`
    (epoch seconds, when the call was placed) keeps the search to calls from then on.
    """
    after = None if since is None else datetime.fromtimestamp(since - CLOCK_MARGIN_S, UTC)
    found = log.find_by_variable("attempt", attempt, carrier=carrier, since=after)
    if not found and carrier == "vonage" and request_id:
        one = log.get(carrier, request_id)
        found = [one] if one is not None else []
    final = [r for r in found if verdict_of(r) is not None]
    return (final or found)[-1] if found else None
