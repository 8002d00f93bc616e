"""uvicorn's sans-I/O WebSocket protocol, without a pause and a resume of reading per message.

uvicorn stops reading a connection after every message until the app has taken it, then starts
again: two selector changes (epoll_ctl system calls) and their bookkeeping per message. A call's
carrier sends 50 caller-audio messages a second, so that churn was one of the largest costs of a
call. Here reading stops only once the app has fallen `HIGH_WATER` messages behind, and starts
again when it has caught up to `LOW_WATER`: a peer flooding a stalled call still meets
back-pressure, and the backlog stays bounded (at most `HIGH_WATER` messages of at most
`ws_max_size` bytes each).

Caller audio the app does not listen to is dropped before websockets' parser sees it: from the
handshake on, the client's bytes go through a `FrameSplitter` (ws_frames.py), which reads frame
headers itself and drops the single-frame messages the app's filter names.

It also offers the app an ASGI extension, `telebridge.abort`, to drop a connection whose peer
has stopped reading. Served with `uvicorn.Config(ws=StreamWebSocketProtocol)`. It relies on
attributes of uvicorn's `WebSocketsSansIOProtocol` (`read_paused`, `queue`, `scope`,
`transport`); tests/test_ws_protocol.py and the end-to-end tests check they are still there and
behave as assumed, so an upgrade of uvicorn that changes them fails loudly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from telebridge.server.ws_frames import FrameSplitter
from telebridge.server.ws_lowat import QuietReads, quiet_reads

if TYPE_CHECKING:
    from uvicorn._types import ASGIReceiveEvent
    from websockets.http11 import Request

# Decides from a message's raw payload (and whether it is text) that the app does not need it.
MessageFilter = Callable[[bytes, bool], bool]

HIGH_WATER = 16
LOW_WATER = 2
# The ASGI extension (in `scope["extensions"]`) by which the app can drop a connection at once,
# buffers and all: a peer that stopped reading would otherwise keep it, and the app waiting on
# it, for as long as its kernel keeps acknowledging window probes.
ABORT = "telebridge.abort"
# ... by which it sends several messages in one write to the socket (one system call, not one per
# message: Vonage takes every 20 ms frame as a message of its own).
SEND_MANY = "telebridge.send_many"
# ... and by which it names messages it does not need (caller audio it does not listen to), so
# they are dropped as they are parsed instead of each waking the app.
IGNORE = "telebridge.ignore"


class StreamWebSocketProtocol(WebSocketsSansIOProtocol):
    """The same protocol, with reading paused by a high and a low water mark."""

    _ignore: MessageFilter | None = None
    _ignored = 0  # messages dropped by the filter after websockets parsed them
    _splitter: FrameSplitter | None = None
    _splitter_tried = False
    _reads: QuietReads | None = None  # the socket's low-water mark (ws_lowat.py)

    @property
    def ignored(self) -> int:
        """Messages dropped by the app's filter on this connection."""
        return self._ignored + (self._splitter.dropped if self._splitter is not None else 0)

    def data_received(self, data: bytes) -> None:
        splitter = self._splitter
        if splitter is not None and splitter.active:
            data = splitter.feed(data)
            reads = self._reads
            if reads is not None:
                reads.read(quiet=not data)
            if not data:
                return
        super().data_received(data)
        if not self._splitter_tried and self.handshake_initiated:
            self._splitter_tried = True
            # Only when no byte of any frame has been seen (the request ended the read): the
            # parser is then at a frame boundary, and the splitter keeps it at one.
            if data.endswith(b"\r\n\r\n") and not self.conn.reader.buffer:
                self._splitter = FrameSplitter(_keep_all, max_size=self.config.ws_max_size)
                if self._ignore is not None:
                    self._splitter.ignore = self._ignore
                self._reads = quiet_reads(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._reads is not None:
            self._reads.close()
        super().connection_lost(exc)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = cast("dict[str, Any] | None", getattr(self, "scope", None))
        if scope is not None:  # accepted: the app's task starts after this returns
            extensions = scope["extensions"]
            extensions[ABORT] = self.transport.abort
            extensions[SEND_MANY] = self.send_many
            extensions[IGNORE] = self.set_filter

    def set_filter(self, ignore: MessageFilter | None) -> None:
        self._ignore = ignore
        if self._splitter is not None:
            self._splitter.ignore = ignore if ignore is not None else _keep_all

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        """Send `messages` as one write; raises ClientDisconnected when the peer is gone."""
        await self.writable.wait()  # flow control, as for one message
        if self.disconnected or self.close_sent or not self.handshake_complete:
            raise ClientDisconnected()
        try:
            for message in messages:
                if isinstance(message, bytes):
                    self.conn.send_binary(message)
                else:
                    self.conn.send_text(message.encode())
        except InvalidState:
            raise ClientDisconnected() from None
        self.transport.write(b"".join(self.conn.data_to_send()))

    def send_receive_event_to_app(self) -> None:
        ignore = self._ignore
        if (
            ignore is not None
            and not self.close_sent
            and len(self.frames) == 1
            and ignore(self.frames[0], self.curr_msg_data_type == "text")
        ):
            self.frames = []
            self._ignored += 1
            return
        # The parent pauses reading after each message unless reading is paused already:
        # let it believe so, then pause only when the backlog has grown past the mark.
        paused = self.read_paused
        self.read_paused = True
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = paused
        # Past `websocket.close` the app reads no more: keep reading for the peer's close reply.
        if not paused and not self.close_sent and self.queue.qsize() >= HIGH_WATER:
            self.read_paused = True
            self.transport.pause_reading()

    async def receive(self) -> ASGIReceiveEvent:
        message = await self.queue.get()
        if self.read_paused and self.queue.qsize() <= LOW_WATER:
            self.read_paused = False
            self.transport.resume_reading()
        return message


def _keep_all(payload: bytes, text: bool) -> bool:
    return False
