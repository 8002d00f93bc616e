"""`WavesSSEClient`: Waves text-to-speech over HTTP streaming (`POST /waves/v1/tts/live`, SSE),
for when a WebSocket cannot be held.

It keeps `WavesClient.synthesize`'s promises: audio comes out exactly as Waves sent it, one chunk
per event; a stream that ends before `done` is `WavesTruncated`; the first chunk and every gap
after it are timed; interrupting closes that response at once. Each client keeps one HTTP/1.1
keep-alive pool, so a prompt does not pay a TCP/TLS handshake. The format, without I/O, is in
`sse_wire.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx

from telebridge.tts.errors import (
    TTSError,
    WavesConnectionError,
    WavesServerError,
    WavesTimeout,
    WavesTruncated,
)
from telebridge.tts.http_errors import (
    connection_error,
    describe_body,
    read_error_body,
    status_error,
)
from telebridge.tts.http_urls import sse_url, voices_url
from telebridge.tts.speech import SpeechOptions
from telebridge.tts.sse_wire import SSEDecoder, SSEEvent, parse_event
from telebridge.tts.wire import (
    check_request_id,
    request_json,
)

__all__ = ["WavesSSEClient"]

logger = logging.getLogger("telebridge.tts.sse")

# After `done`, how long the end of the body may take before its connection is dropped instead
# of going back to the pool.
_DRAIN_S = 1.0
# A pooled connection the server closed meanwhile fails like this before any answer: retried once.
_STALE = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class _Exchange:
    """One SSE request: its response, its decoder, its clock, and what has come so far."""

    def __init__(
        self, rid: str, where: str, *, first_chunk: float, stall: float, setup: float
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.rid = rid
        self.where = where
        self.first_chunk = first_chunk
        self.stall = stall
        # Until the request is on a connection, connecting is timed by httpx (open_timeout);
        # this is only a backstop. Sending the headers starts the first chunk's clock.
        self.deadline = self.loop.time() + setup + first_chunk
        self.budget: asyncio.Timeout | None = None
        self.fresh = False  # a new connection was opened for it
        self.sent = False  # its headers went out on a connection
        self.response: httpx.Response | None = None
        self.pieces: AsyncIterator[bytes] | None = None
        self.decoder = SSEDecoder()
        self.chunks = 0
        self.audio_bytes = 0
        self.done = False
        self.ended = False

    @property
    def reused(self) -> bool:
        """Sent on a pooled connection (one the server may have closed meanwhile)."""
        return self.sent and not self.fresh

    async def trace(self, name: str, info: dict[str, Any]) -> None:
        """httpcore's `trace` extension: learns when the connection is ready."""
        if name.endswith("connect_tcp.started"):
            self.fresh = True
        elif name.endswith("send_request_headers.started"):
            self.sent = True
            self.deadline = self.loop.time() + self.first_chunk
            if self.budget is not None:
                self.budget.reschedule(self.deadline)

    def timeout_error(self) -> TTSError:
        if not self.sent:
            return WavesConnectionError(f"cannot connect to {self.where}: timed out")
        if self.chunks == 0:
            return WavesTimeout(f"no audio from Waves within {self.first_chunk:g} s")
        return WavesTimeout(f"Waves stopped sending audio for {self.stall:g} s")

    def heard(self, audio: bytes) -> None:
        self.chunks += 1
        self.audio_bytes += len(audio)
        self.deadline = self.loop.time() + self.stall

    async def read(self, secret: str) -> list[SSEEvent]:
        """The events of the next piece of the body (maybe none); at its end, `ended` is set."""
        assert self.pieces is not None
        try:
            async with asyncio.timeout_at(self.deadline):
                piece = await anext(self.pieces, None)
        except TimeoutError:
            raise self.timeout_error() from None
        except httpx.HTTPError as exc:
            logger.debug("sse %s: body broke off (%s)", self.rid, type(exc).__name__)
            raise WavesTruncated(
                "Waves closed the connection before the request completed"
            ) from None
        if piece is None:
            self.ended = True
            found = self.decoder.close()
        else:
            found = self.decoder.feed(piece)
        events = []
        for data in found:
            try:
                events.append(parse_event(data, secret=secret))
            except WavesServerError as exc:
                # An event cut by the end of the stream is truncation, not a bad server.
                error: TTSError = exc
                if self.ended:
                    error = WavesTruncated("Waves ended the stream in the middle of an event")
                events.append(SSEEvent(error=error))
                break
        return events

    async def drain(self) -> bool:
        """Read the body to its end after `done`, so that its connection is reused."""
        assert self.pieces is not None
        try:
            async with asyncio.timeout(_DRAIN_S):
                while await anext(self.pieces, None) is not None:
                    pass  # anything after `done` is not this request's audio
        except (TimeoutError, httpx.HTTPError):
            return False
        return True

    async def close(self) -> None:
        """Close the response; one not read to its end takes its connection with it."""
        aclose = getattr(self.pieces, "aclose", None)
        if aclose is not None:
            await aclose()
        if self.response is not None:
            await self.response.aclose()


