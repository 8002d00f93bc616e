"""A prompt cache in front of Waves: fixed prompts play without a round trip.

Audio is cached by everything that shapes it (text, voice, model, speed, language, rate) in a
size-bounded LRU. A prompt being synthesised is shared while it streams: a second request for it
(the answer webhook started it early, or two calls greet at once) reads the same chunks as they
arrive instead of asking Waves twice. Only complete audio is kept: a failed or interrupted request
leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from telebridge.tts.waves import SpeechOptions, Synthesizer

logger = logging.getLogger(__name__)

Key = tuple[str, str, str, float, str, int]


@dataclass
class _Fill:
    """A synthesis in progress that several readers can follow."""

    chunks: list[bytes] = field(default_factory=list)
    done: bool = False
    error: BaseException | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    readers: int = 0
    task: asyncio.Task[None] | None = None


class PromptCache:
    """A `Synthesizer` that remembers what `inner` said. `max_bytes` 0 turns storing off."""

    def __init__(self, inner: Synthesizer, *, max_bytes: int) -> None:
        self._inner = inner
        self._max_bytes = max_bytes
        self._store: OrderedDict[Key, bytes] = OrderedDict()
        self._size = 0
        self._fills: dict[Key, _Fill] = {}
        self.hits = 0
        self.misses = 0

    @property
    def size(self) -> int:
        return self._size

    @staticmethod
    def key(text: str, sample_rate: int, options: SpeechOptions) -> Key:
        return (text, options.voice_id, options.model, options.speed, options.language, sample_rate)

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
    ) -> AsyncIterator[bytes]:
        key = self.key(text, sample_rate, options)
        audio = self._store.get(key)
        if audio is not None:
            self.hits += 1
            self._store.move_to_end(key)
            yield audio
            return
        fill = self._fills.get(key)
        if fill is None:
            self.misses += 1
            fill = self._start(key, text, sample_rate, options, request_id)
        else:
            self.hits += 1
        fill.readers += 1
        try:
            seen = 0
            while True:
                while seen < len(fill.chunks):
                    seen += 1
                    yield fill.chunks[seen - 1]
                if fill.error is not None:
                    raise fill.error
                if fill.done:
                    return
                fill.changed.clear()
                await fill.changed.wait()
        finally:
            fill.readers -= 1
            if fill.readers == 0 and not fill.done and fill.task is not None:
                # Nobody listens any more (barge-in, hang-up): stop Waves for this prompt.
                fill.task.cancel()

    def prefetch(self, text: str, *, sample_rate: int, options: SpeechOptions) -> None:
        """Start synthesising `text` now so a call about to connect finds it ready."""
        key = self.key(text, sample_rate, options)
        if key in self._store or key in self._fills:
            return
        fill = self._start(key, text, sample_rate, options, None)
        # Kept alive without a reader until the call connects (or it completes and is stored).
        fill.readers += 1
        assert fill.task is not None
        fill.task.add_done_callback(lambda _: self._release(fill))

    @staticmethod
    def _release(fill: _Fill) -> None:
        fill.readers -= 1

    def _start(
        self, key: Key, text: str, sample_rate: int, options: SpeechOptions, request_id: str | None
    ) -> _Fill:
        fill = _Fill()
        self._fills[key] = fill
        fill.task = asyncio.create_task(
            self._fill(key, fill, text, sample_rate, options, request_id)
        )
        return fill

    async def _fill(
        self,
        key: Key,
        fill: _Fill,
        text: str,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None,
    ) -> None:
        chunks = self._inner.synthesize(
            text, sample_rate=sample_rate, options=options, request_id=request_id
        )
        try:
            async for chunk in chunks:
                fill.chunks.append(chunk)
                fill.changed.set()
            fill.done = True
            self._keep(key, b"".join(fill.chunks))
        except asyncio.CancelledError:
            fill.error = asyncio.CancelledError()
            raise
        except Exception as exc:
            fill.error = exc
        finally:
            self._fills.pop(key, None)
            fill.changed.set()
            with contextlib.suppress(Exception):
                await chunks.aclose()  # type: ignore[attr-defined]

    def _keep(self, key: Key, audio: bytes) -> None:
        if not audio or len(audio) > self._max_bytes // 4:
            return  # one prompt never takes more than a quarter of the cache
        self._store[key] = audio
        self._size += len(audio)
        while self._size > self._max_bytes:
            _, dropped = self._store.popitem(last=False)
            self._size -= len(dropped)
