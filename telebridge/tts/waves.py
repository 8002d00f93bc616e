"""`WavesClient`: the I/O edge to Smallest AI's Waves text-to-speech WebSocket.

One request per socket at a time; sockets left open after `complete` go back to a small idle
pool, a socket the server closed is replaced. Audio comes out exactly as Waves sent it (PCM16LE
chunks of any size). Failures are the typed errors of `telebridge.tts.errors`. The API key goes
on the upgrade request only, and never into a message or a log record.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import json
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.protocol import State

from telebridge.tts.errors import (
    TTSError,
    WavesAuthError,
    WavesConnectionError,
    WavesForbiddenError,
    WavesRateLimited,
    WavesServerError,
    WavesTimeout,
    WavesTruncated,
)

__all__ = ["Frame", "SpeechOptions", "TextStream", "WavesClient", "parse_frame", "redacting_logger"]

logger = logging.getLogger(__name__)

# Waves chunks are small (about 150 ms), but a few MB leaves room for servers that send more.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_BEARER = re.compile(r"Bearer\s+\S+", re.IGNORECASE)
_RATE_LIMIT_WORDS = ("concurren", "rate limit", "rate_limit", "ratelimit", "too many", "429")
# Server request ids remembered per pooled socket, to ignore late frames of finished requests.
_MAX_SEEN_IDS = 32


@dataclass(frozen=True, slots=True)
class SpeechOptions:
    """How to speak: which Waves voice, model, language and speed."""

    voice_id: str
    model: str = "lightning_v3.1"
    language: str = "en"
    speed: float = 1.0


@dataclass(frozen=True, slots=True)
class Frame:
    """One server frame, parsed. Statuses other than chunk/complete/error are passed through."""

    status: str
    request_id: str | None = None
    external_request_id: str | None = None
    audio: bytes = b""
    message: str = ""
    code: str | None = None
    retry_after: float | None = None


def parse_frame(raw: str | bytes) -> Frame:
    """Parse one WebSocket message from Waves, or raise `WavesServerError` if it is malformed."""
    if isinstance(raw, bytes):
        raise WavesServerError("Waves sent a binary frame where JSON text was expected")
    try:
        obj = json.loads(raw)
    except ValueError:
        raise WavesServerError("Waves sent a frame that is not valid JSON") from None
    if not isinstance(obj, dict):
        raise WavesServerError("Waves sent a JSON frame that is not an object")
    status = obj.get("status")
    if not isinstance(status, str):
        raise WavesServerError("Waves sent a frame without a status")
    ids = {k: obj.get(k) for k in ("request_id", "external_request_id")}
    request_id, external_id = (v if isinstance(v, str) and v else None for v in ids.values())
    if status == "chunk":
        data = obj.get("data")
        encoded = data.get("audio") if isinstance(data, dict) else None
        if not isinstance(encoded, str):
            raise WavesServerError("Waves sent a chunk without data.audio")
        try:
            audio = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise WavesServerError("Waves sent a chunk whose audio is not valid base64") from None
        return Frame(status, request_id, external_id, audio=audio)
    if status == "error":
        # Two shapes: flat {"message": ...} (e.g. idle timeout) and nested {"error": {...}}.
        nested = obj.get("error")
        source = nested if isinstance(nested, dict) else obj
        message = source.get("message")
        if not isinstance(message, str) or not message:
            message = nested if isinstance(nested, str) and nested else "unspecified error"
        code = source.get("code")
        after = source.get("retry_after", obj.get("retry_after"))
        return Frame(
            status,
            request_id,
            external_id,
            message=message,
            code=str(code) if isinstance(code, str | int) and code != "" else None,
            retry_after=_seconds(after),
        )
    return Frame(status, request_id, external_id)


def _seconds(value: object) -> float | None:
    """A non-negative finite number of seconds from untrusted JSON, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if 0 <= seconds < float("inf") else None


def new_request_id() -> str:
    """A fresh request id in the shape Waves accepts."""
    return "tb_" + secrets.token_hex(8)


