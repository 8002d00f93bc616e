"""Serving a bridge with uvicorn: the WebSocket message limit, and a server that drains calls on
the first SIGTERM/SIGINT before it stops."""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn

from telebridge.server.bridge import Bridge

# Carrier messages are small JSON or 20 ms frames; anything near this is hostile.
WS_MAX_MESSAGE = 256 * 1024


class DrainingServer(uvicorn.Server):
    """uvicorn that, on the first SIGTERM/SIGINT, drains calls before it stops."""

    def __init__(self, config: uvicorn.Config, bridge: Bridge) -> None:
        super().__init__(config)
        self.bridge = bridge
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is not None or not self.started:
            super().handle_exit(sig, frame)  # a second signal: stop now
            return
        loop = asyncio.get_event_loop()
        self._draining = loop.create_task(self._drain())

    async def _drain(self) -> None:
        await self.bridge.drain(self.bridge.settings.telebridge_drain_timeout)
        self.should_exit = True
