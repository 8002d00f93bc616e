"""StarletteTransport: a carrier that stops reading is dropped after SEND_TIMEOUT."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import pytest
from starlette.websockets import WebSocket, WebSocketState

from telebridge.call.ports import TransportClosed
from telebridge.server import transport
from telebridge.server.transport import StarletteTransport
from telebridge.server.ws_protocol import ABORT, SEND_MANY


class StuckSocket:
    """A WebSocket whose carrier reads nothing: every send waits forever."""

    def __init__(self, *, extensions: bool) -> None:
        self.application_state = WebSocketState.CONNECTED
        self.aborted = 0
        self.sends = 0
        self.closed: list[int] = []
        self.scope: dict[str, Any] = {}
        if extensions:
            self.scope["extensions"] = {SEND_MANY: self._send_many, ABORT: self._abort}

    async def _send_many(self, messages: Sequence[str | bytes]) -> None:
        self.sends += 1
        await asyncio.Event().wait()

    def _abort(self) -> None:
        self.aborted += 1

    async def send_text(self, text: str) -> None:
        self.sends += 1
        await asyncio.Event().wait()

    async def send_bytes(self, data: bytes) -> None:
        await self.send_text("")

    async def close(self, code: int = 1000) -> None:
        self.closed.append(code)
        await asyncio.Event().wait()


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "SEND_TIMEOUT", 0.05)


async def test_a_send_the_carrier_does_not_read_drops_the_connection() -> None:
    ws = StuckSocket(extensions=True)
    t = StarletteTransport(cast(WebSocket, ws))
    with pytest.raises(TransportClosed, match="did not read"):
        await asyncio.wait_for(t.send_many(["a", b"b"]), 1.0)
    assert ws.aborted == 1
    with pytest.raises(TransportClosed):  # stalled: no further send is tried
        await t.send_many(["c"])
    await asyncio.wait_for(t.close(), 1.0)  # nor a close frame
    assert ws.sends == 1 and ws.closed == []


async def test_without_our_protocol_plain_sends_are_bounded_too() -> None:
    ws = StuckSocket(extensions=False)
    t = StarletteTransport(cast(WebSocket, ws))
    with pytest.raises(TransportClosed):
        await asyncio.wait_for(t.send_many(["a"]), 1.0)
    assert ws.sends == 1


async def test_a_close_frame_the_carrier_does_not_take_is_given_up() -> None:
    ws = StuckSocket(extensions=True)
    t = StarletteTransport(cast(WebSocket, ws))
    await asyncio.wait_for(t.close(1011), 1.0)
    assert ws.closed == [1011] and ws.aborted == 1
