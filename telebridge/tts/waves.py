"""`WavesClient`: the I/O edge to Smallest AI's Waves text-to-speech WebSocket.

One request per socket at a time; sockets left open after `complete` go back to a small idle
pool (`tts.pool`), a socket the server closed is replaced. Audio comes out exactly as Waves sent
it (PCM16LE chunks of any size). Failures are the typed errors of `telebridge.tts.errors`. The
API key goes on the upgrade request only, and never into a message or a log record.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from telebridge.tts.pool import SocketPool
from telebridge.tts.request import Stale, Timeouts, begin, end, retry
from telebridge.tts.speech import SpeechOptions
from telebridge.tts.text_stream import TextStream
from telebridge.tts.wire import check_request_id, request_json

__all__ = ["WavesClient"]


class WavesClient:
    """Speaks text through Waves over pooled WebSockets."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        first_chunk_timeout: float = 5.0,
        open_timeout: float = 5.0,
        max_idle_sockets: int = 4,
        stall_timeout: float = 15.0,
        close_timeout: float = 2.0,
    ) -> None:
        # Once audio flows, a gap longer than `stall_timeout` means the server is stuck.
        self._timeouts = Timeouts(first_chunk=first_chunk_timeout, stall=stall_timeout)
        self._pool = SocketPool(
            url,
            api_key,
            open_timeout=open_timeout,
            close_timeout=close_timeout,
            max_idle=max_idle_sockets,
        )

    @property
    def idle_sockets(self) -> int:
        """Open sockets waiting in the pool."""
        return self._pool.idle_sockets

    async def __aenter__(self) -> WavesClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def synthesize(
        self,
        text: str,
        *,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """Speak `text` in one request; yield PCM16LE chunks as received until `complete`.

        Stop iterating (or `aclose()` the generator, or cancel the task) to interrupt: the socket
        is closed at once and never reused. Use `contextlib.aclosing` to make that prompt.
        """
        self._pool.check_open()
        rid = check_request_id(request_id)
        if not text.strip():
            return  # Waves answers an empty segment with nothing, not even `complete`
        message = request_json(text, sample_rate=sample_rate, options=options, rid=rid)
        loop = asyncio.get_running_loop()
        started = loop.time()
        req = await begin(self._pool, rid, [message])
        deadline = loop.time() + self._timeouts.first_chunk
        completed = False
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await req.next_event()
                except Stale as stale:
                    req = await retry(self._pool, req, stale, [message])
                    deadline = loop.time() + self._timeouts.first_chunk
                    continue
                except TimeoutError:
                    raise self._timeouts.error(req) from None
                if chunk is None:
                    break
                deadline = loop.time() + self._timeouts.stall
                if chunk:
                    yield chunk
            completed = True
        finally:
            end(self._pool, req, completed, started)

    def stream(
        self, *, sample_rate: int, options: SpeechOptions, request_id: str | None = None
    ) -> TextStream:
        """A request whose text arrives in pieces (`send`, then `finish`); iterate for audio."""
        self._pool.check_open()
        rid = check_request_id(request_id)
        return TextStream(
            self._pool, self._timeouts, sample_rate=sample_rate, options=options, rid=rid
        )

    async def probe(self) -> None:
        """Open one fresh socket (kept idle when there is room): raises the typed error of a
        WebSocket that cannot be opened."""
        sock = await self._pool.open()
        self._pool.put_back(sock)

    async def prewarm(self, n: int = 1) -> None:
        """Open up to `n` sockets into the idle pool ahead of need."""
        await self._pool.prewarm(n)

    async def aclose(self) -> None:
        """Close every socket, idle or in use. The client cannot be used afterwards."""
        await self._pool.aclose()
