"""`TextStream`: one Waves request whose text arrives in pieces (e.g. from a language model),
spoken as it comes. Made by `WavesClient.stream()`.

    stream = waves.stream(sample_rate=8000, options=options)
    # producer task                      # consumer task
    await stream.send("Thank you. ")     async for pcm in stream:
    await stream.flush()                     play(pcm)
    await stream.send("Goodbye.")
    await stream.finish()

Each `flush` makes a segment that Waves speaks at once and answers with its own `complete`; the
stream ends after the `complete` of its last segment once `finish` was called.
    # to interrupt (barge-in): await stream.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from telebridge.tts.errors import TTSError
from telebridge.tts.pool import SocketPool
from telebridge.tts.request import Stale, Timeouts, WavesRequest, begin, end, retry
from telebridge.tts.speech import SpeechOptions
from telebridge.tts.wire import request_json

__all__ = ["TextStream"]


class TextStream:
    """One Waves request whose text arrives in pieces, e.g. from a language model.

    A producer calls `send(piece)` any number of times, `flush()` whenever what was sent should
    be spoken now, then `finish()`; a consumer iterates the stream for PCM until the last
    segment's `complete`. `aclose()` interrupts: the socket is closed, not reused.
    """

    def __init__(
        self,
        pool: SocketPool,
        timeouts: Timeouts,
        *,
        sample_rate: int,
        options: SpeechOptions,
        rid: str,
    ) -> None:
        self.request_id = rid
        self._pool = pool
        self._timeouts = timeouts
        self._sample_rate = sample_rate
        self._options = options
        self._messages: list[str] = []  # all sent so far, to replay on a replacement socket
        self._held = ""  # whitespace not sent yet: an all-blank request must never be flushed
        self._req: WavesRequest | None = None
        self._lock = asyncio.Lock()  # one sender, or one socket replacement, at a time
        self._started = asyncio.Event()  # a socket is in use, or there is nothing to wait for
        self._error: TTSError | None = None
        self._finished = False
        self._interrupted = False
        self._done = False
        self._iterated = False
        self._began_at = 0.0
        self._flushed_at: float | None = None  # when the latest segment was flushed
        self._segments = 0  # segments flushed so far
        self._completes = 0  # and answered by Waves' `complete`
        self._unflushed = False  # text was sent since the last flush
        self._last_chunk_at = 0.0
        self._timeout: asyncio.Timeout | None = None

    async def send(self, text: str) -> None:
        """Add a piece of text to the request (sent with `continue: true`)."""
        if self._finished:
            raise RuntimeError("TextStream.send() after finish() or aclose()")
        self._held += text
        if not self._held.strip():
            return
        piece, self._held = self._held, ""
        await self._transmit(self._message(piece, more=True))
        self._unflushed = True

    async def flush(self) -> None:
        """Have Waves speak what was sent so far (one segment); more text may follow."""
        if self._finished:
            raise RuntimeError("TextStream.flush() after finish() or aclose()")
        if self._unflushed:
            await self._flush(more=True)

    async def finish(self) -> None:
        """No more text: flush, so Waves speaks what it holds. Sends nothing if nothing was sent."""
        if self._finished:
            return
        self._finished = True
        self._held = ""  # trailing blanks do not change speech
        if not self._messages:
            self._started.set()
            return
        if self._unflushed:
            await self._flush(more=False)
        else:
            # Every segment is flushed already (never flush an empty one: it gets no
            # `complete`): a consumer waiting for more may end now.
            self._reschedule()

    async def _flush(self, *, more: bool) -> None:
        self._unflushed = False
        self._segments += 1
        await self._transmit(self._message("", more=more, flush=True))
        self._flushed_at = asyncio.get_running_loop().time()
        self._reschedule()

    def _reschedule(self) -> None:
        if self._timeout is not None:
            with contextlib.suppress(RuntimeError):  # the wait is already ending
                self._timeout.reschedule(self._deadline())

    def _whole(self) -> bool:
        """Finished, and every segment answered."""
        return self._finished and self._completes >= self._segments

    async def aclose(self) -> None:
        """Interrupt: stop the request now and close its socket."""
        self._finished = True
        if self._interrupted or self._done:
            return
        self._interrupted = True
        self._started.set()
        if self._req is not None:
            self._pool.drop(self._req.sock)

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        if self._iterated:
            raise RuntimeError("a TextStream can be iterated only once")
        self._iterated = True
        return self._audio()

    def _message(self, text: str, *, more: bool = False, flush: bool = False) -> str:
        return request_json(
            text,
            sample_rate=self._sample_rate,
            options=self._options,
            rid=self.request_id,
            more=more,
            flush=flush,
        )

    async def _transmit(self, message: str) -> None:
        async with self._lock:
            if self._interrupted:
                raise RuntimeError("TextStream was closed")
            self._messages.append(message)
            try:
                if self._req is None:
                    self._began_at = asyncio.get_running_loop().time()
                    self._req = await begin(self._pool, self.request_id, [message])
                    self._started.set()
                else:
                    try:
                        await self._req.send(message)
                    except Stale as stale:
                        self._req = await retry(self._pool, self._req, stale, self._messages)
            except TTSError as exc:
                self._error = exc
                self._started.set()
                raise
            except asyncio.CancelledError:
                # The producer is gone mid-send: the request can never be completed.
                await self.aclose()
                raise

    def _deadline(self) -> float | None:
        """When the current wait for audio gives up; no limit while text may still come."""
        if self._whole():
            return asyncio.get_running_loop().time()  # nothing more to wait for
        if self._flushed_at is None or self._completes >= self._segments:
            return None
        if self._req is None or self._req.chunks == 0:
            return self._flushed_at + self._timeouts.first_chunk
        return max(self._flushed_at + self._timeouts.first_chunk,
                   self._last_chunk_at + self._timeouts.stall)  # fmt: skip

    async def _audio(self) -> AsyncGenerator[bytes, None]:
        await self._started.wait()
        if self._error is not None:
            raise self._error
        first = self._req
        if first is None or self._interrupted:
            return
        req = first
        loop = asyncio.get_running_loop()
        completed = False
        try:
            while True:
                req = self._req or req
                if self._whole():
                    break
                try:
                    async with asyncio.timeout_at(self._deadline()) as timeout:
                        self._timeout = timeout
                        chunk = await req.next_event()
                except Stale as stale:
                    async with self._lock:
                        if self._req is req:  # the sender did not replace it already
                            self._req = await retry(self._pool, req, stale, self._messages)
                    continue
                except TimeoutError:
                    if self._whole():
                        break  # finished with nothing left to flush
                    raise self._timeouts.error(req) from None
                except TTSError:
                    if self._interrupted:
                        return
                    if self._req is not req:
                        continue  # the sender moved the request to a fresh socket
                    raise
                finally:
                    self._timeout = None
                if chunk is None:
                    # Ours answer a flush; a server that completes text on its own (before any
                    # flush is outstanding) sends others, which end nothing.
                    if self._completes < self._segments:
                        self._completes += 1
                    continue  # the loop ends once the last segment's `complete` is in
                self._last_chunk_at = loop.time()
                if chunk:
                    yield chunk
            completed = True
            self._done = True
        finally:
            if not completed:
                self._interrupted = True
            end(self._pool, self._req or req, completed, self._began_at)
