"""Tests for telebridge.call.pacer: bounded lead, room and wait in agreement, underrun counting."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telebridge.call.pacer import Pacer

TOL = 1e-6  # the pacer's own float slack

# One step of a schedule: how far the clock moves, then what the sender does.
step = st.tuples(
    st.floats(0, 3, allow_nan=False),
    st.sampled_from(["send", "send_all", "wait", "reset", "idle"]),
    st.floats(0, 1),
)


@given(
    max_lead=st.floats(0.02, 2.5),
    frame_ms=st.sampled_from([10, 20, 30]),
    start=st.floats(-1e3, 1e6),
    schedule=st.lists(step, max_size=60),
    batch_fraction=st.floats(0, 1),
)
def test_lead_stays_bounded_and_wait_agrees_with_room(
    max_lead: float,
    frame_ms: int,
    start: float,
    schedule: list[tuple[float, str, float]],
    batch_fraction: float,
) -> None:
    fd = frame_ms / 1000
    if max_lead < fd:
        max_lead = fd
    pacer = Pacer(max_lead=max_lead, frame_duration=fd)
    capacity = math.floor((max_lead + TOL) / fd)  # frames an empty queue takes
    now = start
    for dt, action, fraction in schedule:
        now += dt
        room = pacer.room(now)
        assert 0 <= room <= capacity
        if action == "send":
            pacer.sent(now, math.floor(room * fraction))
        elif action == "send_all":
            pacer.sent(now, room)
            assert pacer.room(now) == 0
        elif action == "wait":
            k = max(1, math.ceil(capacity * batch_fraction))
            w = pacer.wait(now, k)
            assert w >= 0
            assert (w == 0) == (room >= k)
            if w > 1e-4:
                # Not a moment sooner: just before the wait ends, k frames still do not fit.
                assert pacer.room(now + w - 1e-4) < k
            now += w
            assert pacer.room(now) >= k
            pacer.sent(now, k)
        elif action == "reset":
            pacer.reset(now)
            assert pacer.lead(now) == 0
            assert pacer.room(now) == capacity
        else:
            pacer.idle()
        assert pacer.lead(now) <= max_lead + TOL
        assert pacer.lead(now) == max(0.0, pacer.drained_at() - now)


@pytest.mark.parametrize(
    ("max_lead", "frame_duration", "capacity"),
    # 0.3 / 0.02 is 14.999999999999998 in floats: an exactly full queue must still be allowed.
    [(1.0, 0.02, 50), (2.0, 0.02, 100), (0.3, 0.02, 15), (0.7, 0.02, 35), (0.1, 0.1, 1)],
)
def test_exactly_full_is_allowed(max_lead: float, frame_duration: float, capacity: int) -> None:
    pacer = Pacer(max_lead=max_lead, frame_duration=frame_duration)
    assert pacer.room(5.0) == pacer.capacity == capacity
    pacer.sent(5.0, capacity)
    assert pacer.room(5.0) == 0
    assert pacer.lead(5.0) == pytest.approx(max_lead)


def test_room_reopens_as_audio_plays() -> None:
    pacer = Pacer(max_lead=1.0)
    pacer.sent(10.0, 50)
    assert pacer.drained_at() == pytest.approx(11.0)
    assert pacer.room(10.0) == 0
    assert pacer.room(10.1) == 5
    assert pacer.lead(10.5) == pytest.approx(0.5)
    assert pacer.lead(12.0) == 0
    assert pacer.room(12.0) == 50
    assert pacer.wait(10.0, 5) == pytest.approx(0.1)
    assert pacer.wait(10.0, 50) == pytest.approx(1.0)
    assert pacer.wait(11.5, 50) == 0


def test_sending_over_room_raises_and_changes_nothing() -> None:
    pacer = Pacer(max_lead=0.2)
    pacer.sent(0.0, 6)
    with pytest.raises(ValueError, match="room"):
        pacer.sent(0.0, 5)
    assert pacer.lead(0.0) == pytest.approx(0.12)
    with pytest.raises(ValueError):
        pacer.sent(0.0, -1)
    pacer.sent(0.0, 0)
    assert pacer.lead(0.0) == pytest.approx(0.12)


def test_wait_for_more_than_max_lead_raises() -> None:
    pacer = Pacer(max_lead=0.2)
    assert pacer.wait(0.0, 0) == 0
    assert pacer.wait(0.0, 10) == 0
    with pytest.raises(ValueError, match="never fit"):
        pacer.wait(0.0, 11)


def test_reset_empties_the_queue() -> None:
    pacer = Pacer(max_lead=1.0)
    pacer.sent(0.0, 50)
    pacer.reset(0.3)
    assert pacer.lead(0.3) == 0
    assert pacer.room(0.3) == 50
    assert pacer.wait(0.3, 50) == 0
    assert pacer.drained_at() == 0.3


def test_nothing_sent_yet() -> None:
    pacer = Pacer(max_lead=1.0)
    assert pacer.drained_at() == -math.inf
    assert pacer.lead(123.0) == 0
    assert pacer.room(123.0) == 50
    assert pacer.underruns == 0


def test_underruns_count_drains_inside_an_utterance() -> None:
    pacer = Pacer(max_lead=1.0)
    pacer.sent(0.0, 10)  # the first send of a call is not an underrun
    pacer.sent(0.1, 10)  # still 0.1 s queued
    assert pacer.underruns == 0
    pacer.sent(0.4, 5)  # exactly when the queue runs out: just in time
    assert pacer.underruns == 0
    pacer.sent(0.6, 5)  # dry since 0.5
    assert pacer.underruns == 1
    pacer.sent(0.9, 5)  # dry since 0.7
    assert pacer.underruns == 2
    pacer.idle()  # utterance over: the silence that follows is expected
    pacer.sent(5.0, 5)
    assert pacer.underruns == 2
    pacer.sent(6.0, 5)  # the new utterance ran dry
    assert pacer.underruns == 3
    pacer.reset(6.05)  # barge-in: the queue was cleared on purpose
    pacer.sent(7.0, 5)
    assert pacer.underruns == 3


def _simulate(*, produce_per_s: float, batch: int, seconds: float) -> tuple[Pacer, float, int]:
    """A sender loop like the I/O side's: frames arrive at `produce_per_s`, go out when room allows.

    Returns the pacer, the largest lead seen and the frames sent.
    """
    pacer = Pacer(max_lead=1.0)
    now, produced, sent, worst = 0.0, 0.0, 0, 0.0
    while now < seconds:
        produced = min(produced, sent + 1000.0)  # a bounded synthesis buffer
        ready = int(produced) - sent
        n = min(pacer.room(now), ready)
        if n:
            pacer.sent(now, n)
            sent += n
            worst = max(worst, pacer.lead(now))
            continue
        # Nothing to send: sleep until room for a batch, or until synthesis delivers more.
        wait = pacer.wait(now, batch) if ready else (sent + batch - produced) / produce_per_s
        wait = max(wait, 0.001) + 0.0007  # the event loop wakes a little late
        now += wait
        produced += wait * produce_per_s
    return pacer, worst, sent


def test_a_sender_that_keeps_up_never_runs_dry() -> None:
    # Synthesis three times faster than real time; the first frames arrive at once.
    pacer, worst, sent = _simulate(produce_per_s=150.0, batch=5, seconds=60.0)
    assert pacer.underruns == 0
    assert worst <= 1.0 + TOL
    # Real time plus the lead: the carrier was kept fed the whole minute, never flooded.
    assert 60.0 / 0.02 <= sent <= (60.0 + 1.0) / 0.02 + 5


def test_a_sender_slower_than_real_time_underruns() -> None:
    pacer, _, _ = _simulate(produce_per_s=30.0, batch=5, seconds=10.0)
    assert pacer.underruns > 0


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="frame_duration"):
        Pacer(max_lead=1.0, frame_duration=0.0)
    with pytest.raises(ValueError, match="cannot hold"):
        Pacer(max_lead=0.01, frame_duration=0.02)
