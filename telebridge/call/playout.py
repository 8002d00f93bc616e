"""The sender: queued frames and marks out to the carrier, in batches, as fast as the pacer lets.

Speech and audio files are queued here as whole encoded frames; marks follow each utterance.
One task (`run`) sends them: a batch of frames per wake-up, in messages of at most the carrier's
`max_frames_per_message`, never past the pacer's `max_lead`. A clear (barge-in) jumps the queue.
`wait_played` waits for the carrier to report the last mark, within a budget.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from telebridge.call.audio import FrameEncoder
from telebridge.call.events import WireMessage
from telebridge.call.pacer import Pacer
from telebridge.call.ports import CarrierStream, Emit, Transport, TransportClosed

__all__ = ["SEND_BATCH_FRAMES", "Playout"]

logger = logging.getLogger(__name__)

# The sender wakes for at least this many frames at a time once the carrier's queue is full,
# so a call costs a few wake-ups a second, not fifty.
SEND_BATCH_FRAMES = 10


@dataclass(slots=True)
class _Audio:
    frames: bytes
    utterance: int
    at: int = 0  # bytes of `frames` sent so far (a long prompt is never re-sliced per batch)


@dataclass(slots=True)
class _Mark:
    name: str


class Playout:
    """One call's outgoing audio: the outbox, the pacer and the marks the carrier will confirm."""

    def __init__(
        self,
        *,
        call_id: str,
        stream: CarrierStream,
        transport: Transport,
        max_lead: float,
        mark_timeout: float,
        clock: Callable[[], float],
        emit: Emit,
    ) -> None:
        self._call_id = call_id
        self._stream = stream
        self._transport = transport
        self._mark_timeout = mark_timeout
        self._clock = clock
        self._emit = emit
        self.frame_bytes = FrameEncoder(
            src_rate=stream.sample_rate, dst_rate=stream.sample_rate, codec=stream.codec
        ).frame_bytes
        self._pacer = Pacer(max_lead=max_lead)
        # A lead shorter than a batch (TELEBRIDGE_MAX_LEAD_MS under 200) takes smaller ones.
        self._batch = min(SEND_BATCH_FRAMES, self._pacer.capacity)
        self._outbox: deque[_Audio | _Mark] = deque()
        self._urgent: deque[WireMessage] = deque()
        self._wake = asyncio.Event()
        self._sender_idle = False
        self._marks: dict[str, asyncio.Future[bool]] = {}
        self.last_mark: str | None = None
        self._first_chunk_at: dict[int, float] = {}
        # Per utterance: when its first frame plays, when its last sent frame will have played,
        # and seconds sent (the pacer's model of the carrier's queue): what a caller heard.
        self._spans: dict[int, list[float]] = {}

    @property
    def underruns(self) -> int:
        """Times the carrier's queue ran dry inside an utterance."""
        return self._pacer.underruns

    # --- queueing ---------------------------------------------------------------------

    def audio(self, frames: bytes, utterance: int) -> None:
        """Queue whole encoded frames of `utterance`."""
        self._enqueue(_Audio(frames, utterance))

    def mark(self, name: str) -> None:
        """Queue a mark after what is queued; `wait_played` waits for the carrier to reach it."""
        self._marks[name] = asyncio.get_running_loop().create_future()
        self.last_mark = name
        self._enqueue(_Mark(name))

    def first_chunk(self, utterance: int, at: float) -> None:
        """Waves' first chunk of `utterance` arrived at `at`: its first send reports the delay."""
        self._first_chunk_at[utterance] = at

    def urgent(self, messages: list[WireMessage]) -> None:
        """Messages that go out before any queued audio (DTMF tones)."""
        self._urgent.extend(messages)
        self._wake.set()

    def mark_future(self, name: str) -> asyncio.Future[bool] | None:
        """The future of a queued mark: True once the carrier played it, False when cleared."""
        return self._marks.get(name)

    def heard(self, utterance: int) -> float:
        """Seconds of `utterance` the caller has heard by now (sent and due to have played)."""
        span = self._spans.get(utterance)
        if span is None:
            return 0.0
        start, end, sent = span
        unplayed = max(0.0, end - max(self._clock(), start))
        return max(0.0, sent - unplayed)

    def forget(self, utterance: int) -> None:
        """`utterance` is over: its span is no longer asked for."""
        self._spans.pop(utterance, None)

    def played(self, name: str) -> None:
        """The carrier reports it played everything up to the mark `name`."""
        future = self._marks.pop(name, None)
        if future is not None and not future.done():
            future.set_result(True)

    def busy(self) -> bool:
        """Audio or marks are queued here, or sent and not yet confirmed by the carrier."""
        return bool(self._outbox) or any(not f.done() for f in self._marks.values())

    def ends_with_audio(self) -> bool:
        """The last thing queued is audio (its utterance has no mark yet)."""
        return bool(self._outbox) and isinstance(self._outbox[-1], _Audio)

    def clear(self) -> None:
        """Barge-in: drop what is queued, forget the marks, and have the carrier clear its queue."""
        self._outbox.clear()
        self._pacer.reset(self._clock())
        for future in self._marks.values():
            if not future.done():
                future.set_result(False)
        self._marks.clear()
        self._urgent.extend(self._stream.clear())
        self._wake.set()

    def ahead(self) -> float:
        """Seconds of audio queued here or at the carrier that have not played yet."""
        return self._queued_seconds() + self._pacer.lead(self._clock())

    def _queued_seconds(self) -> float:
        frames = sum(len(i.frames) - i.at for i in self._outbox if isinstance(i, _Audio))
        return frames / self.frame_bytes * 0.02

    def _enqueue(self, item: _Audio | _Mark) -> None:
        self._outbox.append(item)
        if self._sender_idle:
            # A sender held back by the pacer is not woken: more audio changes nothing for it.
            self._wake.set()

    # --- waiting for the carrier ------------------------------------------------------

    async def wait_played(self, interrupted: Callable[[], bool]) -> bool:
        """Wait until the carrier has played the last mark; False once `interrupted()`.

        The budget is what is still to play plus `mark_timeout`; a carrier that never confirms
        a mark it was sent is given up on (True: the call goes on).
        """
        while True:
            if interrupted():
                return False
            name = self.last_mark
            future = self._marks.get(name) if name else None
            if future is None or future.done():
                return not interrupted()
            budget = self._queued_seconds() + self._pacer.lead(self._clock()) + self._mark_timeout
            try:
                async with asyncio.timeout(budget):
                    played = await asyncio.shield(future)
                return played and not interrupted()
            except TimeoutError:
                if self._outbox:
                    continue  # synthesis is still feeding: the mark is not even sent yet
                logger.warning("call %s: carrier never confirmed %s; going on", self._call_id, name)
                self._emit("mark_timeout", mark=name)
                self._marks.pop(name or "", None)
                return True

    # --- sending ----------------------------------------------------------------------

    async def _send(self, messages: list[WireMessage]) -> None:
        try:
            await self._transport.send_many(messages)
        except TransportClosed:
            raise
        except Exception as exc:  # the socket went away under us
            raise TransportClosed(str(exc)) from exc

    async def run(self) -> None:
        """Send until cancelled; raises TransportClosed when the socket is gone."""
        fb = self.frame_bytes
        per_message = self._stream.max_frames_per_message
        paced_until = (
            0.0  # the bridge holds audio back on purpose while the carrier's queue is full
        )
        while True:
            if self._urgent:
                await self._send([self._urgent.popleft()])
                continue
            if not self._outbox:
                self._wake.clear()
                self._sender_idle = True
                try:
                    await self._wake.wait()
                finally:
                    self._sender_idle = False
                continue
            item = self._outbox[0]
            now = self._clock()
            if isinstance(item, _Mark):
                self._outbox.popleft()
                await self._send(self._stream.mark(item.name))
                self._emit("mark", mark=item.name, lead=round(self._pacer.lead(now), 3))
                self._pacer.idle()
                continue
            available = (len(item.frames) - item.at) // fb
            room = self._pacer.room(now)
            wanted = min(available, self._batch)
            if room < wanted:
                await self._sleep(self._pacer.wait(now, wanted))
                paced_until = self._clock()
                continue
            # One wake-up sends a batch: as many frames as one message takes, or for a carrier
            # that takes one frame per message (Vonage), a few messages in one write.
            count = min(available, room, max(per_message, self._batch))
            start = item.at
            item.at += count * fb
            chunk = item.frames[start : item.at]
            if item.at >= len(item.frames):
                self._outbox.popleft()
            first = self._first_chunk_at.pop(item.utterance, None)
            step = per_message * fb
            messages: list[WireMessage] = []
            for at in range(0, len(chunk), step):
                messages += self._stream.play(chunk[at : at + step])
            await self._send(messages)
            plays_from = max(self._pacer.drained_at(), now)
            self._pacer.sent(now, count)
            span = self._spans.get(item.utterance)
            if span is None:
                if len(self._spans) >= 64:  # a long call: only recent utterances are asked for
                    del self._spans[next(iter(self._spans))]
                self._spans[item.utterance] = span = [plays_from, 0.0, 0.0]
            span[1] = self._pacer.drained_at()
            span[2] += count * self._pacer.frame_duration
            if first is not None:
                added = self._clock() - max(first, paced_until)
                self._emit("first_audio", added_ms=round(added * 1000, 3))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once for a clear or new audio."""
        self._wake.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass
