"""A local stand-in for Waves text-to-speech that speaks with the embedded espeak-ng.

It serves Waves' three transports on one port: the WebSocket (Waves' URL path, Bearer
authentication, request validation, base64 PCM chunks, `complete`, `continue`/`flush`, the idle
timeout), and HTTP streaming (SSE) and sync (`standin_http.py`), so the bridge runs unchanged
without a Waves key. `Faults` injects failures for tests. `render` gives exactly the PCM one
request produces, so tests can compare bytes.

Run it by hand with `python -m telebridge.tts.standin [--port P] [--api-key K]`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hmac
import http
import json
import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from telebridge.logs import redacting_logger
from telebridge.tts import espeak
from telebridge.tts.standin_faults import Faults as Faults  # re-exported: tests inject faults
from telebridge.tts.standin_http import StandinConnection
from telebridge.tts.wire import MAX_MESSAGE_BYTES

logger = logging.getLogger(__name__)

WAVES_PATH = "/waves/v1/tts/live"
SAMPLE_RATES = frozenset({8000, 16000, 24000, 44100})
MODELS = frozenset({"lightning_v3.1", "lightning_v3.1_pro"})
DEFAULT_SAMPLE_RATE = 44100
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")

# Waves-like voice ids -> espeak-ng voices present in the bundled data.
VOICES: dict[str, str] = {
    "emily": "en-us",
    "james": "en",
    "aarav": "hi",
    "sofia": "es",
    "lukas": "de",
    "chloe": "fr",
}


def render(text: str, *, sample_rate: int, voice_id: str = "emily", speed: float = 1.0) -> bytes:
    """Exactly the PCM16LE the stand-in sends for one request with this text (deterministic)."""
    try:
        voice = VOICES[voice_id]
    except KeyError:
        raise ValueError(f"unknown voice_id {voice_id!r}") from None
    return espeak.synthesize(text, voice=voice, speed=speed, sample_rate=sample_rate)


def default_chunk_bytes(sample_rate: int) -> int:
    """About 150 ms of audio plus one byte: odd on purpose, as real chunk sizes are unspecified."""
    return sample_rate * 2 * 150 // 1000 + 1


def validate(body: dict[str, Any]) -> str | None:
    """What is wrong with one request frame, or None. Mirrors Waves' documented fields."""
    voice = body.get("voice_id")
    if not isinstance(voice, str) or not voice:
        return "voice_id is required"
    if voice not in VOICES:
        return f"Invalid Voice ID: {voice}"
    if not isinstance(body.get("text"), str):
        return "text is required"
    rate = body.get("sample_rate", DEFAULT_SAMPLE_RATE)
    if isinstance(rate, bool) or rate not in SAMPLE_RATES:
        return "sample_rate must be one of 8000, 16000, 24000, 44100"
    speed = body.get("speed", 1)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.5 <= speed <= 2:
        return "speed must be between 0.5 and 2"
    if body.get("model", "lightning_v3.1") not in MODELS:
        return "model must be lightning_v3.1 or lightning_v3.1_pro"
    for name in ("request_id", "session_id"):
        value = body.get(name)
        if value is not None and not (isinstance(value, str) and _REQUEST_ID.fullmatch(value)):
            return f"{name} must match [A-Za-z0-9_.-]{{1,128}}"
    for name in ("continue", "flush", "word_timestamps"):
        if not isinstance(body.get(name, False), bool):
            return f"{name} must be a boolean"
    return None


@dataclass
class _Pending:
    """Text pieces of one request id, buffered until a flush or a request without `continue`."""

    body: dict[str, Any]
    pieces: list[str] = field(default_factory=list)