class WavesSSEClient:
    """Speaks text through Waves over HTTP streaming (SSE), on a pool of keep-alive connections."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        first_chunk_timeout: float = 5.0,
        open_timeout: float = 5.0,
        stall_timeout: float = 15.0,
        max_connections: int = 100,
        max_keepalive: int = 20,
    ) -> None:
        self._url = sse_url(url)
        self._voices = voices_url(url)
        self._api_key = api_key
        self._first_chunk = first_chunk_timeout
        self._open_timeout = open_timeout
        self._stall = stall_timeout
        self._max_keepalive = max_keepalive
        self._closed = False
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "text/event-stream",
            "Content-Type": "application/json",
            # A compressed stream would hold audio back in the compressor.
            "Accept-Encoding": "identity",
        }
        self._http = httpx.AsyncClient(
            http1=True,
            http2=False,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_keepalive,
                keepalive_expiry=30.0,
            ),
            # Reading is timed per prompt (first chunk, then stall) by the client itself.
            timeout=httpx.Timeout(
                None, connect=open_timeout, write=open_timeout, pool=open_timeout
            ),
        )

    async def __aenter__(self) -> WavesSSEClient:
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
        """Speak `text` in one request; yield PCM16LE chunks as received until `done`.

        Stop iterating (or `aclose()` the generator, or cancel the task) to interrupt: the
        response is closed at once and its connection is not reused. Use
        `contextlib.aclosing` to make that prompt.
        """
        self._check_open()
        rid = check_request_id(request_id)
        if not text.strip():
            return  # as over the WebSocket: an empty request has no audio and no `done`
        body = request_json(text, sample_rate=sample_rate, options=options, rid=rid).encode()
        started = asyncio.get_running_loop().time()
        ex = await self._start(rid, body)
        completed = reused = False
        try:
            while not ex.done:
                for event in await ex.read(self._api_key):
                    if event.error is not None:
                        raise event.error
                    if event.audio is not None:
                        ex.heard(event.audio)
                        if event.audio:
                            yield event.audio
                    if event.done:
                        ex.done = True
                        break
                if ex.ended and not ex.done:
                    raise WavesTruncated("Waves ended the stream before done")
            completed = True
            reused = await ex.drain()
        finally:
            await ex.close()
            elapsed = (asyncio.get_running_loop().time() - started) * 1000
            outcome = "complete" if completed else "interrupted"
            logger.debug(
                "sse %s: %s on %s connection%s, %d chunks, %d bytes, %.0f ms",
                rid,
                outcome,
                "a new" if ex.fresh else "a pooled",
                "" if reused or not completed else " (dropped: body did not end)",
                ex.chunks,
                ex.audio_bytes,
                elapsed,
            )

    async def _start(self, rid: str, body: bytes) -> _Exchange:
        """Send the request and wait for a 200 answer, once more if a pooled connection was
        found dead; other answers become their typed errors."""
        retried = False
        while True:
            ex = _Exchange(
                rid,
                self._url,
                first_chunk=self._first_chunk,
                stall=self._stall,
                setup=3 * self._open_timeout,  # a free connection, TCP, TLS
            )
            request = self._http.build_request(
                "POST",
                self._url,
                content=body,
                headers=self._headers,
                extensions={"trace": ex.trace},
            )
            try:
                async with asyncio.timeout_at(ex.deadline) as budget:
                    ex.budget = budget
                    response = await self._http.send(request, stream=True)
            except TimeoutError:
                raise ex.timeout_error() from None
            except httpx.HTTPError as exc:
                if ex.reused and not retried and isinstance(exc, _STALE):
                    logger.debug("sse %s: pooled connection was dead, reconnecting", rid)
                    retried = True
                    continue
                raise connection_error(exc, self._url) from None
            finally:
                ex.budget = None
            break
        if response.status_code != 200:
            error_body = b""
            try:
                async with asyncio.timeout_at(ex.deadline):
                    error_body = await read_error_body(response)
            except TimeoutError:
                pass  # the status says enough
            finally:
                await response.aclose()
            logger.debug("sse %s: HTTP %d", rid, response.status_code)
            raise status_error(
                response.status_code, response.headers, error_body, secret=self._api_key
            )
        kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            # Not a stream at all: say what it says rather than "ended before done".
            detail = describe_body(await read_error_body(response), secret=self._api_key)
            raise WavesServerError(f"Waves answered {kind} instead of an event stream: {detail}")
        ex.response = response
        ex.pieces = response.aiter_bytes()
        return ex

    async def prewarm(self, n: int = 1) -> None:
        """Open up to `n` keep-alive connections (at most `max_keepalive`) ahead of need.

        Each is opened by one cheap authenticated request, `GET` of the voice list, sent
        together so that each takes its own connection. A refused key raises its typed error and
        a connection that cannot be opened `WavesConnectionError`; any other answer (a server
        without that route, a limit) leaves its connection open all the same, and is logged.
        """
        self._check_open()
        n = min(n, self._max_keepalive)
        if n <= 0:
            return
        results = await asyncio.gather(*(self._warm() for _ in range(n)), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _warm(self) -> None:
        headers = {"Authorization": self._headers["Authorization"], "Accept": "application/json"}
        try:
            response = await self._http.get(
                self._voices, headers=headers, timeout=httpx.Timeout(self._open_timeout)
            )
        except httpx.HTTPError as exc:
            raise connection_error(exc, self._voices) from None
        if response.status_code in (401, 403):
            raise status_error(response.status_code, response.headers, b"", secret=self._api_key)
        logger.debug("sse: pre-connected (HTTP %d from the voice list)", response.status_code)

    async def aclose(self) -> None:
        """Close every connection. The client cannot be used afterwards."""
        self._closed = True
        await self._http.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise WavesConnectionError("this WavesSSEClient is closed")
