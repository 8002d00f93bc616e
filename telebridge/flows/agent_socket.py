"""The agent step's I/O edge: the WebSocket the bridge opens to the application, signed.

The handshake carries `X-Telebridge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
"<t>.<url>")>` for the URL exactly as the step rendered it. Frames are limited in size, sockets
are not compressed (caller audio does not shrink), and proxies are taken from the environment
as `websockets` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import time

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.protocol import State

from telebridge.flows.ports import AgentClosed, AgentUnavailable

__all__ = ["MAX_FRAME_BYTES", "WebSocketAgentLink", "open_agent", "sign"]

logger = logging.getLogger(__name__)

# The largest frame an application may send (a text message is refused above 64 KB anyway).
MAX_FRAME_BYTES = 128 * 1024
SIGNATURE_HEADER = "X-Telebridge-Signature"


def sign(secret: str, url: str, now: int) -> str:
    """The signature header's value for a handshake to `url` at unix time `now`."""
    mac = hmac.new(secret.encode(), f"{now}.{url}".encode(), hashlib.sha256).hexdigest()
    return f"t={now},v1={mac}"


async def open_agent(url: str, timeout: float, secret: str) -> WebSocketAgentLink:  # noqa: ASYNC109
    """Connect to the application within `timeout` seconds; raises AgentUnavailable."""
    headers = {SIGNATURE_HEADER: sign(secret, url, int(time.time()))}
    try:
        ws = await connect(
            url,
            additional_headers=headers,
            open_timeout=timeout,
            close_timeout=2,
            max_size=MAX_FRAME_BYTES,
            max_queue=64,
            compression=None,
            user_agent_header="telebridge",
        )
    except InvalidStatus as exc:
        raise AgentUnavailable(f"the handshake was answered {exc.response.status_code}") from None
    except TimeoutError:
        raise AgentUnavailable(f"no connection within {timeout:g} s") from None
    except (OSError, WebSocketException, ValueError) as exc:
        raise AgentUnavailable(f"cannot connect ({type(exc).__name__}: {exc})"[:200]) from None
    return WebSocketAgentLink(ws)


class WebSocketAgentLink:
    """`AgentLink` over a websockets client connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def send(self, message: str | bytes) -> None:
        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    def send_now(self, message: str | bytes) -> bool:
        # 50 caller-audio frames a second per call: each skips the writer task and websockets'
        # awaited send (its context manager and drain), which cost as much as the write itself.
        # Only while the transport holds nothing unwritten, so flow control stays `send`'s.
        ws = self._ws
        transport = ws.transport
        if (
            ws.protocol.state is not State.OPEN
            or transport.is_closing()
            or transport.get_write_buffer_size()
        ):
            return False
        try:
            if isinstance(message, str):
                ws.protocol.send_text(message.encode())
            else:
                ws.protocol.send_binary(message)
            for data in ws.protocol.data_to_send():
                transport.write(data)  # frames only: the socket is open, so no end of stream
        except Exception:  # a transport error: the connection's own reader sees it and ends
            logger.debug("agent socket: a direct send failed", exc_info=True)
            return True  # the frame is as lost as the connection; `send` would only raise
        return True

    async def receive(self) -> str | bytes:
        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        with contextlib.suppress(Exception):
            await self._ws.close(code, reason)


def _closed(exc: ConnectionClosed) -> AgentClosed:
    received = exc.rcvd
    if received is None:
        return AgentClosed(None, "no close frame")
    return AgentClosed(received.code, received.reason)
