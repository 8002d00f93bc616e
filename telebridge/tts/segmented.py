"""Streamed text over any `Synthesizer`: one request per flushed segment, played in order.

HTTP streaming and sync take a whole text per request, so an utterance whose text streams in
(the agent step) is spoken there as a sequence of requests, one per segment the caller flushes;
the audio of the segments follows one another with nothing between them. `text_speech` picks
the synthesizer's own `stream` when it has one (the WebSocket: one request with `continue`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

from telebridge.tts.speech import SpeechOptions, Synthesizer, TextSpeech

__all__ = ["SegmentedSpeech", "text_speech"]


def text_speech(
    tts: Synthesizer, *, sample_rate: int, options: SpeechOptions, request_id: str | None = None
) -> TextSpeech:
    """An utterance whose text arrives in pieces, spoken by `tts`."""
    stream = getattr(tts, "stream", None)
    if callable(stream):
        speech: TextSpeech = stream(sample_rate=sample_rate, options=options, request_id=request_id)
        return speech
    return SegmentedSpeech(tts, sample_rate=sample_rate, options=options, request_id=request_id)


class SegmentedSpeech:
    """`TextSpeech` as one `synthesize` per flushed segment, in order."""

    def __init__(
        self,
        tts: Synthesizer,
        *,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None = None,
    ) -> None:
        self._tts = tts
        self._sample_rate = sample_rate
        self._options = options
        self._request_id = request_id
        self._text = ""
        self._segments: asyncio.Queue[str | None] = asyncio.Queue()
        self._count = 0
        self._finished = False
        self._closed = False
        self._iterated = False

    async def send(self, text: str) -> None:
        if self._finished:
            raise RuntimeError("send() after finish() or aclose()")
        self._text += text

    async def flush(self) -> None:
        if self._finished:
            raise RuntimeError("flush() after finish() or aclose()")
        self._queue_text()

    async def finish(self) -> None:
        if self._finished:
            return
        self._queue_text()
        self._finished = True
        self._segments.put_nowait(None)

    async def aclose(self) -> None:
        self._finished = self._closed = True
        self._segments.put_nowait(None)

    def _queue_text(self) -> None:
        text, self._text = self._text, ""
        if text.strip():
            self._segments.put_nowait(text)

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._iterated:
            raise RuntimeError("a segmented utterance can be iterated only once")
        self._iterated = True
        return self._audio()

    async def _audio(self) -> AsyncGenerator[bytes, None]:
        while (segment := await self._segments.get()) is not None and not self._closed:
            self._count += 1
            rid = f"{self._request_id}.{self._count}" if self._request_id else None
            chunks = self._tts.synthesize(
                segment, sample_rate=self._sample_rate, options=self._options, request_id=rid
            )
            try:
                async for chunk in chunks:
                    if self._closed:
                        return
                    yield chunk
            finally:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()