class _Redacting(logging.LoggerAdapter[logging.Logger]):
    """Formats each record itself so that it can take a secret out of the final text."""

    def __init__(self, base: logging.Logger, secret: str) -> None:
        super().__init__(base, {})
        self._secret = secret

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        values: object = args[0] if len(args) == 1 and isinstance(args[0], Mapping) else args
        try:
            text = str(msg) % values if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args}"
        if self._secret:
            text = text.replace(self._secret, "[redacted]")
        text = _BEARER.sub("Bearer [redacted]", text)  # also keys that are not ours
        self.logger.log(level, "%s", text, **kwargs)


def redacting_logger(base: logging.Logger, secret: str) -> logging.LoggerAdapter[logging.Logger]:
    """A logger for websockets that never lets `secret` through (it logs handshake headers)."""
    return _Redacting(base, secret)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Socket:
    """A connection plus the server ids of requests already finished on it."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: deque[str] = deque(maxlen=_MAX_SEEN_IDS)

    @property
    def open(self) -> bool:
        return self.ws.state is State.OPEN


class _Stale(Exception):
    """A pooled socket turned out dead before it answered; the caller may retry once."""

    def __init__(self, error: TTSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Request:
    """One request in flight on one socket: matches frames to it and turns them into audio."""

    def __init__(self, client: WavesClient, sock: _Socket, reused: bool, rid: str) -> None:
        self.client = client
        self.sock = sock
        self.reused = reused
        self.rid = rid
        self.aliases: set[str] = set()  # the server's own ids for this request
        self.foreign: set[str] = set()  # server ids seen echoing someone else's request_id
        self.responded = False
        self.chunks = 0
        self.audio_bytes = 0
        self.retried = False

    def _is_ours(self, frame: Frame) -> bool:
        ext, req = frame.external_request_id, frame.request_id
        if ext is not None:
            if ext != self.rid:
                if req is not None:
                    self.foreign.add(req)
                return False
            if req is not None:
                self.aliases.add(req)
            return True
        if req is None or req == self.rid or req in self.aliases:
            return True
        # Waves sends only its own id on some frames (e.g. `complete`). Until we learn that id
        # from a frame carrying ours, an unknown id is taken as ours: one request per socket.
        if self.aliases or req in self.foreign or req in self.sock.seen:
            return False
        self.aliases.add(req)
        return True

    async def send(self, message: str) -> None:
        try:
            await self.sock.ws.send(message)
        except ConnectionClosed:
            error = WavesTruncated("Waves closed the connection before the request was sent")
            if self.reused and not self.responded:
                raise _Stale(error) from None
            raise error from None

    async def next_event(self) -> bytes | None:
        """The next audio chunk of this request (maybe empty), or None at `complete`."""
        while True:
            try:
                raw = await self.sock.ws.recv()
            except ConnectionClosed:
                error = WavesTruncated("Waves closed the connection before the request completed")
                if self.reused and not self.responded:
                    raise _Stale(error) from None
                raise error from None
            frame = parse_frame(raw)
            if not self._is_ours(frame):
                continue
            if frame.status == "chunk":
                self.responded = True
                self.chunks += 1
                self.audio_bytes += len(frame.audio)
                return frame.audio
            if frame.status == "complete":
                self.responded = True
                self.sock.seen.extend(self.aliases)
                return None
            if frame.status == "error":
                failure = self.client._frame_error(frame)
                idle = "inactivity" in frame.message.lower()
                if self.reused and not self.responded and idle:
                    raise _Stale(failure)
                self.responded = True
                raise failure
            # word_timestamp and any future status: not audio, ignore.


class Synthesizer(Protocol):
    """Where speech comes from: the Waves client, a prompt cache, or anything that speaks alike."""

    def synthesize(
        self,
        text: str,
        *,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None = None,
    ) -> AsyncIterator[bytes]: ...


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
        self._url = url
        self._api_key = api_key
        self._first_chunk_timeout = first_chunk_timeout
        # Once audio flows, a gap longer than this means the server is stuck.
        self._stall_timeout = stall_timeout
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._max_idle = max(0, max_idle_sockets)
        self._idle: list[_Socket] = []
        self._owned: set[_Socket] = set()
        self._closers: set[asyncio.Task[None]] = set()
        self._closed = False
        parts = urlsplit(url)
        self._where = f"{parts.scheme}://{parts.netloc}{parts.path}"  # never the query
        self._ws_logger = redacting_logger(logging.getLogger(__name__ + ".websocket"), api_key)

    @property
    def idle_sockets(self) -> int:
        """Open sockets waiting in the pool."""
        return sum(1 for s in self._idle if s.open)

    async def __aenter__(self) -> WavesClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- public API ---------------------------------------------------------------------

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
        self._check_open()
        rid = self._check_id(request_id)
        if not text.strip():
            return  # Waves answers an empty segment with nothing, not even `complete`
        message = self._request_json(text, sample_rate=sample_rate, options=options, rid=rid)
        loop = asyncio.get_running_loop()
        started = loop.time()
        req = await self._begin(rid, [message])
        deadline = loop.time() + self._first_chunk_timeout
        completed = False
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await req.next_event()
                except _Stale as stale:
                    req = await self._retry(req, stale, [message])
                    deadline = loop.time() + self._first_chunk_timeout
                    continue
                except TimeoutError:
                    raise self._timeout_error(req) from None
                if chunk is None:
                    break
                deadline = loop.time() + self._stall_timeout
                if chunk:
                    yield chunk
            completed = True
        finally:
            self._end(req, completed, started)

    def stream(
        self, *, sample_rate: int, options: SpeechOptions, request_id: str | None = None
    ) -> TextStream:
        """A request whose text arrives in pieces (`send`, then `finish`); iterate for audio."""
        self._check_open()
        rid = self._check_id(request_id)
        return TextStream(self, sample_rate=sample_rate, options=options, rid=rid)

    async def prewarm(self, n: int = 1) -> None:
        """Open up to `n` sockets into the idle pool ahead of need."""
        self._check_open()
        n = min(n, self._max_idle - self.idle_sockets)
        if n <= 0:
            return
        results = await asyncio.gather(*(self._open() for _ in range(n)), return_exceptions=True)
        error: BaseException | None = None
        for result in results:
            if isinstance(result, BaseException):
                error = error or result
            else:
                self._put_back(result)
        if error is not None:
            raise error

    async def aclose(self) -> None:
        """Close every socket, idle or in use. The client cannot be used afterwards."""
        self._closed = True
        self._idle.clear()
        for sock in list(self._owned):
            self._drop(sock)
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)

    # --- pieces shared with TextStream --------------------------------------------------

    def _request_json(
        self,
        text: str,
        *,
        sample_rate: int,
        options: SpeechOptions,
        rid: str,
        more: bool = False,
        flush: bool = False,
    ) -> str:
        """The JSON of one request frame (or one piece of a streamed request)."""
        body: dict[str, Any] = {
            "voice_id": options.voice_id,
            "text": text,
            "model": options.model,
            "sample_rate": sample_rate,
            "speed": options.speed,
            "language": options.language,
            "request_id": rid,
            "word_timestamps": False,
        }
        if more:
            body["continue"] = True
        if flush:
            body["flush"] = True
        return json.dumps(body)

    async def _begin(self, rid: str, messages: list[str]) -> _Request:
        """Take a socket (pooled or new) and send `messages` on it, replacing a dead one once."""
        sock, reused = await self._acquire()
        req = _Request(self, sock, reused, rid)
        logger.debug("waves %s: start on %s socket", rid, "pooled" if reused else "new")
        try:
            for message in messages:
                await req.send(message)
        except _Stale as stale:
            return await self._retry(req, stale, messages)
        except BaseException:
            self._drop(sock)
            raise
        return req

    async def _retry(self, req: _Request, stale: _Stale, messages: list[str]) -> _Request:
        """Replace a pooled socket found dead with a fresh one and send the request again."""
        self._drop(req.sock)
        if req.retried or not req.reused:
            raise stale.error
        logger.debug("waves %s: pooled socket was dead, reconnecting", req.rid)
        fresh = _Request(self, await self._open(), False, req.rid)
        fresh.retried = True
        try:
            for message in messages:
                await fresh.send(message)
        except BaseException:
            self._drop(fresh.sock)
            raise
        return fresh

    def _end(self, req: _Request, completed: bool, started: float) -> None:
        elapsed = (asyncio.get_running_loop().time() - started) * 1000
        if completed:
            self._put_back(req.sock)
            outcome = "complete"
        else:
            self._drop(req.sock)  # interrupted or failed: that socket is never reused
            outcome = "interrupted"
        logger.debug(
            "waves %s: %s, %d chunks, %d bytes, %.0f ms",
            req.rid,
            outcome,
            req.chunks,
            req.audio_bytes,
            elapsed,
        )

    def _timeout_error(self, req: _Request) -> WavesTimeout:
        if req.chunks == 0:
            return WavesTimeout(f"no audio from Waves within {self._first_chunk_timeout:g} s")
        return WavesTimeout(f"Waves stopped sending audio for {self._stall_timeout:g} s")

    def _frame_error(self, frame: Frame) -> TTSError:
        message = self._redact(frame.message)
        code = self._redact(frame.code) if frame.code is not None else None
        wording = f"{message} {code or ''}".lower()
        if any(word in wording for word in _RATE_LIMIT_WORDS):
            return WavesRateLimited(f"Waves: {message}", retry_after=frame.retry_after)
        return WavesServerError(f"Waves: {message}", code=code)

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text

    def _check_open(self) -> None:
        if self._closed:
            raise WavesConnectionError("this WavesClient is closed")

    @staticmethod
    def _check_id(request_id: str | None) -> str:
        if request_id is None:
            return new_request_id()
        if not _REQUEST_ID.fullmatch(request_id):
            raise ValueError("request_id must match [A-Za-z0-9_.-]{1,128}")
        return request_id

    # --- the socket pool ----------------------------------------------------------------

    async def _acquire(self) -> tuple[_Socket, bool]:
        while self._idle:
            sock = self._idle.pop()
            if sock.open:
                return sock, True
            self._drop(sock)
        return await self._open(), False

    def _put_back(self, sock: _Socket) -> None:
        if sock.open and not self._closed and len(self._idle) < self._max_idle:
            self._idle.append(sock)
        else:
            self._drop(sock)

    def _drop(self, sock: _Socket) -> None:
        """Forget `sock` and close it in the background, so an interrupt never waits on I/O."""
        if sock in self._idle:
            self._idle.remove(sock)
        if sock not in self._owned:
            return  # already dropped
        self._owned.discard(sock)
        if sock.ws.state is State.CLOSED:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._close(sock.ws))
        except RuntimeError:  # no running loop (finalised late): just cut the connection
            sock.ws.transport.abort()
            return
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    @staticmethod
    async def _close(ws: ClientConnection) -> None:
        try:
            await ws.close()
        except Exception:  # the socket is being thrown away; nothing useful to do
            ws.transport.abort()

    async def _open(self) -> _Socket:
        self._check_open()
        try:
            ws = await connect(
                self._url,
                additional_headers={"Authorization": f"Bearer {self._api_key}"},
                open_timeout=self._open_timeout,
                close_timeout=self._close_timeout,
                max_size=MAX_MESSAGE_BYTES,
                logger=self._ws_logger,
                # Inflating every audio chunk costs more CPU per call than the bytes it saves.
                compression=None,
            )
        except InvalidStatus as exc:
            raise self._refusal(exc) from None
        except (OSError, TimeoutError, WebSocketException, ValueError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise WavesConnectionError(f"cannot connect to {self._where}: {reason}") from None
        sock = _Socket(ws)
        self._owned.add(sock)
        logger.debug("waves: connected to %s", self._where)
        return sock

    def _refusal(self, exc: InvalidStatus) -> TTSError:
        status = exc.response.status_code
        if status == 401:
            return WavesAuthError("Waves refused the API key (HTTP 401): check WAVES_API_KEY")
        if status == 403:
            return WavesForbiddenError("the Waves API key lacks access (HTTP 403)")
        if status == 429:
            after = _retry_after(exc.response.headers)
            return WavesRateLimited("Waves concurrency limit reached (HTTP 429)", retry_after=after)
        return WavesConnectionError(f"Waves refused the connection (HTTP {status})")


class TextStream:
    """One Waves request whose text arrives in pieces, e.g. from a language model.

    A producer calls `send(piece)` any number of times, then `finish()`; a consumer iterates the
    stream for PCM until `complete`. `aclose()` interrupts: the socket is closed, not reused.
    """

    def __init__(
        self, client: WavesClient, *, sample_rate: int, options: SpeechOptions, rid: str
    ) -> None:
        self.request_id = rid
        self._client = client
        self._sample_rate = sample_rate
        self._options = options
        self._messages: list[str] = []  # all sent so far, to replay on a replacement socket
        self._held = ""  # whitespace not sent yet: an all-blank request must never be flushed
        self._req: _Request | None = None
        self._lock = asyncio.Lock()  # one sender, or one socket replacement, at a time
        self._started = asyncio.Event()  # a socket is in use, or there is nothing to wait for
        self._error: TTSError | None = None
        self._finished = False
        self._interrupted = False
        self._done = False
        self._iterated = False
        self._began_at = 0.0
        self._flushed_at: float | None = None
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

    async def finish(self) -> None:
        """No more text: flush, so Waves speaks what it holds. Sends nothing if nothing was sent."""
        if self._finished:
            return
        self._finished = True
        self._held = ""  # trailing blanks do not change speech
        if not self._messages:
            self._started.set()
            return
        await self._transmit(self._message("", flush=True))
        self._flushed_at = asyncio.get_running_loop().time()
        if self._timeout is not None:
            with contextlib.suppress(RuntimeError):  # the wait is already ending
                self._timeout.reschedule(self._deadline())

    async def aclose(self) -> None:
        """Interrupt: stop the request now and close its socket."""
        self._finished = True
        if self._interrupted or self._done:
            return
        self._interrupted = True
        self._started.set()
        if self._req is not None:
            self._client._drop(self._req.sock)

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        if self._iterated:
            raise RuntimeError("a TextStream can be iterated only once")
        self._iterated = True
        return self._audio()

    def _message(self, text: str, *, more: bool = False, flush: bool = False) -> str:
        return self._client._request_json(
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
                    self._req = await self._client._begin(self.request_id, [message])
                    self._started.set()
                else:
                    try:
                        await self._req.send(message)
                    except _Stale as stale:
                        self._req = await self._client._retry(self._req, stale, self._messages)
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
        if self._flushed_at is None:
            return None
        if self._req is None or self._req.chunks == 0:
            return self._flushed_at + self._client._first_chunk_timeout
        return max(self._flushed_at, self._last_chunk_at) + self._client._stall_timeout

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
                try:
                    async with asyncio.timeout_at(self._deadline()) as timeout:
                        self._timeout = timeout
                        chunk = await req.next_event()
                except _Stale as stale:
                    async with self._lock:
                        if self._req is req:  # the sender did not replace it already
                            self._req = await self._client._retry(req, stale, self._messages)
                    continue
                except TimeoutError:
                    raise self._client._timeout_error(req) from None
                except TTSError:
                    if self._interrupted:
                        return
                    if self._req is not req:
                        continue  # the sender moved the request to a fresh socket
                    raise
                finally:
                    self._timeout = None
                if chunk is None:
                    if self._finished:
                        break
                    continue  # a `complete` before our flush belongs to an earlier segment
                self._last_chunk_at = loop.time()
                if chunk:
                    yield chunk
            completed = True
            self._done = True
        finally:
            if not completed:
                self._interrupted = True
            self._client._end(self._req or req, completed, self._began_at)
