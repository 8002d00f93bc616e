"""`WAVES_TRANSPORT=auto`: prompts go over the WebSocket while one can be opened, and over HTTP
streaming (SSE) while it cannot.

A WebSocket that cannot be opened for a reason other than the key (`WavesConnectionError`: the
upgrade refused, a proxy, the network) moves prompts to SSE, the failed prompt first when none
of it was heard. In the background the WebSocket is tried again, after 1 s, then twice as long
each time up to a minute; once a socket opens, prompts go back to it. Each switch is logged once
and reported to `on_switch`. A refused key is not a transport failure: it surfaces as it does
with the WebSocket alone (the guard says it loudly).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Literal, Protocol

from telebridge.tts.errors import WavesConnectionError
from telebridge.tts.segmented import SegmentedSpeech, text_speech
from telebridge.tts.speech import SpeechOptions, Synthesizer, TextSpeech

__all__ = ["Transport", "TransportSwitch"]

logger = logging.getLogger(__name__)

Transport = Literal["websocket", "sse"]
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0


class Probed(Synthesizer, Protocol):
    async def probe(self) -> None:
        """Open one connection; raises the typed error when it cannot."""
        ...

    async def prewarm(self, n: int = 1) -> None:
        """Open up to `n` connections ahead of need."""
        ...


class TransportSwitch:
    """A Synthesizer over the WebSocket client, falling back to the SSE client."""

    def __init__(
        self,
        websocket: Probed,
        sse: Synthesizer,
        *,
        on_switch: Callable[[Transport], None] | None = None,
        retry_first: float = RETRY_FIRST_S,
        retry_max: float = RETRY_MAX_S,
    ) -> None:
        self._websocket = websocket
        self._sse = sse
        self._on_switch = on_switch
        self._retry_first = retry_first
        self._retry_max = retry_max
        self.transport: Transport = "websocket"
        self.switches = 0
        self._prober: asyncio.Task[None] | None = None

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
        if self.transport == "websocket":
            heard = False
            chunks = self._websocket.synthesize(
                text, sample_rate=sample_rate, options=options, request_id=request_id
            )
            try:
                async for chunk in chunks:
                    heard = True
                    yield chunk
                return
            except WavesConnectionError as exc:
                if heard:
                    raise  # never play the start of a prompt twice
                self.websocket_failed(exc)
            finally:
                await _close(chunks)
        chunks = self._sse.synthesize(
            text, sample_rate=sample_rate, options=options, request_id=request_id
        )
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await _close(chunks)

    def stream(
        self, *, sample_rate: int, options: SpeechOptions, request_id: str | None = None
    ) -> TextSpeech:
        """Streamed text: one WebSocket request with `continue`, or over SSE one request per
        segment while the WebSocket cannot be opened. An utterance that meets a WebSocket that
        cannot be opened fails (its text is gone to no one); the next one goes over SSE."""
        if self.transport == "websocket":
            inner = text_speech(
                self._websocket, sample_rate=sample_rate, options=options, request_id=request_id
            )
            return _Watched(self, inner)
        return SegmentedSpeech(
            self._sse, sample_rate=sample_rate, options=options, request_id=request_id
        )

    async def prewarm(self, n: int = 1) -> None:
        """Open `n` WebSocket connections ahead of need (raises like `probe`)."""
        if self.transport == "websocket":
            await self._websocket.prewarm(n)

    def websocket_failed(self, exc: WavesConnectionError) -> None:
        """The WebSocket cannot be opened: prompts go over SSE until it can again."""
        if self.transport == "sse":
            return
        self._switch("sse")
        logger.warning("Waves WebSocket cannot be opened (%s): speaking over HTTP streaming", exc)
        self._prober = asyncio.get_running_loop().create_task(self._probe(), name="waves-probe")

    async def _probe(self) -> None:
        wait = self._retry_first
        while True:
            await asyncio.sleep(wait)
            try:
                await self._websocket.probe()
            except WavesConnectionError as exc:
                logger.debug("Waves WebSocket still cannot be opened: %s", exc)
                wait = min(self._retry_max, wait * 2)
                continue
            except Exception as exc:
                # Not a transport failure (a refused key, a limit): let prompts meet it there.
                logger.debug("Waves WebSocket probe: %s", exc)
            self._switch("websocket")
            logger.warning("Waves WebSocket is back: speaking over it again")
            return

    def _switch(self, to: Transport) -> None:
        self.transport = to
        self.switches += 1
        if self._on_switch is not None:
            self._on_switch(to)

    async def aclose(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober


async def _close(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


class _Watched:
    """A WebSocket utterance whose connection failure switches the transport."""

    def __init__(self, switch: TransportSwitch, inner: TextSpeech) -> None:
        self._switch = switch
        self._inner = inner

    async def send(self, text: str) -> None:
        try:
            await self._inner.send(text)
        except WavesConnectionError as exc:
            self._switch.websocket_failed(exc)
            raise

    async def flush(self) -> None:
        await self._inner.flush()

    async def finish(self) -> None:
        await self._inner.finish()

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._audio()

    async def _audio(self) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self._inner:
                yield chunk
        except WavesConnectionError as exc:
            self._switch.websocket_failed(exc)
            raise
