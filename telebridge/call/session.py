"""One call: a carrier stream, a TTS stream and a flow, wired together.

The session is the only place that knows all three. It runs three tasks per call: the reader
(carrier messages -> events), the sender (queued frames -> paced carrier messages) and the flow.
It implements the flow runner's `CallPort`: speech goes Waves -> `FrameEncoder` -> outbox ->
`Pacer` -> carrier; keys come back from the reader and may cut a prompt off (barge-in).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from telebridge.call.audio import FrameEncoder
from telebridge.call.events import (
    CallerAudio,
    CallEvent,
    Cleared,
    Digit,
    Played,
    ProtocolError,
    Started,
    Stopped,
    WireMessage,
)
from telebridge.call.pacer import Pacer
from telebridge.call.ports import (
    CallControl,
    CallObserver,
    CarrierStream,
    Transport,
    TransportClosed,
)
from telebridge.flows import Flow, FlowIO, FlowRecorder, FlowRunner, SpeechOverrides
from telebridge.tts import SpeechOptions, Synthesizer
from telebridge.tts.errors import (
    TTSError,
    WavesAuthError,
    WavesForbiddenError,
    WavesRateLimited,
    WavesTimeout,
)
from telebridge.tts.guard import speech_deadline

logger = logging.getLogger(__name__)

# The sender wakes for at least this many frames at a time once the carrier's queue is full,
# so a call costs a few wake-ups a second, not fifty.
SEND_BATCH_FRAMES = 10
# Carrier messages that break the protocol before the call is given up as hostile.
MAX_BAD_MESSAGES = 50
# After a transfer the carrier takes the caller elsewhere and closes the stream itself.
TRANSFER_CLOSE_WAIT = 10.0
# When Waves fails before a prompt made any sound, the prompt is asked for again while less than
# RETRY_WINDOW has passed since it began, MAX_ATTEMPTS times at most. A request must be admitted
# (see tts/guard.py) within that window too, and Waves then has its first-chunk timeout (1.2 s by
# default) to start: the caller hears the prompt or the apology within about 3 s.
RETRY_WINDOW = 1.5
MAX_ATTEMPTS = 3
RETRY_PAUSE = 0.1
# On shutdown the prompt being synthesised may finish, for at most this long.
STOP_SPEECH_WAIT = 10.0
# Spoken by the carrier's own TTS when Waves cannot speak for the bridge.
APOLOGY = "We are sorry, we cannot continue this call right now. Please call again later."


def speech_for(base: SpeechOptions, overrides: SpeechOverrides) -> SpeechOptions:
    """The bridge's speech settings with a step's voice, speed and language put over them."""
    return replace(
        base,
        voice_id=overrides.voice or base.voice_id,
        speed=overrides.speed if overrides.speed is not None else base.speed,
        language=overrides.language or base.language,
    )


class CallState(enum.Enum):
    STREAMING = "streaming"
    ENDING = "ending"
    ENDED = "ended"


@dataclass(slots=True)
class _Audio:
    frames: bytes
    utterance: int


@dataclass(slots=True)
class _Mark:
    name: str


class CallSession:
    """A call in progress. Create it once the carrier stream has started; then `await run()`."""

    def __init__(
        self,
        *,
        call_id: str,
        stream: CarrierStream,
        transport: Transport,
        control: CallControl,
        tts: Synthesizer,
        speech: SpeechOptions,
        max_lead: float,
        mark_timeout: float,
        observer: CallObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.call_id = call_id
        self.state = CallState.STREAMING
        self.outcome: str | None = None
        self.hangup_reason: str | None = None
        self._stream = stream
        self._transport = transport
        self._control = control
        self._tts = tts
        self._speech = speech
        self._mark_timeout = mark_timeout
        self._observer = observer
        self._clock = clock
        self._frame_bytes = FrameEncoder(
            src_rate=stream.sample_rate, dst_rate=stream.sample_rate, codec=stream.codec
        ).frame_bytes
        self._encoder = FrameEncoder(
            src_rate=stream.sample_rate, dst_rate=stream.sample_rate, codec=stream.codec
        )
        self._pacer = Pacer(max_lead=max_lead)
        self._outbox: deque[_Audio | _Mark] = deque()
        self._urgent: deque[WireMessage] = deque()
        self._wake = asyncio.Event()
        self._sender_idle = False
        self._closed = asyncio.Event()
        self._digits: deque[str] = deque()
        self._digit_event = asyncio.Event()
        self._marks: dict[str, asyncio.Future[bool]] = {}
        self._last_mark: str | None = None
        self._utterance = 0
        self._tts_task: asyncio.Task[None] | None = None
        self._interruptible = False
        self._interrupted = False
        self._first_chunk_at: dict[int, float] = {}
        self._spoke: set[int] = set()  # utterances Waves has produced audio for
        self._tts_failure: TTSError | None = None
        self._flow_task: asyncio.Task[str] | None = None
        self._stop_reason: str | None = None
        self._bad_messages = 0
        self.frames_sent = 0

    # --- running ----------------------------------------------------------------------

    async def run(
        self,
        flow: Flow,
        variables: dict[str, str],
        *,
        recorder: FlowRecorder | None = None,
        io: FlowIO | None = None,
    ) -> str:
        """Run the flow until it ends or the caller goes; returns the call's outcome."""
        runner = FlowRunner(flow, self, variables=variables, recorder=recorder, io=io)
        reader = asyncio.create_task(self._read_loop(), name=f"read:{self.call_id}")
        sender = asyncio.create_task(self._send_loop(), name=f"send:{self.call_id}")
        flow_task = asyncio.create_task(self._run_flow(runner), name=f"flow:{self.call_id}")
        self._flow_task = flow_task
        tasks = (reader, sender, flow_task)
        try:
            done, _ = await asyncio.wait(
                {reader, flow_task, sender}, return_when=asyncio.FIRST_COMPLETED
            )
            if reader in done and self.state is CallState.ENDING:
                # We hung up and the carrier closed: let the flow finish its own bookkeeping.
                await asyncio.wait({flow_task}, timeout=5)
                done = {flow_task} if flow_task.done() else done
            if flow_task in done and flow_task.cancelled() and self._stop_reason:
                # Stopped from outside (shutdown): the prompt under way plays out, then hang up.
                await self._finish_speaking()
                await self.hangup(self._stop_reason)
                self.outcome = self._stop_reason
            elif flow_task in done:
                self.outcome = flow_task.result()
            elif reader in done:
                self.outcome = reader.result()
            else:
                exc = sender.exception()
                self.outcome = "carrier-closed" if isinstance(exc, TransportClosed) else "error"
                if exc is not None and not isinstance(exc, TransportClosed):
                    logger.error("call %s: sender failed: %r", self.call_id, exc)
        finally:
            self.state = CallState.ENDED
            for task in (*tasks, self._tts_task):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._transport.close()
            self._emit("ended", outcome=self.outcome, underruns=self._pacer.underruns)
        return self.outcome or "ended"

    async def _run_flow(self, runner: FlowRunner) -> str:
        outcome = await runner.run()
        if self._tts_failure is not None:
            # The runner reports a failed port as an error outcome; the cause was speech.
            failure = self._tts_failure
            if isinstance(failure, WavesAuthError | WavesForbiddenError):
                # A configuration error, logged loudly once by the guard: here, just the call.
                logger.warning("call %s: ending politely, Waves refuses the key", self.call_id)
            else:
                logger.error("call %s: speech failed: %s", self.call_id, failure)
            await self._end_politely()
            return f"error:tts {self._tts_failure.kind}"
        if outcome == "transfer":
            # The carrier now runs the transfer and closes the stream itself.
            await self._await_close(TRANSFER_CLOSE_WAIT)
        elif outcome != "hangup":
            await self.hangup(outcome)
        return outcome

    async def stop(self, reason: str) -> None:
        """End the call from outside (shutdown): what is playing finishes, then the call ends."""
        self._stop_reason = reason
        if self._flow_task is not None and not self._flow_task.done():
            self._flow_task.cancel()

    async def _finish_speaking(self) -> None:
        """Let a prompt cut short by `stop()` be synthesised to its end, and mark its end."""
        task = self._tts_task
        if task is not None:
            await asyncio.wait({task}, timeout=STOP_SPEECH_WAIT)
            if not task.done():
                task.cancel()
            elif not task.cancelled() and task.exception() is not None:
                logger.warning("call %s: last prompt failed: %s", self.call_id, task.exception())
            self._tts_task = None
        if self._last_mark != f"utterance-{self._utterance}":
            self._finish_prompt()  # the stopped prompt never got its mark

    async def _end_politely(self) -> None:
        """Waves cannot speak: let what was queued play, then the carrier apologises and ends."""
        if self._encoder.pending or (self._outbox and isinstance(self._outbox[-1], _Audio)):
            self._finish_prompt()  # the part of the prompt Waves did produce still plays
        await self.wait_played()
        self.state = CallState.ENDING
        self._emit("apology")
        try:
            spoken = await self._control.end_with_message(APOLOGY)
        except Exception as exc:
            logger.error("call %s: carrier apology failed: %s", self.call_id, exc)
            spoken = False
        if spoken:
            await self._await_close(TRANSFER_CLOSE_WAIT)
        else:
            with contextlib.suppress(Exception):
                await self._control.hangup()
        await self._transport.close()

    async def _await_close(self, limit: float) -> None:
        try:
            async with asyncio.timeout(limit):
                await self._closed.wait()
        except TimeoutError:
            logger.warning("call %s: carrier kept the stream after a transfer", self.call_id)

    # --- carrier -> session -----------------------------------------------------------

    async def _read_loop(self) -> str:
        try:
            return await self._read_messages()
        finally:
            self._closed.set()

    async def _read_messages(self) -> str:
        while True:
            try:
                message = await self._transport.receive()
            except TransportClosed:
                self._emit("carrier_closed")
                return "caller-hangup" if self.state is CallState.STREAMING else "completed"
            try:
                events = self._stream.receive(message)
            except ProtocolError as exc:
                self._bad_messages += 1
                if self._bad_messages <= 5:
                    logger.warning("call %s: dropped a bad carrier message: %s", self.call_id, exc)
                if self._bad_messages >= MAX_BAD_MESSAGES:
                    logger.error("call %s: too many bad carrier messages, ending", self.call_id)
                    return "error:protocol"
                continue
            for event in events:
                if self._handle(event):
                    self._emit("stopped")
                    return "caller-hangup" if self.state is CallState.STREAMING else "completed"

    def _handle(self, event: CallEvent) -> bool:
        """Apply one event; True when the stream is over."""
        if isinstance(event, CallerAudio):
            return False
        if isinstance(event, Digit):
            self._on_digit(event.digit)
        elif isinstance(event, Played):
            self._emit("played", mark=event.name)
            future = self._marks.pop(event.name, None)
            if future is not None and not future.done():
                future.set_result(True)
        elif isinstance(event, Cleared):
            self._emit("cleared")
        elif isinstance(event, Stopped):
            return True
        elif isinstance(event, Started):
            logger.warning("call %s: ignoring a second start", self.call_id)
        return False

    def _on_digit(self, digit: str) -> None:
        self._emit("digit", digit=digit)
        self._digits.append(digit)
        self._digit_event.set()
        if self._interruptible and self._prompt_active():
            self._barge_in()

    def _prompt_active(self) -> bool:
        return (
            self._tts_task is not None
            or bool(self._outbox)
            or any(not f.done() for f in self._marks.values())
        )

    def _barge_in(self) -> None:
        """A key cut the prompt off: stop synthesis, drop queued audio, clear the carrier."""
        self._emit("barge_in")
        self._interruptible = False
        self._interrupted = True
        if self._tts_task is not None:
            self._tts_task.cancel()
        self._outbox.clear()
        self._encoder.reset()
        self._pacer.reset(self._clock())
        for future in self._marks.values():
            if not future.done():
                future.set_result(False)
        self._marks.clear()
        self._urgent.extend(self._stream.clear())
        self._wake.set()

    # --- session -> carrier -----------------------------------------------------------

    def _enqueue(self, item: _Audio | _Mark) -> None:
        self._outbox.append(item)
        if self._sender_idle:
            # A sender held back by the pacer is not woken: more audio changes nothing for it.
            self._wake.set()

    async def _send(self, messages: list[WireMessage]) -> None:
        try:
            await self._transport.send_many(messages)
        except TransportClosed:
            raise
        except Exception as exc:  # the socket went away under us
            raise TransportClosed(str(exc)) from exc

    async def _send_loop(self) -> None:
        fb = self._frame_bytes
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
            available = len(item.frames) // fb
            room = self._pacer.room(now)
            wanted = min(available, SEND_BATCH_FRAMES)
            if room < wanted:
                await self._sleep(self._pacer.wait(now, wanted))
                paced_until = self._clock()
                continue
            # One wake-up sends a batch: as many frames as one message takes, or for a carrier
            # that takes one frame per message (Vonage), a few messages in one write.
            count = min(available, room, max(per_message, SEND_BATCH_FRAMES))
            chunk, rest = item.frames[: count * fb], item.frames[count * fb :]
            if rest:
                item.frames = rest
            else:
                self._outbox.popleft()
            first = self._first_chunk_at.pop(item.utterance, None)
            step = per_message * fb
            messages: list[WireMessage] = []
            for at in range(0, len(chunk), step):
                messages += self._stream.play(chunk[at : at + step])
            await self._send(messages)
            self._pacer.sent(now, count)
            self.frames_sent += count
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

    # --- CallPort ---------------------------------------------------------------------

    async def say(self, text: str, *, barge_in: bool, overrides: SpeechOverrides) -> None:
        if barge_in and self._digits:
            return  # a key already cut this prompt off before it began
        self._start_prompt(barge_in)
        options = speech_for(self._speech, overrides)
        self._utterance += 1
        self._emit("prompt", text=text, utterance=self._utterance)
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            admit_by = time.monotonic() + RETRY_WINDOW - (self._clock() - started)
            task = asyncio.create_task(self._synthesize(text, options, self._utterance, admit_by))
            self._tts_task = task
            try:
                await asyncio.wait({task})
            finally:
                if not task.done() and self._stop_reason is not None:
                    pass  # stopping from outside: run() lets this prompt finish, then hangs up
                else:
                    if self._tts_task is task:
                        self._tts_task = None
                    if not task.done():
                        task.cancel()
            if task.cancelled():
                return  # interrupted by a key: nothing more of this prompt
            exc = task.exception()
            if exc is None:
                break
            kind = getattr(exc, "kind", type(exc).__name__)
            self._emit("tts_error", error=kind, attempt=attempt)
            heard_some = self._utterance in self._spoke
            refused = isinstance(exc, WavesAuthError | WavesForbiddenError)
            late = self._clock() - started >= RETRY_WINDOW
            if heard_some or refused or late or attempt >= MAX_ATTEMPTS:
                # Repeating a half-spoken prompt would play its start twice: give up instead.
                if isinstance(exc, TTSError):
                    self._tts_failure = exc
                raise exc
            if not isinstance(exc, WavesRateLimited | WavesTimeout):
                # A quick failure is not asked again at once; a timeout has waited already,
                # and a rate limit is waited out by the guard before the next try is admitted.
                await asyncio.sleep(RETRY_PAUSE)
        self._finish_prompt()

    async def _synthesize(
        self, text: str, options: SpeechOptions, utterance: int, admit_by: float
    ) -> None:
        speech_deadline.set(admit_by)  # this task's own context: it bounds only this request
        chunks = self._tts.synthesize(
            text,
            sample_rate=self._stream.sample_rate,
            options=options,
            request_id=f"{self.call_id[:60]}-{utterance}",
        )
        first = True
        try:
            async for chunk in chunks:
                if first:
                    first = False
                    self._first_chunk_at[utterance] = self._clock()
                    self._spoke.add(utterance)
                frames = self._encoder.feed(chunk)
                if frames:
                    self._enqueue(_Audio(frames, utterance))
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    async def play(self, pcm: bytes, sample_rate: int, *, barge_in: bool) -> None:
        if barge_in and self._digits:
            return
        self._start_prompt(barge_in)
        self._utterance += 1
        encoder = FrameEncoder(
            src_rate=sample_rate, dst_rate=self._stream.sample_rate, codec=self._stream.codec
        )
        frames = encoder.feed(pcm) + encoder.flush()
        self._emit("play", seconds=round(len(frames) / self._frame_bytes * 0.02, 3))
        if frames:
            self._enqueue(_Audio(frames, self._utterance))
        self._add_mark()

    async def pause(self, seconds: float) -> None:
        self._start_prompt(self._interruptible)
        frames = round(seconds / 0.02)
        encoder = FrameEncoder(
            src_rate=self._stream.sample_rate,
            dst_rate=self._stream.sample_rate,
            codec=self._stream.codec,
        )
        silence = encoder.feed(b"\x00\x00" * (self._stream.sample_rate // 50) * frames)
        self._utterance += 1
        if silence:
            self._enqueue(_Audio(silence, self._utterance))
        self._add_mark()

    def _start_prompt(self, barge_in: bool) -> None:
        self._interruptible = barge_in
        self._interrupted = False

    def _finish_prompt(self) -> None:
        tail = self._encoder.flush()
        if tail:
            self._enqueue(_Audio(tail, self._utterance))
        self._add_mark()

    def _add_mark(self) -> None:
        name = f"utterance-{self._utterance}"
        self._marks[name] = asyncio.get_running_loop().create_future()
        self._last_mark = name
        self._enqueue(_Mark(name))

    def audio_ahead(self) -> float:
        """Seconds of audio queued here or at the carrier that have not played yet."""
        return self._queued_seconds() + self._pacer.lead(self._clock())

    def _queued_seconds(self) -> float:
        frames = sum(len(i.frames) for i in self._outbox if isinstance(i, _Audio))
        return frames / self._frame_bytes * 0.02

    async def wait_played(self) -> bool:
        while True:
            if self._interrupted:
                return False
            name = self._last_mark
            future = self._marks.get(name) if name else None
            if future is None or future.done():
                return not self._interrupted
            budget = self._queued_seconds() + self._pacer.lead(self._clock()) + self._mark_timeout
            try:
                async with asyncio.timeout(budget):
                    played = await asyncio.shield(future)
                return played and not self._interrupted
            except TimeoutError:
                if self._outbox:
                    continue  # synthesis is still feeding: the mark is not even sent yet
                logger.warning("call %s: carrier never confirmed %s; going on", self.call_id, name)
                self._emit("mark_timeout", mark=name)
                self._marks.pop(name or "", None)
                return True

    def take_digits(self) -> str:
        digits = "".join(self._digits)
        self._digits.clear()
        return digits

    async def next_digit(self, timeout: float) -> str | None:  # noqa: ASYNC109
        if not self._digits:
            self._digit_event.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._digit_event.wait()
            except TimeoutError:
                return None
        return self._digits.popleft() if self._digits else None

    async def transfer(self, to: str, timeout: float) -> bool:  # noqa: ASYNC109
        await self.wait_played()
        self._emit("transfer", to=to)
        try:
            ok = await self._control.transfer(to, timeout)
        except Exception as exc:
            logger.error("call %s: transfer to %s failed: %s", self.call_id, to, exc)
            ok = False
        self._emit("transfer_result", ok=ok)
        return ok

    async def hangup(self, reason: str) -> None:
        if self.state is not CallState.STREAMING:
            return
        await self.wait_played()
        self.state = CallState.ENDING
        self.hangup_reason = reason
        self._emit("hangup", reason=reason)
        try:
            await self._control.hangup()
        except Exception as exc:
            logger.error("call %s: carrier hangup failed: %s", self.call_id, exc)
        await self._transport.close()

    # --- observation ------------------------------------------------------------------

    def _emit(self, kind: str, **fields: Any) -> None:
        logger.debug("call %s: %s %s", self.call_id, kind, fields)
        if self._observer is not None:
            try:
                self._observer(self.call_id, kind, fields)
            except Exception:
                logger.exception("call %s: observer failed", self.call_id)
