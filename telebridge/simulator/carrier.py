"""A simulated carrier and caller: what a real call does to the bridge, over real sockets.

`SimulatedCall` drives one call: the signed answer webhook, the media stream WebSocket, caller
audio at 50 frames a second, key presses, and a playback queue that plays in real time, answers
marks when they are reached and drops audio on a clear. Each carrier subclass speaks its own wire
format byte for byte and records every departure from the protocol as a violation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from telebridge.simulator.playout import Playout

logger = logging.getLogger(__name__)


@dataclass
class CallScript:
    """What the simulated caller does."""

    digits: str = ""  # keys pressed, one per prompt heard; "w" lets a prompt pass untouched
    press_after: float = 0.8  # seconds into a prompt's audio before the key is pressed
    caller_audio: bool = True  # send caller audio (silence) at 50 frames/s, as carriers do
    hangup_after: float | None = None  # the caller hangs up after this many seconds
    flow: str | None = None  # ?flow= on the answer URL
    caller: str = "14155550100"
    callee: str = "14155550199"
    # The caller's voice, in the carrier's encoding: sent in 20 ms frames in place of the
    # first frames of silence.
    voice: bytes = b""


@dataclass
class Prompt:
    """Audio the bridge sent between two marks (or up to a clear)."""

    audio: bytes
    mark: str | None  # None: cut off by a clear
    first_audio_at: float


@dataclass
class SimResult:
    call_id: str
    answer_status: int = 0
    timeline: list[dict[str, Any]] = field(default_factory=list)
    received: bytes = b""  # every audio byte the bridge sent, in order
    heard: bytes = b""  # what the caller heard (cleared audio excluded)
    prompts: list[Prompt] = field(default_factory=list)
    marks_played: list[str] = field(default_factory=list)
    messages_in: int = 0  # messages from the bridge
    audio_messages: int = 0
    max_lead: float = 0.0
    violations: list[str] = field(default_factory=list)
    tones: str = ""  # DTMF the bridge played into the call over the stream (Plivo sendDTMF)
    ended_by: str = ""  # "bridge-closed", "rest-hangup", "caller-hangup", "refused"
    close_code: int | None = None
    started_at: float = 0.0
    stream_opened_at: float | None = None
    first_audio_at: float | None = None


class SimulatedCall(ABC):
    """One simulated call against a bridge at `base_url` (its public URL)."""

    carrier = ""
    frame_bytes = 160
    bytes_per_second = 8000

    def __init__(self, base_url: str, call_id: str, script: CallScript) -> None:
        self.base_url = base_url.rstrip("/")
        self.script = script
        self.result = SimResult(call_id=call_id)
        self.playout = Playout(self.bytes_per_second, self.frame_bytes)
        self._ws: ClientConnection | None = None
        self._ended = asyncio.Event()
        self._generation = 0  # bumped by a clear: marks queued before it never play
        self._segment: bytearray | None = None
        self._segment_first = 0.0
        self._digits = list(script.digits)
        self._tasks: set[asyncio.Task[None]] = set()
        self._t0 = time.monotonic()
        self._voice_at = 0

    def voice_frame(self) -> bytes | None:
        """The next frame of the script's voice, or None once it has all been sent."""
        voice = self.script.voice
        if self._voice_at >= len(voice):
            return None
        frame = voice[self._voice_at : self._voice_at + self.frame_bytes]
        self._voice_at += self.frame_bytes
        return frame.ljust(self.frame_bytes, b"\xff" if self.carrier == "plivo" else b"\x00")

    # --- carrier-specific wire format ------------------------------------------------

    @abstractmethod
    async def answer(self, http: httpx.AsyncClient) -> str | None:
        """Call the answer webhook; the stream URL, or None when the bridge refused."""

    @abstractmethod
    def start_message(self) -> str: ...

    @abstractmethod
    def parse(self, message: str | bytes) -> tuple[str, Any]:
        """("audio", bytes), ("mark", name), ("clear", None) or ("other", x); may add violations."""

    @abstractmethod
    def caller_frame(self) -> str | bytes: ...

    @abstractmethod
    def digit_message(self, digit: str) -> str: ...

    @abstractmethod
    def played_message(self, name: str) -> str: ...

    @abstractmethod
    def cleared_message(self) -> str | None: ...

    def stop_message(self) -> str | None:
        return None

    async def after_end(self, http: httpx.AsyncClient) -> None:  # noqa: B027 - optional hook
        """Carrier callbacks after the call (hangup / completed events)."""

    # --- running ---------------------------------------------------------------------

    def note(self, event: str, **fields: Any) -> None:
        entry = {"t": round(time.monotonic() - self._t0, 3), "at": time.monotonic(), "event": event}
        entry.update(fields)
        self.result.timeline.append(entry)

    def violation(self, text: str) -> None:
        self.result.violations.append(text)
        self.note("violation", detail=text)

    async def run(self, http: httpx.AsyncClient | None = None) -> SimResult:
        self._t0 = time.monotonic()
        self.result.started_at = self._t0
        async with contextlib.AsyncExitStack() as stack:
            if http is None:
                http = await stack.enter_async_context(httpx.AsyncClient(timeout=10))
            url = await self._answer_with_retries(http)
            if url is None:
                self.result.ended_by = "refused"
                return self.result
            await self._stream(url)
            await self.after_end(http)
        self.result.heard = self.playout.heard()
        self.result.max_lead = round(self.playout.max_lead, 4)
        return self.result

    async def _answer_with_retries(self, http: httpx.AsyncClient) -> str | None:
        # Carriers retry an answer URL that fails to answer (Plivo: 3 tries), so do we.
        for attempt in range(3):
            try:
                return await self.answer(http)
            except httpx.TransportError as exc:
                self.note("answer_retry", error=type(exc).__name__)
                if attempt == 2:
                    raise
                await asyncio.sleep(0.1)
        return None

    async def _stream(self, url: str) -> None:
        try:
            # Carriers do not compress media streams (and audio barely compresses).
            ws = await connect(url, max_size=2**20, open_timeout=10, compression=None)
        except Exception as exc:
            self.note("stream_refused", error=str(exc)[:120])
            self.result.ended_by = "refused"
            return
        self._ws = ws
        self.result.stream_opened_at = time.monotonic()
        self.note("stream_open")
        await ws.send(self.start_message())
        if self.script.caller_audio:
            self._spawn(self._send_caller_audio())
        if self.script.hangup_after is not None:
            self._spawn(self._hang_up_later(self.script.hangup_after))
        received = bytearray()
        try:
            async for message in ws:
                self.result.messages_in += 1
                self._on_message(message, received)
        except ConnectionClosed:
            pass
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.result.received = bytes(received)
            self.result.close_code = ws.close_code
            if not self.result.ended_by:
                self.result.ended_by = "bridge-closed"
            self._close_segment(None)
            self.note("closed", code=ws.close_code, by=self.result.ended_by)
            self._ws = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_message(self, message: str | bytes, received: bytearray) -> None:
        now = time.monotonic()
        kind, value = self.parse(message)
        if kind == "audio":
            data: bytes = value
            self.result.audio_messages += 1
            received += data
            start = self.playout.enqueue(now, data)
            if self.result.first_audio_at is None:
                self.result.first_audio_at = now
            if self._segment is None:
                self._segment = bytearray()
                self._segment_first = now
                self.note("audio", lead=round(self.playout.lead(now), 3))
                self._schedule_key(start)
            self._segment += data
        elif kind == "mark":
            self.note("mark", name=value, lead=round(self.playout.lead(now), 3))
            self._close_segment(value)
            self._spawn(self._play_mark(value, self.playout.mark_time(now), self._generation))
        elif kind == "clear":
            dropped = self.playout.clear(now)
            self._generation += 1
            self._close_segment(None)
            self.note("clear", dropped=round(dropped, 3))
            reply = self.cleared_message()
            if reply is not None:
                self._spawn(self._send(reply))
        elif kind == "tones":
            self.result.tones += str(value)
            self.note("tones", digits=value)

    def _close_segment(self, mark: str | None) -> None:
        if self._segment is not None:
            self.result.prompts.append(Prompt(bytes(self._segment), mark, self._segment_first))
        self._segment = None

    def _schedule_key(self, plays_at: float) -> None:
        while self._digits and self._digits[0] == "w":
            self._digits.pop(0)
            return
        if self._digits:
            digit = self._digits.pop(0)
            self._spawn(self._press(digit, plays_at + self.script.press_after))

    async def _press(self, digit: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        self.note("digit", digit=digit)
        await self._send(self.digit_message(digit))

    async def _play_mark(self, name: str, at: float, generation: int) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        if generation != self._generation:
            return  # cleared: a carrier never reports audio it dropped
        self.result.marks_played.append(name)
        self.note("played", name=name)
        await self._send(self.played_message(name))

    async def _send(self, message: str | bytes) -> None:
        if self._ws is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(message)

    async def _send_caller_audio(self) -> None:
        next_at = time.monotonic()
        while True:
            await self._send(self.caller_frame())
            next_at += 0.02
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _hang_up_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.end("caller-hangup")

    async def end(self, how: str) -> None:
        """The carrier ends the call (caller hung up, or the REST API was asked to)."""
        if self._ws is None or self.result.ended_by:
            return
        self.result.ended_by = how
        self.note(how)
        stop = self.stop_message()
        if stop is not None:
            await self._send(stop)
        await self._ws.close()
