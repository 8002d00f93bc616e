"""Caller audio dropped below the WebSocket parser: whole frames recognised from their headers.

A carrier sends 50 caller-audio messages a second per call. Parsing each through websockets'
generator-based parser, only for the app to say it does not need it, was the largest per-call
cost left. `FrameSplitter` sits in front of that parser on a server connection: it reads each
client frame's header itself, unmasks a complete single-frame data message with websockets' C
`apply_mask`, and drops it when the app's filter says so; every other byte goes on to the parser
unchanged, in order, and only ever as whole frames, so the parser is always at a frame boundary
when the splitter hands it something. No I/O: `feed(data)` returns the bytes to pass on.

It steps aside for good (`active` False, everything passed on as it comes) when a frame is not
one it can judge safely: a frame longer than `max_size` (the parser refuses it), a frame with
reserved bits (an extension such as compression), an unmasked client frame (a protocol error the
parser reports). Fragmented messages pass through whole; control frames always do.
"""

from __future__ import annotations

from collections.abc import Callable

from websockets.frames import Opcode

try:
    from websockets.speedups import apply_mask
except ImportError:  # a build of websockets without its C extension
    from websockets.utils import apply_mask

__all__ = ["FrameSplitter"]

# Decides from a message's raw payload (and whether it is text) that the app does not need it.
MessageFilter = Callable[[bytes, bool], bool]

_TEXT, _BINARY, _CONT = Opcode.TEXT.value, Opcode.BINARY.value, Opcode.CONT.value


class FrameSplitter:
    """Splits a client's byte stream into frames; drops the data messages `ignore` names."""

    def __init__(self, ignore: MessageFilter, *, max_size: int | None) -> None:
        self.ignore = ignore
        self.max_size = max_size
        self.active = True
        self.dropped = 0
        self._buffer = bytearray()
        self._fragmented = False  # inside a message sent in several frames

    def feed(self, data: bytes) -> bytes:
        """The bytes of `data` (and of earlier partial frames) for the parser, in order."""
        if not self.active:
            return data
        buffer = self._buffer
        buffer += data
        end = len(buffer)
        pos = 0
        keep_from = 0  # start of the run of frames passed on, not yet cut out
        out: list[bytes] = []
        while end - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                head = 4
                if end - pos < head:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
            elif length == 127:
                head = 10
                if end - pos < head:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
            if b0 & 0x70 or not b1 & 0x80 or (self.max_size is not None and length > self.max_size):
                return self._step_aside(out, buffer[keep_from:])
            head += 4
            frame_end = pos + head + length
            if frame_end > end:
                break
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode == _CONT:
                self._fragmented = not fin
            elif opcode in (_TEXT, _BINARY):
                if not fin:
                    self._fragmented = True
                elif not self._fragmented:
                    mask = bytes(buffer[pos + head - 4 : pos + head])
                    payload = apply_mask(bytes(buffer[pos + head : frame_end]), mask)
                    if self.ignore(payload, opcode == _TEXT):
                        if keep_from < pos:
                            out.append(bytes(buffer[keep_from:pos]))
                        keep_from = frame_end
                        self.dropped += 1
            pos = frame_end
        if keep_from < pos:
            out.append(bytes(buffer[keep_from:pos]))
        del buffer[:pos]
        return b"".join(out)

    def _step_aside(self, out: list[bytes], rest: bytearray) -> bytes:
        """Pass everything on from here: the parser judges this frame, and all after it."""
        self.active = False
        out.append(bytes(rest))
        self._buffer = bytearray()
        return b"".join(out)
