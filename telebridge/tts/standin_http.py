"""The stand-in's HTTP side: Waves' streaming (`POST /waves/v1/tts/live`, server-sent events) and
sync (`POST /waves/v1/tts`, the whole PCM) endpoints, on the same port as its WebSocket.

The websockets server parses only GET upgrades, so each connection is a `StandinConnection`: it
looks at the first bytes a client sends, and a request that is not a GET is served here, with
h11, never reaching the WebSocket protocol. Connections are kept alive for further requests (as
Waves' are), until the client closes them or `IDLE_TIMEOUT` passes without one.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
from typing import Any, Protocol

import h11
from websockets.asyncio.server import ServerConnection

from telebridge.tts.standin_faults import Faults

__all__ = ["SSE_PATH", "SYNC_PATH", "StandinConnection", "sse_chunk_bytes"]

logger = logging.getLogger("telebridge.tts.standin")

SSE_PATH = "/waves/v1/tts/live"
SYNC_PATH = "/waves/v1/tts"
VOICES_PATH = "/waves/v1/lightning-v3.1/get_voices"
MAX_BODY_BYTES = 1024 * 1024
MAX_HEAD_BYTES = 16 * 1024
IDLE_TIMEOUT = 30.0


def sse_chunk_bytes(sample_rate: int) -> int:
    """About 20 ms of audio plus one byte, as Waves' SSE chunks are small and of any length."""
    return sample_rate * 2 * 20 // 1000 + 1


def waves_400(message: str, field: str | None = None) -> bytes:
    """Waves' 400 body: `{"error": [{"code": "custom", "path": [...], "message": ...}]}`."""
    item = {"code": "custom", "path": [field] if field else [], "message": message}
    return json.dumps({"error": [item]}).encode()


def _field_of(problem: str) -> str | None:
    if problem.startswith("Invalid Voice ID"):
        return "voice_id"
    word = problem.split(" ", 1)[0]
    return word if word.isidentifier() and word.islower() else None


class StandinHost(Protocol):
    """What the HTTP side uses of the stand-in server."""

    api_key: str
    faults: Faults
    http_requests: list[dict[str, Any]]
    http_connections: int

    def voices(self) -> list[dict[str, Any]]: ...
    def check_request(self, body: dict[str, Any]) -> str | None: ...
    async def speak(self, body: dict[str, Any]) -> tuple[bytes, bool]: ...


