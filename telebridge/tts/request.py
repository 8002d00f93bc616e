"""One Waves request on one pooled socket: matching server frames to it, turning them into audio,
replacing a pooled socket found dead (once), and giving the socket back or dropping it at the end.

Shared by `WavesClient.synthesize` (text known up front) and `TextStream` (text in pieces).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed

from telebridge.tts.errors import TTSError, WavesTimeout, WavesTruncated
from telebridge.tts.pool import PooledSocket, SocketPool
from telebridge.tts.wire import Frame, frame_error, parse_frame

__all__ = ["Stale", "Timeouts", "WavesRequest", "begin", "end", "retry"]

# The client's log lines keep the logger name they had before the client was split in modules.
logger = logging.getLogger("telebridge.tts.waves")


class Stale(Exception):
    """A pooled socket turned out dead before it answered; the caller may retry once."""

    def __init__(self, error: TTSError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long to wait for audio: the first chunk, and any gap once audio flows."""

    first_chunk: float
    stall: float

    def error(self, req: WavesRequest) -> WavesTimeout:
        """The timeout error for `req`, worded by whether any audio had arrived."""
        if req.chunks == 0:
            return WavesTimeout(f"no audio from Waves within {self.first_chunk:g} s")
        return WavesTimeout(f"Waves stopped sending audio for {self.stall:g} s")


class WavesRequest:
    """One request in flight on one socket: matches frames to it and turns them into audio."""

    def __init__(self, sock: PooledSocket, reused: bool, rid: str, *, secret: str) -> None:
        self.sock = sock
        self.reused = reused
        self.rid = rid
        self.aliases: set[str] = set()  # the server's own ids for this request
        self.foreign: set[str] = set()  # server ids seen echoing someone else's request_id
        self.responded = False
        self.chunks = 0
        self.audio_bytes = 0
        self.retried = False
        self._secret = secret

    def _is_ours(self, frame: Frame) -> bool:
        ext, req = frame.external_request_id, frame.request_id
        if ext is not None:
            if ext != self.rid:
                if req is not None:
                    self.foreign.add(req)
                return False
            if req is not None:
                self.aliases.add(req)
            return True
        if req is None or req == self.rid or req in self.aliases:
            return True
        # Waves sends only its own id on some frames (e.g. `complete`). Until we learn that id
        # from a frame carrying ours, an unknown id is taken as ours: one request per socket.
        if self.aliases or req in self.foreign or req in self.sock.seen:
            return False
        self.aliases.add(req)
        return True

    async def send(self, message: str) -> None:
        try:
            await self.sock.ws.send(message)
        except ConnectionClosed:
            error = WavesTruncated("Waves closed the connection before the request was sent")
            if self.reused and not self.responded:
                raise Stale(error) from None
            raise error from None

    async def next_event(self) -> bytes | None:
        """The next audio chunk of this request (maybe empty), or None at `complete`."""
        while True:
            try:
                raw = await self.sock.ws.recv()
            except ConnectionClosed:
                error = WavesTruncated("Waves closed the connection before the request completed")
                if self.reused and not self.responded:
                    raise Stale(error) from None
                raise error from None
            frame = parse_frame(raw)
            if not self._is_ours(frame):
                continue
            if frame.status == "chunk":
                self.responded = True
                self.chunks += 1
                self.audio_bytes += len(frame.audio)
                return frame.audio
            if frame.status == "complete":
                self.responded = True
                self.sock.seen.extend(self.aliases)
                return None
            if frame.status == "error":
                failure = frame_error(frame, secret=self._secret)
                idle = "inactivity" in frame.message.lower()
                if self.reused and not self.responded and idle:
                    raise Stale(failure)
                self.responded = True
                raise failure
            # word_timestamp and any future status: not audio, ignore.


async def begin(pool: SocketPool, rid: str, messages: list[str]) -> WavesRequest:
    """Take a socket (pooled or new) and send `messages` on it, replacing a dead one once."""
    sock, reused = await pool.acquire()
    req = WavesRequest(sock, reused, rid, secret=pool.secret)
    logger.debug("waves %s: start on %s socket", rid, "pooled" if reused else "new")
    try:
        for message in messages:
            await req.send(message)
    except Stale as stale:
        return await retry(pool, req, stale, messages)
    except BaseException:
        pool.drop(sock)
        raise
    return req


async def retry(
    pool: SocketPool, req: WavesRequest, stale: Stale, messages: list[str]
) -> WavesRequest:
    """Replace a pooled socket found dead with a fresh one and send the request again."""
    pool.drop(req.sock)
    if req.retried or not req.reused:
        raise stale.error
    logger.debug("waves %s: pooled socket was dead, reconnecting", req.rid)
    fresh = WavesRequest(await pool.open(), False, req.rid, secret=pool.secret)
    fresh.retried = True
    try:
        for message in messages:
            await fresh.send(message)
    except BaseException:
        pool.drop(fresh.sock)
        raise
    return fresh


def end(pool: SocketPool, req: WavesRequest, completed: bool, started: float) -> None:
    """Give the socket back after `complete`, else drop it; log what the request did."""
    elapsed = (asyncio.get_running_loop().time() - started) * 1000
    if completed:
        pool.put_back(req.sock)
        outcome = "complete"
    else:
        pool.drop(req.sock)  # interrupted or failed: that socket is never reused
        outcome = "interrupted"
    logger.debug(
        "waves %s: %s, %d chunks, %d bytes, %.0f ms",
        req.rid,
        outcome,
        req.chunks,
        req.audio_bytes,
        elapsed,
    )
