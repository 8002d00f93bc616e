"""Tests for telebridge.call.playout: batches, message sizes, pacing, clears and marks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from telebridge.call.events import Played
from telebridge.call.playout import SEND_BATCH_FRAMES, Playout
from telebridge.call.ports import CarrierStream, TransportClosed
from telebridge.carriers.plivo import MAX_FRAMES_PER_MESSAGE
from tests.call.fakes import (
    FakeTransport,
    ManualClock,
    is_play,
    payload,
    played,
    plivo_stream,
    vonage_stream,
)

Events = list[tuple[str, dict[str, Any]]]


def numbered_frames(count: int, size: int) -> bytes:
    """Frames whose bytes say which frame they are, so order and repeats show."""
    return b"".join(bytes([i % 251]) * size for i in range(count))


@asynccontextmanager
async def running(
    stream: CarrierStream,
    transport: FakeTransport,
    *,
    max_lead: float = 10.0,
    mark_timeout: float = 1.0,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[tuple[Playout, Events]]:
    events: Events = []
    playout = Playout(
        call_id="call-1",
        stream=stream,
        transport=transport,
        max_lead=max_lead,
        mark_timeout=mark_timeout,
        clock=clock or ManualClock(),
        emit=lambda kind, **fields: events.append((kind, fields)),
    )
    sender = asyncio.create_task(playout.run())
    try:
        yield playout, events
    finally:
        sender.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sender


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_plivo_messages_carry_at_most_max_frames_and_every_byte_once_in_order() -> None:
    transport = FakeTransport(plays_marks=False)
    frames = numbered_frames(200, 160)
    async with running(plivo_stream(), transport) as (playout, _):
        playout.audio(frames[: 7 * 160], 1)
        playout.audio(frames[7 * 160 :], 1)
        playout.mark("utterance-1")
        await settle()
    plays = [m for m in transport.sent if is_play(m)]
    sizes = [len(payload(m)) for m in plays]
    assert all(size % 160 == 0 and size <= MAX_FRAMES_PER_MESSAGE * 160 for size in sizes)
    assert max(sizes) == MAX_FRAMES_PER_MESSAGE * 160  # batched, not a frame per message
    assert transport.audio() == frames
    assert transport.events()[-1] == "checkpoint"  # the mark follows its audio


async def test_vonage_batches_several_one_frame_messages_per_write() -> None:
    stream = vonage_stream(16000)
    transport = FakeTransport(plays_marks=False)
    frames = numbered_frames(45, 640)
    async with running(stream, transport) as (playout, _):
        playout.audio(frames, 1)
        await settle()
    audio_writes = [w for w in transport.writes if all(isinstance(m, bytes) for m in w)]
    assert [len(w) for w in audio_writes] == [10, 10, 10, 10, 5]
    assert all(len(m) == 640 for w in audio_writes for m in w)
    assert b"".join(m for w in audio_writes for m in w if isinstance(m, bytes)) == frames
    assert SEND_BATCH_FRAMES == 10


async def test_the_pacer_holds_audio_back_until_the_carrier_has_room() -> None:
    clock = ManualClock()
    transport = FakeTransport(plays_marks=False)
    frames = numbered_frames(40, 160)
    async with running(plivo_stream(), transport, max_lead=0.3, clock=clock) as (playout, _):
        playout.audio(frames, 1)
        await settle()
        assert len(transport.audio()) == 15 * 160  # 0.3 s ahead, no more
        clock.advance(0.1)  # 5 frames played: room for 5, but a batch waits for 10
        await asyncio.sleep(0.25)
        assert len(transport.audio()) == 15 * 160
        clock.advance(1.0)  # all played: another 0.3 s goes
        await asyncio.sleep(0.25)
        assert len(transport.audio()) == 30 * 160
        clock.advance(1.0)
        await asyncio.sleep(0.25)
        assert transport.audio() == frames


@pytest.mark.parametrize("max_lead", [0.1, 0.15])
async def test_a_lead_shorter_than_a_batch_sends_smaller_batches(max_lead: float) -> None:
    # TELEBRIDGE_MAX_LEAD_MS may be 100: a batch of SEND_BATCH_FRAMES never fits under it.
    clock = ManualClock()
    transport = FakeTransport(plays_marks=False)
    frames = numbered_frames(30, 160)
    capacity = int(max_lead / 0.02 + 1e-9)  # 5 and 7 frames
    async with running(plivo_stream(), transport, max_lead=max_lead, clock=clock) as (playout, _):
        playout.audio(frames, 1)
        await settle()
        assert len(transport.audio()) == capacity * 160
        for _ in range(200):  # the sender sleeps in real time what the manual clock says
            if len(transport.audio()) == len(frames):
                break
            clock.advance(max_lead)  # all of it played: the next batch fits
            await asyncio.sleep(0.02)
        assert transport.audio() == frames
    assert max(len(payload(m)) for m in transport.sent if is_play(m)) <= capacity * 160


async def test_audio_ahead_counts_queued_and_unplayed_audio() -> None:
    clock = ManualClock()
    transport = FakeTransport(plays_marks=False)
    async with running(plivo_stream(), transport, max_lead=0.3, clock=clock) as (playout, _):
        playout.audio(numbered_frames(40, 160), 1)
        await settle()
        assert playout.ahead() == pytest.approx(0.8)  # 25 frames here, 15 at the carrier
        clock.advance(0.1)
        assert playout.ahead() == pytest.approx(0.7)


async def test_clear_drops_queued_audio_and_jumps_the_queue() -> None:
    clock = ManualClock()
    transport = FakeTransport(plays_marks=False)
    async with running(plivo_stream(), transport, max_lead=0.3, clock=clock) as (playout, _):
        playout.audio(numbered_frames(40, 160), 1)
        playout.mark("utterance-1")
        await settle()
        assert playout.busy()
        playout.clear()
        await settle()
        assert transport.events() == ["playAudio", "clearAudio"]
        assert not playout.busy()
        assert await playout.wait_played(lambda: False) is True  # nothing left to wait for
        clock.advance(5.0)
        await asyncio.sleep(0.25)
    assert transport.events() == ["playAudio", "clearAudio"]  # the dropped audio never went


async def test_a_cleared_mark_is_not_played() -> None:
    transport = FakeTransport(plays_marks=False)
    async with running(plivo_stream(), transport) as (playout, _):
        playout.audio(numbered_frames(5, 160), 1)
        playout.mark("utterance-1")
        await settle()
        waiting = asyncio.create_task(playout.wait_played(lambda: False))
        await settle()
        playout.clear()
        assert await waiting is False


async def test_wait_played_returns_when_the_carrier_reports_the_mark() -> None:
    stream = plivo_stream()
    transport = FakeTransport(plays_marks=False)
    async with running(stream, transport) as (playout, events):
        playout.audio(numbered_frames(5, 160), 1)
        playout.mark("utterance-1")
        waiting = asyncio.create_task(playout.wait_played(lambda: False))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        for event in stream.receive(played("utterance-1")):
            assert isinstance(event, Played)
            playout.played(event.name)
        assert await asyncio.wait_for(waiting, 1) is True
    assert ("mark", {"mark": "utterance-1", "lead": 0.1}) in events
    assert not any(kind == "mark_timeout" for kind, _ in events)


async def test_wait_played_is_false_once_interrupted() -> None:
    transport = FakeTransport(plays_marks=False)
    async with running(plivo_stream(), transport) as (playout, _):
        playout.audio(numbered_frames(5, 160), 1)
        playout.mark("utterance-1")
        playout.played("utterance-1")
        assert await playout.wait_played(lambda: True) is False
        assert await playout.wait_played(lambda: False) is True


async def test_a_mark_the_carrier_never_confirms_times_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = FakeTransport(plays_marks=False)
    async with running(plivo_stream(), transport, mark_timeout=0.2) as (playout, events):
        playout.audio(numbered_frames(5, 160), 1)  # 0.1 s ahead at the carrier, clock stopped
        playout.mark("utterance-1")
        loop = asyncio.get_running_loop()
        began = loop.time()
        with caplog.at_level(logging.WARNING, logger="telebridge.call.playout"):
            assert await playout.wait_played(lambda: False) is True
        waited = loop.time() - began
    assert 0.25 <= waited < 1.0  # the lead plus mark_timeout
    assert ("mark_timeout", {"mark": "utterance-1"}) in events
    assert "carrier never confirmed utterance-1" in caplog.text
    assert not playout.busy()


async def test_first_audio_is_reported_once_per_utterance() -> None:
    clock = ManualClock()
    transport = FakeTransport(plays_marks=False)
    async with running(plivo_stream(), transport, clock=clock) as (playout, events):
        playout.first_chunk(1, clock() - 0.005)
        playout.audio(numbered_frames(3, 160), 1)
        playout.audio(numbered_frames(3, 160), 1)
        await settle()
    assert [fields for kind, fields in events if kind == "first_audio"] == [{"added_ms": 5.0}]


async def test_a_failed_write_is_a_closed_transport() -> None:
    class Broken(FakeTransport):
        async def send_many(self, messages: Any) -> None:
            raise ConnectionResetError("gone")

    events: Events = []
    playout = Playout(
        call_id="call-1",
        stream=plivo_stream(),
        transport=Broken(),
        max_lead=1.0,
        mark_timeout=1.0,
        clock=ManualClock(),
        emit=lambda kind, **fields: events.append((kind, fields)),
    )
    playout.audio(numbered_frames(3, 160), 1)
    with pytest.raises(TransportClosed, match="gone"):
        await playout.run()