class StandinServer:
    """The Waves stand-in on a loopback port; `async with StandinServer() as server: ...`."""

    def __init__(
        self,
        *,
        api_key: str = "sk_standin",
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        idle_timeout: float = 60.0,
    ) -> None:
        self.api_key = api_key
        self.faults = faults if faults is not None else Faults()
        self.requests: list[dict[str, Any]] = []
        self.connections = 0  # sockets accepted so far
        self.refused = 0  # handshakes refused by the `refuse_status` fault
        self.open_connections = 0  # sockets open now
        self.http_requests: list[dict[str, Any]] = []  # {"path", "body"} of each HTTP request
        self.http_connections = 0  # HTTP connections accepted so far
        self.speaking = 0  # WebSocket requests being answered now
        self.most_speaking = 0  # the most answered at once so far (a concurrency cap's witness)
        self._host = host
        self._port = port
        self._idle_timeout = idle_timeout
        self._server: Server | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("StandinServer is not started")
        return self._url

    async def start(self) -> None:
        # espeak-ng's helper process starts now, not on the first request's clock.
        await asyncio.to_thread(espeak.native_rate)
        connection = type("Connection", (StandinConnection,), {"standin": self})
        self._server = await serve(
            self._session,
            self._host,
            self._port,
            process_request=self._check_upgrade,
            max_size=MAX_MESSAGE_BYTES,
            create_connection=connection,
            # HTTP connections live in the handshake (see standin_http): no deadline on it.
            open_timeout=None,
            logger=redacting_logger(logging.getLogger(__name__ + ".websocket"), self.api_key),
        )
        port = self._server.sockets[0].getsockname()[1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._url = f"ws://{host}:{port}{WAVES_PATH}"
        logger.info("Waves stand-in listening on %s", self._url)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> StandinServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @staticmethod
    def voices() -> list[dict[str, Any]]:
        """The voices, as Waves' get_voices lists them."""
        return [
            {"voiceId": name, "displayName": name.title(), "tags": {"language": [voice]}}
            for name, voice in VOICES.items()
        ]

    def check_request(self, body: dict[str, Any]) -> str | None:
        """What is wrong with a request body, or None (the same rules on every transport)."""
        return validate(body)

    async def speak(self, body: dict[str, Any]) -> tuple[bytes, bool]:
        """The PCM for a valid request body, and whether the per-request faults target it."""
        pcm = await asyncio.to_thread(
            render,
            body["text"],
            sample_rate=body.get("sample_rate", DEFAULT_SAMPLE_RATE),
            voice_id=body["voice_id"],
            speed=body.get("speed", 1),
        )
        return pcm, self.faults.applies_to(body["text"])

    def _check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != WAVES_PATH:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
        refuse = self.faults.refuse_status
        if refuse is not None:
            self.refused += 1
            response = connection.respond(refuse, "Refused by the stand-in (fault)\n")
            if refuse == 429 and self.faults.retry_after is not None:
                response.headers["Retry-After"] = f"{self.faults.retry_after:g}"
            return response
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {self.api_key}".encode()):
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
        return None

    def _idle_limit(self, connection: ServerConnection) -> float:
        """The idle timeout, or `?timeout=N` from the URL as Waves allows."""
        request = connection.request
        if request is not None:
            values = parse_qs(urlsplit(request.path).query).get("timeout")
            if values:
                try:
                    return max(0.01, float(values[0]))
                except ValueError:
                    pass
        return self._idle_timeout

    async def _session(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.open_connections += 1
        session_id = "sess_" + secrets.token_hex(6)
        idle = self._idle_limit(ws)
        pending: dict[str, _Pending] = {}
        try:
            while True:
                try:
                    async with asyncio.timeout(idle):
                        raw = await ws.recv()
                except TimeoutError:
                    message = f"Connection timed out after {idle:g} seconds of inactivity"
                    await ws.send(json.dumps({"status": "error", "message": message}))
                    await ws.close()
                    return
                if not await self._on_message(ws, session_id, raw, pending):
                    return
        except ConnectionClosed:
            return
        finally:
            self.open_connections -= 1

    async def _on_message(
        self,
        ws: ServerConnection,
        session_id: str,
        raw: str | bytes,
        pending: dict[str, _Pending],
    ) -> bool:
        """Handle one client frame; False once the socket was closed."""
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            await self._send_error(ws, "request must be a JSON object", session_id, None)
            return True
        self.requests.append(body)
        ext = body.get("request_id")
        problem = validate(body)
        if problem is not None:
            await self._send_error(ws, problem, session_id, ext if isinstance(ext, str) else None)
            return True
        key = ext or ""
        entry = pending.setdefault(key, _Pending(body))
        entry.pieces.append(body["text"])
        if body.get("continue") and not body.get("flush"):
            return True
        del pending[key]
        text = "".join(entry.pieces)
        if not text.strip():
            return True  # an empty segment yields nothing, not even `complete`
        return await self._speak(ws, session_id, ext, text, entry.body)

    async def _send_error(
        self, ws: ServerConnection, message: str, session_id: str, ext: str | None
    ) -> None:
        frame: dict[str, Any] = {"status": "error", "session_id": session_id}
        if ext is not None:
            frame["external_request_id"] = ext
        frame["error"] = {"message": message, "code": "invalid_request"}
        await ws.send(json.dumps(frame))

    async def _speak(
        self,
        ws: ServerConnection,
        session_id: str,
        ext: str | None,
        text: str,
        body: dict[str, Any],
    ) -> bool:
        self.speaking += 1
        self.most_speaking = max(self.most_speaking, self.speaking)
        try:
            return await self._answer(ws, session_id, ext, text, body)
        finally:
            self.speaking -= 1

    async def _answer(
        self,
        ws: ServerConnection,
        session_id: str,
        ext: str | None,
        text: str,
        body: dict[str, Any],
    ) -> bool:
        faults = self.faults
        ids: dict[str, str] = {
            "session_id": session_id,
            "request_id": "req_" + secrets.token_hex(6),
        }
        if ext is not None:
            ids["external_request_id"] = ext
        injected = faults.take_error(text)
        if injected is not None:
            if faults.flat_error:
                error: dict[str, Any] = {"status": "error", "message": injected}
            else:
                error = {
                    "status": "error",
                    **ids,
                    "error": {"message": injected, "code": "standin_fault"},
                }
            await ws.send(json.dumps(error))
            return True
        rate = body.get("sample_rate", DEFAULT_SAMPLE_RATE)
        # Synthesis runs in a thread so the server's loop keeps serving other sockets.
        pcm = await asyncio.to_thread(
            render, text, sample_rate=rate, voice_id=body["voice_id"], speed=body.get("speed", 1)
        )
        targeted = faults.applies_to(text)
        if faults.first_chunk_delay > 0 and targeted:
            await asyncio.sleep(faults.first_chunk_delay)
        size = max(1, faults.chunk_bytes or default_chunk_bytes(rate))
        limit = faults.drop_after_bytes if targeted else None
        sent = 0
        for start in range(0, len(pcm), size):
            if limit is not None and sent >= limit:
                break
            piece = pcm[start : start + size]
            if limit is not None:
                piece = piece[: limit - sent]
            if start and faults.chunk_interval > 0:
                await asyncio.sleep(faults.chunk_interval)
            audio = base64.b64encode(piece).decode("ascii")
            await ws.send(json.dumps({"status": "chunk", **ids, "data": {"audio": audio}}))
            sent += len(piece)
        if limit is not None and sent >= limit:
            await ws.close(1011, "stand-in fault: connection dropped")
            return False
        # Like Waves, `complete` carries the server's ids only, not the client's request_id.
        complete = {"status": "complete", "request_id": ids["request_id"], "session_id": session_id}
        await ws.send(json.dumps(complete))
        if faults.close_after_complete:
            await ws.close()
            return False
        return True


async def _serve(host: str, port: int, api_key: str, idle_timeout: float) -> None:
    async with StandinServer(api_key=api_key, host=host, port=port, idle_timeout=idle_timeout) as s:
        print(f"Waves stand-in on {s.url} (Ctrl-C to stop)", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m telebridge.tts.standin",
        description="Serve a local stand-in for Waves text-to-speech (espeak-ng voices): the "
        "WebSocket, HTTP streaming (SSE) and HTTP sync, on one port.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default="sk_standin", help="Bearer key clients must send")
    parser.add_argument("--idle-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, args.api_key, args.idle_timeout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
