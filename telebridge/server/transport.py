"""The carrier's WebSocket as a call session's `Transport`: every send bounded, a stalled carrier
dropped.

It uses what our uvicorn protocol offers (server/ws_protocol.py: one write for many messages,
messages ignored unseen, abort) and falls back to plain starlette sends under another server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from starlette.websockets import WebSocket, WebSocketState
from uvicorn.protocols.utils import ClientDisconnected

from telebridge.call.events import WireMessage
from telebridge.call.ports import TransportClosed
from telebridge.server.ws_protocol import ABORT, IGNORE, SEND_MANY, MessageFilter

logger = logging.getLogger(__name__)

# A carrier that stops reading for this long is treated as gone (its socket buffer is full).
SEND_TIMEOUT = 5.0


class StarletteTransport:
    """A starlette WebSocket as the session's `Transport`."""

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self._stalled = False
        # Offered by our uvicorn protocol (ws_protocol.py); absent under another server.
        extensions = ws.scope.get("extensions") or {}
        self._abort: Callable[[], None] | None = extensions.get(ABORT)
        self._send_many: Callable[[Sequence[WireMessage]], Awaitable[None]] | None = extensions.get(
            SEND_MANY
        )
        self._set_filter: Callable[[MessageFilter], None] | None = extensions.get(IGNORE)

    def ignore(self, ignorable: MessageFilter) -> None:
        """Let the server drop, unseen, the messages `ignorable` names (when it can)."""
        if self._set_filter is not None:
            self._set_filter(ignorable)

    async def receive(self) -> str | bytes:
        try:
            message = await self._ws.receive()
        except RuntimeError as exc:  # receive after disconnect
            raise TransportClosed(str(exc)) from None
        if message["type"] == "websocket.disconnect":
            raise TransportClosed(f"closed with code {message.get('code')}")
        text = message.get("text")
        if text is not None:
            return str(text)
        return bytes(message.get("bytes") or b"")

    async def send_many(self, messages: Sequence[WireMessage]) -> None:
        """Send `messages` in order, in one write to the socket when the server allows it."""
        if self._stalled or self._ws.application_state is not WebSocketState.CONNECTED:
            raise TransportClosed("socket closed")
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                if self._send_many is not None:
                    await self._send_many(messages)
                    return
                for message in messages:
                    if isinstance(message, str):
                        await self._ws.send_text(message)
                    else:
                        await self._ws.send_bytes(message)
        except TimeoutError:
            logger.warning("carrier read nothing for %g s: dropping its connection", SEND_TIMEOUT)
            self._drop()
            raise TransportClosed(f"carrier did not read for {SEND_TIMEOUT} s") from None
        except ClientDisconnected:
            raise TransportClosed("carrier went away") from None

    async def close(self, code: int = 1000) -> None:
        if self._stalled or self._ws.application_state is not WebSocketState.CONNECTED:
            return
        try:
            # The close frame needs room in the send buffer too: never wait for it unbounded.
            async with asyncio.timeout(SEND_TIMEOUT):
                await self._ws.close(code)
        except TimeoutError:
            logger.warning("carrier took no close frame for %g s: dropping it", SEND_TIMEOUT)
            self._drop()
        except Exception:  # already gone: nothing left to close
            pass

    def _drop(self) -> None:
        self._stalled = True
        if self._abort is not None:
            self._abort()
