"""Fewer wake-ups for caller audio nobody listens to: the kernel holds it back a few frames.

A carrier sends a caller-audio message every 20 ms per call, and each one woke the event loop
(an epoll wake-up and a read) only for `FrameSplitter` to drop it. While a connection brings only
such messages, steadily, `QuietReads` sets the socket's `SO_RCVLOWAT` to `LOWAT` bytes, so the
kernel reports it readable once two or three of them are there: a third to a half of the
wake-ups. Anything
the app does take (a key press, a mark, audio an agent listens to) turns the mark off again at
once, so what follows it is read as it comes.

Data under the mark waits in the kernel until more arrives, so the mark is on only while data
arrives every `STEADY_S` or sooner; one timer for every connection of the process (`_Watch`)
turns it off on a connection that has been silent `IDLE_S` (a caller who stopped sending audio
while a short message waits), which bounds how long anything can wait to `IDLE_S + TICK_S`.
An end of stream (FIN) or an error always wakes the reader, whatever the mark.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

__all__ = ["LOWAT", "QuietReads"]

logger = logging.getLogger(__name__)

LOWAT = 900  # bytes: three Plivo media messages (60 ms), two 16 kHz Vonage frames (40 ms)
STEADY_S = 0.03  # reads this close together are a steady stream of audio
# A connection silent this long gets its mark off: twice the time LOWAT bytes take to arrive.
IDLE_S = 0.12
TICK_S = 0.05  # how often the one timer looks


class QuietReads:
    """The `SO_RCVLOWAT` of one connection's socket, following what its reads bring."""

    __slots__ = ("_sock", "_watch", "last", "on")

    def __init__(self, sock: Any, watch: _Watch) -> None:
        self._sock = sock
        self._watch = watch
        self.on = False
        self.last = -1.0

    def read(self, quiet: bool) -> None:
        """A read arrived; `quiet`: all of it was dropped unseen (caller audio)."""
        now = time.monotonic()
        if quiet:
            if not self.on and now - self.last < STEADY_S:
                self._set(True)
        elif self.on:
            self._set(False)
        self.last = now

    def idle(self, now: float) -> None:
        if self.on and now - self.last > IDLE_S:
            self._set(False)

    def close(self) -> None:
        self._watch.discard(self)
        self.on = False

    def _set(self, on: bool) -> None:
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, LOWAT if on else 1)
        except (OSError, AttributeError, ValueError):  # closed, or not a TCP socket
            self.on = False
            return
        self.on = on
        if on:
            self._watch.add(self)


class _Watch:
    """The one timer that turns the mark off on connections gone quiet."""

    def __init__(self) -> None:
        self._watched: set[QuietReads] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, reads: QuietReads) -> None:
        self._watched.add(reads)
        loop = asyncio.get_running_loop()
        # A timer of another loop (one that ran before this one, in tests) never fires here.
        if self._timer is None or self._loop is not loop:
            self._loop = loop
            self._timer = loop.call_later(TICK_S, self._tick)

    def discard(self, reads: QuietReads) -> None:
        self._watched.discard(reads)

    def _tick(self) -> None:
        self._timer = None
        now = time.monotonic()
        for reads in list(self._watched):
            reads.idle(now)
            if not reads.on:
                self._watched.discard(reads)
        if self._watched and self._loop is not None:
            self._timer = self._loop.call_later(TICK_S, self._tick)


WATCH = _Watch()


def quiet_reads(transport: Any) -> QuietReads | None:
    """The `QuietReads` of `transport`'s TCP socket, or None when it has none."""
    sock = transport.get_extra_info("socket")
    if sock is None or getattr(sock, "type", None) != socket.SOCK_STREAM:
        return None
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return None
    return QuietReads(sock, WATCH)
