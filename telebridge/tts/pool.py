"""The pool of WebSocket connections to Waves: opening them (the API key goes on the upgrade
only), keeping idle ones open after `complete` (as many as were in use at once lately), and
closing dropped ones in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.protocol import State

from telebridge.logs import redacting_logger
from telebridge.tts.errors import WavesConnectionError
from telebridge.tts.wire import MAX_MESSAGE_BYTES, refusal_error

__all__ = ["PooledSocket", "SocketPool"]

# The client's log lines keep the logger name they had before the client was split in modules.
logger = logging.getLogger("telebridge.tts.waves")

# Server request ids remembered per pooled socket, to ignore late frames of finished requests.
_MAX_SEEN_IDS = 32


class PooledSocket:
    """A connection plus the server ids of requests already finished on it."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: deque[str] = deque(maxlen=_MAX_SEEN_IDS)

    @property
    def open(self) -> bool:
        return self.ws.state is State.OPEN


# Idle sockets kept: at least `max_idle`, and as many as were in use at once lately (within
# PEAK_WINDOW seconds), up to IDLE_CAP. Under load a finished request's socket then waits for the
# next request instead of being closed and opened again (a TLS handshake to Waves) moments later;
# never more are kept than were needed at once, well within Waves' allowance of sockets per
# request in flight.
PEAK_WINDOW = 30.0
IDLE_CAP = 64


class SocketPool:
    """Sockets to one Waves URL: one request per socket at a time, idle ones kept for reuse."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        open_timeout: float = 5.0,
        close_timeout: float = 2.0,
        max_idle: int = 4,
    ) -> None:
        self._url = url
        self._api_key = api_key
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout
        self._max_idle = max(0, max_idle)
        self._idle: list[PooledSocket] = []
        self._owned: set[PooledSocket] = set()
        self._closers: set[asyncio.Task[None]] = set()
        self._closed = False
        self._peak = 0  # sockets in use at once lately
        self._peak_at = 0.0
        parts = urlsplit(url)
        self._where = f"{parts.scheme}://{parts.netloc}{parts.path}"  # never the query
        self._ws_logger = redacting_logger(logging.getLogger(logger.name + ".websocket"), api_key)

    @property
    def secret(self) -> str:
        """The API key, so that text from the server can be redacted of it."""
        return self._api_key

    @property
    def idle_sockets(self) -> int:
        """Open sockets waiting in the pool."""
        return sum(1 for s in self._idle if s.open)

    def check_open(self) -> None:
        """Raise `WavesConnectionError` once the pool (and so its client) is closed."""
        if self._closed:
            raise WavesConnectionError("this WavesClient is closed")

    async def acquire(self) -> tuple[PooledSocket, bool]:
        """An idle open socket (reused=True) or a freshly opened one (reused=False)."""
        while self._idle:
            sock = self._idle.pop()
            if sock.open:
                self._note_in_use()
                return sock, True
            self.drop(sock)
        sock = await self.open()
        self._note_in_use()
        return sock, False

    def _note_in_use(self) -> None:
        in_use = len(self._owned) - len(self._idle)
        now = time.monotonic()
        if in_use >= self._peak or now - self._peak_at > PEAK_WINDOW:
            self._peak, self._peak_at = in_use, now

    @property
    def idle_limit(self) -> int:
        """How many idle sockets are kept now."""
        return max(self._max_idle, min(self._peak, IDLE_CAP))

    def put_back(self, sock: PooledSocket) -> None:
        """Return a socket after `complete`: kept if open and there is room, else dropped."""
        if sock.open and not self._closed and len(self._idle) < self.idle_limit:
            self._idle.append(sock)
        else:
            self.drop(sock)

    def drop(self, sock: PooledSocket) -> None:
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

    async def open(self) -> PooledSocket:
        """Open a new socket (not put in the idle pool); refusals become typed errors."""
        self.check_open()
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
            raise refusal_error(exc.response.status_code, exc.response.headers) from None
        except (OSError, TimeoutError, WebSocketException, ValueError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise WavesConnectionError(f"cannot connect to {self._where}: {reason}") from None
        sock = PooledSocket(ws)
        self._owned.add(sock)
        logger.debug("waves: connected to %s", self._where)
        return sock

    async def prewarm(self, n: int = 1) -> None:
        """Open up to `n` sockets into the idle pool ahead of need."""
        self.check_open()
        n = min(n, self._max_idle - self.idle_sockets)
        if n <= 0:
            return
        results = await asyncio.gather(*(self.open() for _ in range(n)), return_exceptions=True)
        error: BaseException | None = None
        for result in results:
            if isinstance(result, BaseException):
                error = error or result
            else:
                self.put_back(result)
        if error is not None:
            raise error

    async def aclose(self) -> None:
        """Close every socket, idle or in use. The pool cannot be used afterwards."""
        self._closed = True
        self._idle.clear()
        for sock in list(self._owned):
            self.drop(sock)
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)

    @staticmethod
    async def _close(ws: ClientConnection) -> None:
        try:
            await ws.close()
        except Exception:  # the socket is being thrown away; nothing useful to do
            ws.transport.abort()
