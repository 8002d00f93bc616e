"""Admission in front of Waves: one shared view of Waves' health that every call consults.

A refused key (401/403) is a configuration error: it is logged once, loudly, and later requests
fail at once, without a handshake, until a re-check is due; one request then finds out whether the
key works again. Over the concurrency limit (HTTP 429 or an error frame saying so) every call backs
off together, from 0.5 s doubling up to 30 s or as long as `Retry-After` asks, and a request waits
out the back-off only while its deadline allows, so no caller sits in dead air behind it. An
optional cap on requests in flight queues the rest in arrival order, under the same deadline; given
`SharedSlots` (tts/slots.py) the cap is shared with other processes, and while they cannot be
reached this process counts its own requests against it.

The deadline of a request is the sooner of `queue_timeout` from now and `speech_deadline`, a
context variable the call session sets for the prompt it is trying to speak. A request made for
several callers at once (the prompt cache's shared fill) carries no caller's deadline; it reports
its wait through `admission_wait` instead, so each caller can give up at its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextvars import ContextVar
from typing import Literal

from telebridge.tts.errors import TTSError, WavesAuthError, WavesForbiddenError, WavesRateLimited
from telebridge.tts.segmented import text_speech
from telebridge.tts.slots import SharedSlots
from telebridge.tts.speech import SpeechOptions, Synthesizer, TextSpeech

logger = logging.getLogger(__name__)

# The time (`time.monotonic()`) by which the prompt being spoken must have been admitted, if any.
speech_deadline: ContextVar[float | None] = ContextVar("speech_deadline", default=None)
# Told when a request starts waiting for admission, with the earliest time it can be admitted (on
# the clock `speech_deadline` uses), and with None once the wait is over, if set.
AdmissionWait = Callable[[float | None], None]
admission_wait: ContextVar[AdmissionWait | None] = ContextVar("admission_wait", default=None)

FIRST_BACK_OFF = 0.5
MAX_BACK_OFF = 30.0

GuardState = Literal["ok", "backing-off", "refused"]


class _Admitted:
    """One admitted request: whether it re-checks a refused key, and its shared slot's token."""

    __slots__ = ("probe", "token")

    def __init__(self, probe: bool, token: str | None) -> None:
        self.probe = probe
        self.token = token  # None: a slot of this process's own count


