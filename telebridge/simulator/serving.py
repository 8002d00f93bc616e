"""Run an ASGI app under uvicorn on a loopback socket inside the current event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from telebridge.server.ws_protocol import StreamWebSocketProtocol


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The host process (a test run, the simulate command) owns the signals.
        yield


def bind_loopback(port: int = 0) -> socket.socket:
    # IPPROTO_TCP, so asyncio turns Nagle off (TCP_NODELAY) on every accepted connection.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


class ServedApp:
    """`app` served on `sock` (default: a fresh loopback port) until `stop()`."""

    def __init__(self, app: Any, sock: socket.socket | None = None, **config: Any) -> None:
        self.sock = sock or bind_loopback()
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        options: dict[str, Any] = {
            "log_level": "warning",
            "ws": StreamWebSocketProtocol,
            "lifespan": "on",
            "ws_max_size": 1024 * 1024,
            "ws_per_message_deflate": False,
        }
        options.update(config)
        self._server = _QuietServer(uvicorn.Config(app, **options))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._serve())
        try:
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                    raise RuntimeError("server stopped during start-up")
                await asyncio.sleep(0.01)
        except BaseException:
            # Start-up failed (the lifespan raised) or was cancelled: nothing will stop() us.
            self._server.should_exit = True
            if not self._task.done():
                self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
            self.sock.close()
            raise

    async def _serve(self) -> None:
        try:
            await self._server.serve(sockets=[self.sock])
        except SystemExit as exc:  # uvicorn's way to say the lifespan failed: not ours to exit
            raise RuntimeError(f"the app did not start (its lifespan failed: {exc.code})") from None

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.sock.close()

    async def __aenter__(self) -> ServedApp:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
