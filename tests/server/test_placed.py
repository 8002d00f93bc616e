"""The calls placed through the call API: queued until their stream starts (live, with the
carrier's call id), then ended; listed as queued only for `QUEUED_FOR_S`; forgotten after
`keep` seconds or beyond `max_calls`, all on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from telebridge.server.placed import QUEUED_FOR_S, PlacedCall, PlacedCalls, further

TO, FROM = "+14155550123", "+14155550199"


class FakeClock:
    def __init__(self, now: float = 10_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def place(calls: PlacedCalls, n: int) -> PlacedCall:
    return calls.add(f"req-{n}", f"att-{n}", "plivo", TO, FROM, "welcome")


def test_a_placed_call_is_queued_then_live_then_ended() -> None:
    clock = FakeClock()
    calls = PlacedCalls(clock=clock)
    before = datetime.now(UTC)
    placed = calls.add("req-1", "att-1", "vonage", TO, FROM, "survey")
    after = datetime.now(UTC)
    assert (placed.state, placed.call_id, placed.at) == ("queued", None, 10_000.0)
    placed_at = datetime.fromisoformat(placed.placed_at)
    assert placed_at.utcoffset() == timedelta(0)
    assert before - timedelta(milliseconds=1) <= placed_at <= after
    assert calls.get("req-1") is placed
    assert calls.by_attempt("att-1") is placed
    assert calls.queued() == [placed]
    assert placed.as_api() == {
        "call_id": "req-1", "request_id": "req-1", "carrier": "vonage", "from": FROM, "to": TO,
        "flow": "survey", "step": None, "started_at": None, "placed_at": placed.placed_at,
        "state": "queued",
    }  # fmt: skip

    calls.streaming("att-1", "CA-77")
    assert (placed.state, placed.call_id) == ("live", "CA-77")
    assert placed.as_api()["call_id"] == "CA-77"
    assert placed.as_api()["state"] == "live"
    assert calls.queued() == []

    calls.ended("att-1", "CA-other")  # the id the stream gave stays
    assert (placed.state, placed.call_id) == ("ended", "CA-77")
    assert calls.queued() == []
    assert calls.get("req-1") is placed


def test_a_call_that_never_streamed_ends_with_the_callbacks_call_id() -> None:
    calls = PlacedCalls(clock=FakeClock())
    placed = place(calls, 1)
    calls.ended("att-1", "CA-9")
    assert (placed.state, placed.call_id) == ("ended", "CA-9")
    assert placed.as_api()["call_id"] == "CA-9"


@pytest.mark.parametrize("call_id", [None, ""])
def test_a_call_that_ended_without_an_id_keeps_the_request_id(call_id: str | None) -> None:
    calls = PlacedCalls(clock=FakeClock())
    placed = place(calls, 1)
    calls.ended("att-1", call_id)
    assert (placed.state, placed.call_id) == ("ended", None)
    assert placed.as_api()["call_id"] == "req-1"


@pytest.mark.parametrize("attempt", [None, "", "att-unknown"])
def test_callbacks_for_unknown_attempts_change_nothing(attempt: str | None) -> None:
    calls = PlacedCalls(clock=FakeClock())
    placed = place(calls, 1)
    calls.streaming(attempt, "CA-1")
    calls.ended(attempt, "CA-1")
    assert (placed.state, placed.call_id) == ("queued", None)
    assert calls.by_attempt(attempt) is None


def test_by_attempt_and_get_find_each_call() -> None:
    calls = PlacedCalls(clock=FakeClock())
    first, second = place(calls, 1), place(calls, 2)
    assert (calls.by_attempt("att-1"), calls.by_attempt("att-2")) == (first, second)
    assert (calls.get("req-1"), calls.get("req-2")) == (first, second)
    assert calls.get("att-1") is None
    assert calls.by_attempt("req-1") is None


def test_queued_lists_only_recent_calls_that_neither_streamed_nor_ended() -> None:
    clock = FakeClock()
    calls = PlacedCalls(clock=clock)
    old = place(calls, 1)
    clock.now += 100.0
    live, ended, fresh = place(calls, 2), place(calls, 3), place(calls, 4)
    calls.streaming("att-2", "CA-2")
    calls.ended("att-3", "CA-3")
    assert calls.queued() == [old, fresh]
    clock.now += QUEUED_FOR_S - 100.0  # `old` exactly QUEUED_FOR_S ago: still listed
    assert calls.queued() == [old, fresh]
    clock.now += 0.001
    assert calls.queued() == [fresh]
    assert calls.get("req-1") is old  # no longer listed, still found
    assert {live.state, ended.state} == {"live", "ended"}


def test_calls_are_forgotten_keep_seconds_after_placing() -> None:
    clock = FakeClock()
    calls = PlacedCalls(keep=600.0, clock=clock)
    first = place(calls, 1)
    clock.now += 300.0
    second = place(calls, 2)
    calls.streaming("att-2", "CA-2")
    clock.now += 300.0  # `first` exactly `keep` old
    assert calls.queued() == []  # (both past QUEUED_FOR_S or live)
    assert calls.get("req-1") is first
    clock.now += 0.001
    calls.queued()  # any listing or placing expires
    assert calls.get("req-1") is None
    assert calls.by_attempt("att-1") is None
    assert calls.get("req-2") is second
    clock.now += 300.0
    place(calls, 3)
    assert (calls.get("req-2"), calls.by_attempt("att-2")) == (None, None)
    assert calls.get("req-3") is not None


def test_a_callback_for_a_forgotten_call_is_ignored() -> None:
    clock = FakeClock()
    calls = PlacedCalls(keep=60.0, clock=clock)
    placed = place(calls, 1)
    clock.now += 61.0
    calls.queued()
    calls.ended("att-1", "CA-1")
    assert (placed.state, calls.by_attempt("att-1")) == ("queued", None)


def test_at_most_max_calls_are_kept() -> None:
    calls = PlacedCalls(max_calls=3, clock=FakeClock())
    for n in range(1, 6):
        place(calls, n)
    kept = [n for n in range(1, 6) if calls.get(f"req-{n}") is not None]
    assert kept == [3, 4, 5]
    assert calls.by_attempt("att-2") is None
    assert [p.request_id for p in calls.queued()] == ["req-3", "req-4", "req-5"]


def test_listeners_hear_of_every_api_placed_call_placed_here_or_not() -> None:
    calls = PlacedCalls(clock=FakeClock())
    heard: list[tuple[str, str, str | None]] = []
    calls.listen(lambda attempt, state, call_id: heard.append((attempt, state, call_id)))
    calls.add("req-1", "api-1", "plivo", TO, FROM, "welcome")
    calls.streaming("api-1", "CA-1")
    calls.streaming("api-elsewhere", "CA-2")  # placed by another process of the cluster
    calls.ended("api-elsewhere", "CA-2")
    calls.streaming("campaign-7", "CA-3")  # not the call API's: nobody to tell
    calls.streaming(None, "CA-4")
    assert heard == [
        ("api-1", "live", "CA-1"),
        ("api-elsewhere", "live", "CA-2"),
        ("api-elsewhere", "ended", "CA-2"),
    ]
    assert calls.by_attempt("api-elsewhere") is None


def test_the_record_further_along_wins_with_the_call_id_either_knows() -> None:
    calls = PlacedCalls(clock=FakeClock())
    local = calls.add("req-1", "api-1", "plivo", TO, FROM, "welcome")
    shared = PlacedCall.from_record({**local.as_record(), "request_id": "req-1"}, 5.0)
    assert (shared.request_id, shared.state, shared.to, shared.from_) == (
        "req-1",
        "queued",
        TO,
        FROM,
    )
    assert further(local, None) is local and further(None, shared) is shared
    shared.state, shared.call_id = "live", "CA-1"
    assert further(local, shared) is shared
    local.state = "ended"  # cancelled here; the cluster's record not written yet
    ahead = further(local, shared)
    assert ahead is local and (ahead.state, ahead.call_id) == ("ended", "CA-1")
