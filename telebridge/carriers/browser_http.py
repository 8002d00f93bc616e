"""The browser phone's I/O edge: creating a call (`POST /console/api/phone/calls`, behind the
console's gate) and its audio WebSocket (`/console/phone/stream`, which needs only the call's
stream token, like every carrier's stream).

A browser call has no carrier REST API: `BrowserCallControl` ends it by closing the socket and
tells the page of a transfer on the socket itself before closing it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketState

from telebridge.call.events import Started, WireMessage
from telebridge.carriers import paths
from telebridge.carriers.browser import CARRIER, RATE, BrowserStream
from telebridge.carriers.host import CallHost
from telebridge.flows.library import UnknownFlow
from telebridge.tokens import StreamGrant

logger = logging.getLogger(__name__)

# The console's gate (telebridge/console/gate.py has the same shape): None lets the request in,
# else the refusal to answer with. Kept here so the carriers import nothing of the console.
Gate = Callable[[HTTPConnection], Awaitable[Response | None]]
MAX_BODY_BYTES = 4096
# A page that reads nothing for this long cannot be told of a transfer.
SEND_TIMEOUT = 5.0
FIELDS = frozenset({"flow"})

Send = Callable[[Sequence[WireMessage]], Awaitable[None]]


class BrowserCallControl:
    """One browser call's control: everything happens on its WebSocket.

    `send` writes messages to the page (bounded); `close` is the stream's own close.
    """

    def __init__(
        self,
        call_id: str,
        stream: BrowserStream,
        *,
        send: Send,
        close: Callable[[], Awaitable[None]],
    ) -> None:
        self._call_id = call_id
        self._stream = stream
        self._send = send
        self._close = close

    async def hangup(self) -> None:
        await self._close()

    async def transfer(self, to: str, timeout: float) -> bool:  # noqa: ASYNC109
        # There is no phone line to move: the page is told where the call would go, then the
        # socket closes as a carrier's would once it has taken the caller elsewhere.
        logger.info("browser call %s: transfer to %s (the page is told)", self._call_id, to)
        await self._send(self._stream.transfer(to))
        await self._close()
        return True

    async def send_digits(self, digits: str) -> bool:
        return False  # in-band: BrowserStream.send_digits

    async def end_with_message(self, text: str) -> bool:
        return False  # no speech of its own: the session hangs up instead


def routes(host: CallHost, gate: Gate) -> list[BaseRoute]:
    async def create_call(request: Request) -> Response:
        refusal = await gate(request)
        if refusal is not None:
            return refusal
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        unknown = sorted(set(body) - FIELDS)
        if unknown:
            return _error(400, f"unknown field {unknown[0][:40]!r} (fields: flow)")
        requested = body.get("flow")
        if requested is not None and not isinstance(requested, str):
            return _error(400, "flow must be a string: the name of a flow")
        call_id = "web-" + secrets.token_hex(8)
        try:
            flow = host.choose_flow(requested or None, "console")
        except UnknownFlow:
            known = ", ".join(host.flow_names()) or "none"
            return _error(400, f"no flow named {str(requested)[:60]!r} (flows: {known})")
        if host.busy(CARRIER):
            return _error(503, "the bridge is busy or draining: try again shortly")
        grant = StreamGrant(
            carrier=CARRIER,
            call_id=call_id,
            flow=flow,
            caller="browser",
            callee="console",
            variables={"direction": "inbound"},
        )
        url = urlsplit(host.stream_url(paths.BROWSER_STREAM, grant))
        host.prefetch(grant, RATE)
        logger.info("browser call %s: created with flow %s", call_id, flow)
        stream = f"{url.path}?{url.query}"
        return JSONResponse(
            {"call_id": call_id, "flow": flow, "rate": RATE, "stream": stream}, status_code=201
        )

    async def stream(ws: WebSocket) -> None:
        browser = BrowserStream()

        def control(
            grant: StreamGrant, started: Started, close: Callable[[], Awaitable[None]]
        ) -> BrowserCallControl:
            return BrowserCallControl(
                started.call_id, browser, send=lambda m: _send(ws, m), close=close
            )

        await host.serve_stream(ws, carrier=CARRIER, stream=browser, control_for=control)

    return [
        Route(paths.BROWSER_CALLS, create_call, methods=["POST"]),
        WebSocketRoute(paths.BROWSER_STREAM, stream),
    ]


async def _json_body(request: Request) -> dict[str, Any] | Response:
    """The request's JSON object, or the answer refusing it (415, 413 or 400)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        return _error(415, "send the body as Content-Type: application/json")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return _error(413, f"the body is over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return _error(413, f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(body)
    except ValueError:
        return _error(400, "the body is not JSON")
    if not isinstance(data, dict):
        return _error(400, "the body must be a JSON object")
    return data


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _send(ws: WebSocket, messages: Sequence[WireMessage]) -> None:
    """Send on the page's socket unless it is gone; a page that does not read is given up."""
    if ws.application_state is not WebSocketState.CONNECTED:
        return
    try:
        async with asyncio.timeout(SEND_TIMEOUT):
            for message in messages:
                if isinstance(message, str):
                    await ws.send_text(message)
                else:
                    await ws.send_bytes(message)
    except Exception as exc:  # gone or stalled: the close that follows ends the call
        logger.info("browser phone: could not send to the page: %r", exc)