class StandinConnection(ServerConnection):
    """A connection to the stand-in: a WebSocket upgrade, or HTTP requests served here."""

    standin: StandinHost  # set on the subclass the server makes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mode: str | None = None  # "websocket" or "http", from the request head
        self._head = bytearray()
        self._decided = asyncio.Event()
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self._more = asyncio.Event()
        self._lost = asyncio.Event()

    # --- asyncio protocol -------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._mode is None:
            # Decide on the whole request head: a GET that asks to upgrade is a WebSocket.
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0 and len(self._head) < MAX_HEAD_BYTES:
                return
            head = bytes(self._head[: end if end >= 0 else len(self._head)]).lower()
            upgrade = head.startswith(b"get ") and b"\r\nupgrade:" in head
            self._mode = "websocket" if upgrade else "http"
            self._decided.set()
            data, self._head = bytes(self._head), bytearray()
        if self._mode == "websocket":
            super().data_received(data)
            return
        try:
            self._h11.receive_data(data)
        except h11.RemoteProtocolError:
            self.transport.abort()
        self._more.set()

    def eof_received(self) -> None:
        if self._mode == "http":
            self._h11.receive_data(b"")
            self._more.set()
            return
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost.set()
        self._more.set()
        self._decided.set()
        super().connection_lost(exc)

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        await self._decided.wait()
        if self._mode != "http":
            await super().handshake(*args, **kwargs)
            return
        self.standin.http_connections += 1
        try:
            await self._serve_http()
        except Exception:
            logger.exception("stand-in: HTTP connection failed")
        finally:
            if not self._lost.is_set():
                self.transport.close()
                # Let what was written reach the client before the server aborts the transport.
                try:
                    async with asyncio.timeout(2):
                        await self._lost.wait()
                except TimeoutError:
                    pass

    # --- HTTP ---------------------------------------------------------------------------

    async def _next_event(self) -> Any:
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError:
                return h11.ConnectionClosed()
            if event is not h11.NEED_DATA:
                return event
            if self._lost.is_set():
                return h11.ConnectionClosed()
            self._more.clear()
            try:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    await self._more.wait()
            except TimeoutError:
                return h11.ConnectionClosed()

    async def _serve_http(self) -> None:
        while True:
            event = await self._next_event()
            if not isinstance(event, h11.Request):
                return
            body = bytearray()
            while True:
                part = await self._next_event()
                if isinstance(part, h11.Data):
                    body += part.data
                    if len(body) > MAX_BODY_BYTES:
                        self._answer(413, b'{"error": "request body too large"}')
                        return
                elif isinstance(part, h11.EndOfMessage):
                    break
                else:
                    return
            keep = await self._handle(event, bytes(body))
            if not keep or self._h11.our_state is not h11.DONE:
                return
            try:
                self._h11.start_next_cycle()
            except h11.LocalProtocolError:
                return

    def _write(self, event: Any) -> None:
        data = self._h11.send(event)
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def _answer(
        self,
        status: int,
        body: bytes,
        *,
        kind: str = "application/json",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        fields = [("Content-Type", kind), ("Content-Length", str(len(body)))] + (headers or [])
        self._write(h11.Response(status_code=status, headers=fields))
        self._write(h11.Data(data=body))
        self._write(h11.EndOfMessage())

    async def _handle(self, request: h11.Request, raw: bytes) -> bool:
        """Answer one request; False when the connection must close after it."""
        server = self.standin
        path = request.target.decode("latin-1").split("?", 1)[0]
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        server.http_requests.append({"path": path, "body": body})
        faults = server.faults
        given = dict(request.headers).get(b"authorization", b"")
        authorised = hmac.compare_digest(given, f"Bearer {server.api_key}".encode())
        if request.method == b"GET" and path == VOICES_PATH:
            if not authorised:
                self._answer(401, b'{"error": "Unauthorized"}')
            else:
                self._answer(200, json.dumps({"voices": server.voices()}).encode())
            return True
        if request.method != b"POST" or path not in (SSE_PATH, SYNC_PATH):
            self._answer(404, b'{"error": "not found"}')
            return True
        if faults.http_status is not None:
            headers = []
            if faults.http_status == 429 and faults.retry_after is not None:
                headers.append(("Retry-After", f"{faults.retry_after:g}"))
            message = json.dumps({"error": "refused by the stand-in (fault)"}).encode()
            self._answer(faults.http_status, message, headers=headers)
            return True
        if not authorised:
            self._answer(401, b'{"error": "Unauthorized"}')
            return True
        if not isinstance(body, dict):
            self._answer(400, waves_400("request body must be a JSON object"))
            return True
        problem = server.check_request(body)
        if problem is None and path == SYNC_PATH and body.get("output_format", "pcm") != "pcm":
            problem = "output_format: the stand-in makes pcm only"
        if problem is not None:
            self._answer(400, waves_400(problem, _field_of(problem)))
            return True
        injected = faults.take_error(body["text"])
        if injected is not None:
            self._answer(400, waves_400(injected))
            return True
        pcm, targeted = await server.speak(body)
        if faults.first_chunk_delay > 0 and targeted:
            await asyncio.sleep(faults.first_chunk_delay)
        limit = faults.drop_after_bytes if targeted else None
        if path == SYNC_PATH:
            return self._sync(pcm, limit)
        rate = body.get("sample_rate", 44100)
        size = max(1, faults.chunk_bytes or sse_chunk_bytes(rate))
        # `chunk_interval` is per WebSocket chunk (150 ms of audio): smaller chunks come sooner,
        # so audio arrives at the same pace over both transports.
        interval = faults.chunk_interval * size / (rate * 2 * 150 // 1000 + 1)
        return await self._sse(pcm, size, limit, interval)

    def _sync(self, pcm: bytes, limit: int | None) -> bool:
        head = [("Content-Type", "audio/wav"), ("Content-Length", str(len(pcm)))]
        self._write(h11.Response(status_code=200, headers=head))
        if limit is not None and limit < len(pcm):
            self._write(h11.Data(data=pcm[:limit]))
            self.transport.close()  # fewer bytes than announced: a dropped connection
            return False
        self._write(h11.Data(data=pcm))
        self._write(h11.EndOfMessage())
        return True

    async def _sse(self, pcm: bytes, size: int, limit: int | None, interval: float) -> bool:
        head = [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked"),
                ("Cache-Control", "no-cache")]  # fmt: skip
        self._write(h11.Response(status_code=200, headers=head))
        sent = 0
        for start in range(0, len(pcm), size):
            if limit is not None and sent >= limit:
                break
            piece = pcm[start : start + size]
            if limit is not None:
                piece = piece[: limit - sent]
            if start and interval > 0:
                await asyncio.sleep(interval)
            if self._lost.is_set():
                return False
            audio = base64.b64encode(piece).decode("ascii")
            data = json.dumps({"audio": audio, "done": False, "status": "206"})
            self._write(h11.Data(data=f"event: audio\ndata: {data}\n\n".encode()))
            sent += len(piece)
            await self._drain()
        if limit is not None and sent >= limit:
            self.transport.close()  # the stream ends without `done`: truncated
            return False
        self._write(h11.Data(data=b'data: {"status": "200", "done": true}\n\n'))
        self._write(h11.EndOfMessage())
        return True

    async def _drain(self) -> None:
        # Yield to the loop so a client reading slowly sees chunks as they go (no pile-up).
        await asyncio.sleep(0)