class WavesGuard:
    """A `Synthesizer` that admits requests to `inner` by Waves' last known state."""

    def __init__(
        self,
        inner: Synthesizer,
        *,
        max_in_flight: int = 0,
        queue_timeout: float = 1.0,
        recheck_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedSlots | None = None,
    ) -> None:
        self._inner = inner
        self._max_in_flight = max_in_flight  # 0: no cap
        self._queue_timeout = queue_timeout
        self._recheck_after = recheck_after
        self._clock = clock
        self._in_flight = 0  # slots of this process's own count
        self._shared = shared
        self._shared_in_flight = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._back_off = FIRST_BACK_OFF
        self._blocked_until = 0.0
        self._refusal: TTSError | None = None
        self._recheck_at = 0.0
        self._probing = False
        self.waits = 0  # requests that had to wait for a back-off or a slot
        self.shed = 0  # requests refused without asking Waves

    @property
    def state(self) -> GuardState:
        if self._refusal is not None:
            return "refused"
        if self._clock() < self._blocked_until:
            return "backing-off"
        return "ok"

    @property
    def in_flight(self) -> int:
        return self._in_flight + self._shared_in_flight

    def synthesize(
        self,
        text: str,
        *,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None = None,
    ) -> AsyncIterator[bytes]:
        return self._synthesize(text, sample_rate, options, request_id)

    async def _synthesize(
        self, text: str, sample_rate: int, options: SpeechOptions, request_id: str | None
    ) -> AsyncGenerator[bytes, None]:
        admitted = await self._admit()
        chunks = self._inner.synthesize(
            text, sample_rate=sample_rate, options=options, request_id=request_id
        )
        try:
            async for chunk in chunks:
                yield chunk
        except TTSError as exc:
            self.observe_failure(exc)
            raise
        else:
            self._succeeded()
        finally:
            if admitted.probe:
                self._probing = False
            self._release(admitted.token)
            await chunks.aclose()  # type: ignore[attr-defined]

    def stream(
        self, *, sample_rate: int, options: SpeechOptions, request_id: str | None = None
    ) -> TextSpeech:
        """An utterance whose text arrives in pieces: admitted at its first piece, holding its
        slot until it is spoken or abandoned."""
        inner = text_speech(
            self._inner, sample_rate=sample_rate, options=options, request_id=request_id
        )
        return _GuardedText(self, inner)

    def observe_failure(self, exc: TTSError) -> None:
        """Learn from a failure (also one seen outside a request, such as a pre-warm)."""
        if isinstance(exc, WavesAuthError | WavesForbiddenError):
            if self._refusal is None:
                logger.critical(
                    "%s. Every call will be ended with an apology until this is fixed; "
                    "telebridge asks Waves again every %.0f s.",
                    exc,
                    self._recheck_after,
                )
            self._refusal = exc
            self._recheck_at = self._clock() + self._recheck_after
        elif isinstance(exc, WavesRateLimited):
            delay = max(exc.retry_after or 0.0, self._back_off)
            delay = min(delay, MAX_BACK_OFF)
            self._blocked_until = max(self._blocked_until, self._clock() + delay)
            self._back_off = min(self._back_off * 2, MAX_BACK_OFF)
            logger.warning("Waves is over its concurrency limit: backing off %.1f s", delay)

    def _succeeded(self) -> None:
        if self._refusal is not None:
            logger.warning("Waves accepts the API key again")
            self._refusal = None
        self._back_off = FIRST_BACK_OFF

    # --- admission ------------------------------------------------------------------------

    async def _admit(self) -> _Admitted:
        """Wait for a turn: its slot, and whether it is the one re-checking a refused key."""
        now = self._clock()
        deadline = now + self._queue_timeout
        asked = speech_deadline.get()
        if asked is not None:
            deadline = min(deadline, asked)
        waiting = admission_wait.get()
        probe = False
        if self._refusal is not None:
            if now < self._recheck_at or self._probing:
                self.shed += 1
                raise type(self._refusal)(str(self._refusal))
            self._probing = probe = True
        try:
            if now < self._blocked_until:
                if self._blocked_until > deadline:
                    self.shed += 1
                    raise WavesRateLimited(
                        f"Waves is over its concurrency limit; backing off "
                        f"{self._blocked_until - now:.1f} s",
                        retry_after=self._blocked_until - now,
                    )
                self.waits += 1
                if waiting is not None:
                    waiting(self._blocked_until)
                await asyncio.sleep(self._blocked_until - now)
            token = await self._take_slot(deadline, waiting)
        except BaseException:
            if probe:
                self._probing = False
            raise
        finally:
            if waiting is not None:
                waiting(None)
        return _Admitted(probe, token)

    async def _take_slot(self, deadline: float, waiting: AdmissionWait | None) -> str | None:
        """A slot: the shared cap's token, or None for one of this process's own count."""
        if self._max_in_flight and self._shared is not None:
            token = await self._take_shared(deadline, waiting)
            if token is not None:
                return token
        if not self._max_in_flight or (self._in_flight < self._max_in_flight and not self._waiting):
            self._in_flight += 1
            return None
        self.waits += 1
        if waiting is not None:
            waiting(self._clock())  # a slot may come free at any moment
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            async with asyncio.timeout(max(0.0, deadline - self._clock())):
                await turn  # _release hands its slot over: _in_flight already counts us
        except BaseException as exc:
            if turn.done() and not turn.cancelled():
                self._release(None)  # the slot came just as we gave up: pass it on
            if not isinstance(exc, TimeoutError):
                raise
            self.shed += 1
            raise WavesRateLimited(
                f"no Waves slot free in time ({self._max_in_flight} requests in flight)"
            ) from None
        finally:
            if turn in self._waiting:
                self._waiting.remove(turn)
        return None

    async def _take_shared(self, deadline: float, waiting: AdmissionWait | None) -> str | None:
        assert self._shared is not None
        if waiting is not None:
            waiting(self._clock())  # a slot may come free at any moment
        try:
            token = await self._shared.acquire(max(0.0, deadline - self._clock()))
        except TimeoutError:
            self.waits += 1
            self.shed += 1
            raise WavesRateLimited(
                f"no Waves slot free in time ({self._max_in_flight} requests in flight across "
                "the cluster)"
            ) from None
        if token is not None:
            self._shared_in_flight += 1
        return token

    def _release(self, token: str | None = None) -> None:
        if token is not None:
            self._shared_in_flight -= 1
            assert self._shared is not None
            self._shared.release(token)
            return
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot goes straight to the next in line
                return
        self._in_flight -= 1


class _GuardedText:
    """`TextSpeech` through the guard: one admission for the whole utterance."""

    def __init__(self, guard: WavesGuard, inner: TextSpeech) -> None:
        self._guard = guard
        self._inner = inner
        self._admitted: asyncio.Future[_Admitted] | None = None
        self._released = False

    async def _admit(self) -> None:
        if self._admitted is None:
            self._admitted = asyncio.ensure_future(self._guard._admit())
        await asyncio.shield(self._admitted)

    async def send(self, text: str) -> None:
        await self._admit()
        await self._inner.send(text)

    async def flush(self) -> None:
        await self._inner.flush()

    async def finish(self) -> None:
        await self._inner.finish()
        if self._admitted is None:
            self._released = True  # nothing was ever sent: nothing was admitted

    async def aclose(self) -> None:
        await self._inner.aclose()
        self._release()

    def _release(self) -> None:
        if self._released or self._admitted is None:
            return
        admitted = self._admitted
        if not admitted.done():
            admitted.cancel()
            self._released = True
            return
        if admitted.cancelled() or admitted.exception() is not None:
            self._released = True
            return
        self._released = True
        admission = admitted.result()
        if admission.probe:
            self._guard._probing = False
        self._guard._release(admission.token)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._audio()

    async def _audio(self) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self._inner:
                yield chunk
        except TTSError as exc:
            self._guard.observe_failure(exc)
            raise
        else:
            if self._admitted is not None:
                self._guard._succeeded()
        finally:
            self._release()
