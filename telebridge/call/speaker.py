"""What the caller hears: speech from Waves (with its retry policy), audio files and silence.

Each prompt is one utterance: its frames go to the playout, followed by the mark
`utterance-<n>`. Speech that fails before the caller heard any of it is asked for again within
`RETRY_WINDOW`, `MAX_ATTEMPTS` times at most; once some was heard, or Waves refuses the key, the
failure stands and the session apologises instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from telebridge.call.audio import FrameEncoder
from telebridge.call.keys import KeyBuffer
from telebridge.call.playout import Playout
from telebridge.call.ports import CarrierStream, Emit
from telebridge.flows import SpeechOverrides
from telebridge.tts import SpeechOptions, Synthesizer
from telebridge.tts.errors import (
    TTSError,
    WavesAuthError,
    WavesForbiddenError,
    WavesRateLimited,
    WavesTimeout,
)
from telebridge.tts.guard import speech_deadline
from telebridge.tts.segmented import text_speech
from telebridge.tts.speech import TextSpeech

__all__ = ["MAX_ATTEMPTS", "RETRY_PAUSE", "RETRY_WINDOW", "Speaker", "speech_for"]

logger = logging.getLogger(__name__)

# When Waves fails before a prompt made any sound, the prompt is asked for again while less than
# RETRY_WINDOW has passed since it began, MAX_ATTEMPTS times at most. A request must be admitted
# (see tts/guard.py) within that window too, and Waves then has its first-chunk timeout (1.2 s by
# default) to start: the caller hears the prompt or the apology within about 3 s.
RETRY_WINDOW = 1.5
MAX_ATTEMPTS = 3
RETRY_PAUSE = 0.1


def speech_for(base: SpeechOptions, overrides: SpeechOverrides) -> SpeechOptions:
    """The bridge's speech settings with a step's voice, speed and language put over them."""
    return replace(
        base,
        voice_id=overrides.voice or base.voice_id,
        speed=overrides.speed if overrides.speed is not None else base.speed,
        language=overrides.language or base.language,
    )


class Speaker:
    """Turns the flow's prompts into queued frames and marks for one call."""

    def __init__(
        self,
        *,
        call_id: str,
        stream: CarrierStream,
        tts: Synthesizer,
        speech: SpeechOptions,
        playout: Playout,
        keys: KeyBuffer,
        clock: Callable[[], float],
        emit: Emit,
    ) -> None:
        self._call_id = call_id
        self._stream = stream
        self._tts = tts
        self._speech = speech
        self._playout = playout
        self._keys = keys
        self._clock = clock
        self._emit = emit
        self._encoder = FrameEncoder(
            src_rate=stream.sample_rate, dst_rate=stream.sample_rate, codec=stream.codec
        )
        self._utterance = 0
        self._task: asyncio.Task[None] | None = None  # the synthesis under way
        self._turn = asyncio.Lock()  # held by the utterance being synthesised
        self._spoke: set[int] = set()  # utterances Waves has produced audio for
        # The speech failure that ended the flow, if one did.
        self.failure: TTSError | None = None
        # Set when the call is stopped from outside: the prompt under way may then finish.
        self.stopping = False

    @property
    def speaking(self) -> bool:
        """Speech is being synthesised."""
        return self._task is not None

    # --- prompts ----------------------------------------------------------------------

    async def say(self, text: str, *, barge_in: bool, overrides: SpeechOverrides) -> None:
        """Speak `text`; returns once all of it is queued, or early when a key cut it off.

        Utterances take turns: the flow's prompts and speech asked for through the call API
        are synthesised one at a time, each whole, in the order they asked.
        """
        await self._turn.acquire()
        try:
            await self._say(text, barge_in=barge_in, overrides=overrides)
        finally:
            task = self._task
            if task is not None and not task.done() and self.stopping:
                # Left to finish after a stop: the turn is over only once it has.
                task.add_done_callback(lambda _: self._turn.release())
            else:
                self._turn.release()

    async def _say(self, text: str, *, barge_in: bool, overrides: SpeechOverrides) -> None:
        if barge_in and self._keys.pending:
            return  # a key already cut this prompt off before it began
        self._keys.start_prompt(barge_in)
        options = speech_for(self._speech, overrides)
        self._utterance += 1
        self._emit("prompt", text=text, utterance=self._utterance)
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            admit_by = time.monotonic() + RETRY_WINDOW - (self._clock() - started)
            task = asyncio.create_task(self._synthesize(text, options, self._utterance, admit_by))
            self._task = task
            try:
                await asyncio.wait({task})
            finally:
                if not task.done() and self.stopping:
                    pass  # stopping from outside: the session lets it finish, then hangs up
                else:
                    if self._task is task:
                        self._task = None
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
                    self.failure = exc
                raise exc
            if not isinstance(exc, WavesRateLimited | WavesTimeout):
                # A quick failure is not asked again at once; a timeout has waited already,
                # and a rate limit is waited out by the guard before the next try is admitted.
                await asyncio.sleep(RETRY_PAUSE)
        self.finish_prompt()

    async def _synthesize(
        self, text: str, options: SpeechOptions, utterance: int, admit_by: float
    ) -> None:
        speech_deadline.set(admit_by)  # this task's own context: it bounds only this request
        chunks = self._tts.synthesize(
            text,
            sample_rate=self._stream.sample_rate,
            options=options,
            request_id=f"{self._call_id[:60]}-{utterance}",
        )
        first = True
        asked = self._clock()
        try:
            async for chunk in chunks:
                if first:
                    first = False
                    now = self._clock()
                    self._playout.first_chunk(utterance, now)
                    self._spoke.add(utterance)
                    self._first_byte(utterance, now - asked)
                frames = self._encoder.feed(chunk)
                if frames:
                    self._playout.audio(frames, utterance)
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    async def stream(
        self,
        feed: Callable[[TextSpeech], Coroutine[Any, Any, None]],
        overrides: SpeechOverrides,
        *,
        on_first_chunk: Callable[[int, float], None] | None = None,
        on_start: Callable[[int], None] | None = None,
    ) -> tuple[int, bool]:
        """Speak one utterance whose text `feed` sends as it arrives (ending with `finish`).

        Takes its turn like `say`; `on_start(n)` names the utterance once its turn has come.
        Returns the utterance's number and whether it was spoken whole (False: cut off). A
        speech failure raises, after the part Waves did produce has been queued with a mark.
        """
        async with self._turn:
            self._utterance += 1
            number = self._utterance
            if on_start is not None:
                on_start(number)
            speech = text_speech(
                self._tts,
                sample_rate=self._stream.sample_rate,
                options=speech_for(self._speech, overrides),
                request_id=f"{self._call_id[:60]}-{number}",
            )
            consumer = asyncio.create_task(self._consume(speech, number, on_first_chunk))
            producer = asyncio.create_task(feed(speech))
            self._task = consumer
            whole = False
            try:
                await asyncio.wait({producer, consumer}, return_when=asyncio.FIRST_COMPLETED)
                if producer.done() and not producer.cancelled() and not producer.exception():
                    await asyncio.wait({consumer})
                whole = consumer.done() and not consumer.cancelled() and not consumer.exception()
            finally:
                for task in (producer, consumer):
                    task.cancel()
                if not whole:
                    await speech.aclose()
                await asyncio.gather(producer, consumer, return_exceptions=True)
                if self._task is consumer:
                    self._task = None
            if consumer.cancelled():
                return number, False  # cut off: the clear dropped what was queued
            exc = (consumer.exception() or producer.exception()) if not whole else None
            if exc is not None:
                self.finish_partial()
                raise exc
            self.finish_prompt()
            return number, True

    async def _consume(
        self,
        speech: TextSpeech,
        number: int,
        on_first_chunk: Callable[[int, float], None] | None,
    ) -> None:
        first = True
        asked = self._clock()
        async for chunk in speech:
            if first:
                first = False
                now = self._clock()
                self._playout.first_chunk(number, now)
                self._spoke.add(number)
                self._first_byte(number, now - asked)
                if on_first_chunk is not None:
                    on_first_chunk(number, now)
            frames = self._encoder.feed(chunk)
            if frames:
                self._playout.audio(frames, number)

    def _first_byte(self, utterance: int, seconds: float) -> None:
        # The synthesizer's time to first byte for this request (Waves, or the prompt cache
        # when it has the prompt); for a streamed utterance, since its turn came, so the
        # wait for the application's first text is included.
        self._emit("tts_first_byte", utterance=utterance, ms=round(seconds * 1000, 1))

    async def play(self, pcm: bytes, sample_rate: int, *, barge_in: bool) -> None:
        """Queue audio (PCM16LE mono at `sample_rate`)."""
        async with self._turn:
            self._play(pcm, sample_rate, barge_in=barge_in)

    def _play(self, pcm: bytes, sample_rate: int, *, barge_in: bool) -> None:
        if barge_in and self._keys.pending:
            return
        self._keys.start_prompt(barge_in)
        self._utterance += 1
        encoder = FrameEncoder(
            src_rate=sample_rate, dst_rate=self._stream.sample_rate, codec=self._stream.codec
        )
        frames = encoder.feed(pcm) + encoder.flush()
        self._emit("play", seconds=round(len(frames) / self._playout.frame_bytes * 0.02, 3))
        if frames:
            self._playout.audio(frames, self._utterance)
        self._add_mark()

    async def pause(self, seconds: float) -> None:
        """Queue `seconds` of silence; keys cut it off as they would the prompt before it."""
        async with self._turn:
            self._pause(seconds)

    def _pause(self, seconds: float) -> None:
        self._keys.start_prompt(self._keys.interruptible)
        frames = round(seconds / 0.02)
        encoder = FrameEncoder(
            src_rate=self._stream.sample_rate,
            dst_rate=self._stream.sample_rate,
            codec=self._stream.codec,
        )
        silence = encoder.feed(b"\x00\x00" * (self._stream.sample_rate // 50) * frames)
        self._utterance += 1
        if silence:
            self._playout.audio(silence, self._utterance)
        self._add_mark()

    def finish_prompt(self) -> None:
        """The utterance is complete: its last, padded frame and its mark are queued."""
        tail = self._encoder.flush()
        if tail:
            self._playout.audio(tail, self._utterance)
        self._add_mark()

    def _add_mark(self) -> None:
        self._playout.mark(f"utterance-{self._utterance}")

    # --- ending -----------------------------------------------------------------------

    def cut(self) -> None:
        """Barge-in: stop synthesis and drop what the encoder holds."""
        if self._task is not None:
            self._task.cancel()
        self._encoder.reset()

    def finish_partial(self) -> None:
        """Speech failed: the part of the prompt Waves did produce still plays, then a mark."""
        if self._encoder.pending or self._playout.ends_with_audio():
            self.finish_prompt()

    async def finish_speaking(self, limit: float) -> None:
        """Let a prompt cut short by a stop be synthesised to its end (for at most `limit`
        seconds), and mark its end."""
        task = self._task
        if task is not None:
            await asyncio.wait({task}, timeout=limit)
            if not task.done():
                task.cancel()
            elif not task.cancelled() and task.exception() is not None:
                logger.warning("call %s: last prompt failed: %s", self._call_id, task.exception())
            self._task = None
        if self._playout.last_mark != f"utterance-{self._utterance}":
            self.finish_prompt()  # the stopped prompt never got its mark

    def cancel(self) -> None:
        """The call is over: stop any synthesis at once."""
        if self._task is not None:
            self._task.cancel()
