"""Tests for reading calls back: order, filters by time and limits, unknown calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from telebridge.calllog import CallLog
from tests.calllog.support import CALL, T0, Clock

# --- listing ------------------------------------------------------------------------------


@pytest.fixture
def three_calls(log: CallLog, clock: Clock) -> CallLog:
    """Calls at 09:00, 10:00 (never streamed: counted from its end) and 11:00."""
    log.start_call(**CALL | {"call_id": "a"}).finish("hangup")
    clock.advance(3600)
    log.record_hangup("vonage", "b", "busy", 0)
    clock.advance(3600)
    log.start_call(**CALL | {"call_id": "c"}).finish("transfer")
    return log


def test_list_calls_is_oldest_first(three_calls: CallLog) -> None:
    assert [r.call_id for r in three_calls.list_calls()] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("since", "limit", "expected"),
    [
        (T0 + timedelta(minutes=30), None, ["b", "c"]),
        (T0 + timedelta(hours=1), None, ["b", "c"]),  # at or after
        (T0 + timedelta(hours=2, seconds=1), None, []),
        (datetime(2024, 5, 1, 9, 30), None, ["b", "c"]),  # naive: UTC
        (datetime(2024, 5, 1, 11, 30, tzinfo=UTC).astimezone(), None, []),  # any zone
        (None, 2, ["b", "c"]),  # the newest
        (None, 0, []),
        (T0, 1, ["c"]),
    ],
)
def test_list_calls_filters(
    three_calls: CallLog, since: datetime | None, limit: int | None, expected: list[str]
) -> None:
    assert [r.call_id for r in three_calls.list_calls(since=since, limit=limit)] == expected


def test_get_of_an_unknown_call_is_none(log: CallLog) -> None:
    assert log.get("plivo", "nope") is None
    assert log.list_calls() == []


def test_find_by_variable_matches_the_value_carrier_and_time(log: CallLog, clock: Clock) -> None:
    log.start_call(**CALL | {"call_id": "a"}, variables={"attempt": "A-1", "other": "x"})
    clock.advance(3600)
    log.record_hangup("vonage", "b", "busy", 0, variables={"attempt": "A-1"})
    clock.advance(3600)
    log.start_call(**CALL | {"call_id": "c"}, variables={"attempt": "A-2"})
    assert [r.call_id for r in log.find_by_variable("attempt", "A-1")] == ["a", "b"]
    assert [r.call_id for r in log.find_by_variable("attempt", "A-1", carrier="vonage")] == ["b"]
    later = T0 + timedelta(minutes=30)
    assert [r.call_id for r in log.find_by_variable("attempt", "A-1", since=later)] == ["b"]
    assert log.find_by_variable("attempt", "A-3") == []
    assert log.find_by_variable("missing", "x") == []
