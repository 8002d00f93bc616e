"""The Waves HTTP streaming format, without I/O: `SSEDecoder` turns the bytes of a
`text/event-stream` body into events (any line ending, events split across reads), and
`parse_event` turns one event's data into audio, the end of the request, or a typed error."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from telebridge.logs import redact
from telebridge.tts.errors import TTSError, WavesRateLimited, WavesServerError
from telebridge.tts.http_errors import error_messages
from telebridge.tts.wire import MAX_MESSAGE_BYTES, Frame, frame_error

__all__ = ["SSEDecoder", "SSEEvent", "parse_event"]

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class SSEDecoder:
    """Server-sent events from bytes in pieces of any size.

    `feed` returns the data of each event it completed (the event's `data:` lines joined with
    "\\n"); `event:`, `id:`, `retry:` and comment lines are dropped, and so are events with no
    data. Lines end in CRLF, LF or CR. `close` returns the event left pending when the stream
    ends, since a server may leave out the last blank line.
    """

    def __init__(self, max_event_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._max = max_event_bytes
        self._partial: list[bytes] = []  # the line being received
        self._partial_size = 0
        self._data: list[str] | None = None  # the data lines of the event being received
        self._data_size = 0
        self._skip_lf = False  # the last piece ended in CR: a LF first in the next belongs to it
        self._first_line = True

    def feed(self, piece: bytes) -> list[str]:
        """The data of every event `piece` completes."""
        events: list[str] = []
        if self._skip_lf and piece:
            self._skip_lf = False
            if piece[:1] == b"\n":
                piece = piece[1:]
        start = 0
        for match in _LINE_END.finditer(piece):
            self._line(self._take(piece[start : match.start()]), events)
            start = match.end()
        if start and start == len(piece) and piece[-1:] == b"\r":
            self._skip_lf = True
        rest = piece[start:]
        if rest:
            self._partial.append(rest)
            self._partial_size += len(rest)
            if self._partial_size > self._max:
                raise WavesServerError(f"Waves sent an SSE line longer than {self._max} bytes")
        return events

    def close(self) -> list[str]:
        """The data of the event pending at the end of the stream, if any."""
        events: list[str] = []
        if self._partial:
            self._line(self._take(b""), events)
        self._line(b"", events)
        return events

    def _take(self, tail: bytes) -> bytes:
        if not self._partial:
            return tail
        line = b"".join(self._partial) + tail
        self._partial.clear()
        self._partial_size = 0
        return line

    def _line(self, line: bytes, events: list[str]) -> None:
        if self._first_line:
            self._first_line = False
            line = line.removeprefix(_BOM)
        if not line:
            if self._data is not None:
                data = "\n".join(self._data)
                self._data, self._data_size = None, 0
                if data.strip():
                    events.append(data)
            return
        name, _, value = line.partition(b":")
        if name != b"data":
            return  # a comment (":" first, so no name), event, id, retry or an unknown field
        value = value.removeprefix(b" ")
        self._data_size += len(value) + 1
        if self._data_size > self._max:
            raise WavesServerError(f"Waves sent an SSE event larger than {self._max} bytes")
        if self._data is None:
            self._data = []
        self._data.append(value.decode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One event of the answer: audio (None when it has no `audio` field), done, or an error."""

    audio: bytes | None = None
    done: bool = False
    error: TTSError | None = None


def parse_event(data: str, *, secret: str) -> SSEEvent:
    """The meaning of one event's data; raise `WavesServerError` if it is not the protocol.

    `{"audio": "<base64>"}` (or `{"data": {"audio": ...}}`) is audio, `"done": true` ends the
    request, a `status` of 400 or more or an `error` field is an error (`secret` never in it).
    """
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise WavesServerError("Waves sent an SSE event that is not valid JSON") from None
    if not isinstance(obj, dict):
        raise WavesServerError("Waves sent an SSE event that is not a JSON object")
    error = _event_error(obj, secret)
    if error is not None:
        return SSEEvent(error=error)
    encoded = obj.get("audio")
    nested = obj.get("data")
    if encoded is None and isinstance(nested, dict):
        encoded = nested.get("audio")
    audio = None
    if encoded is not None:
        if not isinstance(encoded, str):
            raise WavesServerError("Waves sent an SSE event whose audio is not a base64 string")
        try:
            audio = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise WavesServerError(
                "Waves sent an SSE event whose audio is not valid base64"
            ) from None
    return SSEEvent(audio=audio, done=obj.get("done") is True)


def _event_error(obj: dict[str, Any], secret: str) -> TTSError | None:
    raw_status = obj.get("status")
    status = _status_number(raw_status)
    failed = raw_status == "error" or (status or 0) >= 400 or bool(obj.get("error"))
    if not failed:
        return None
    messages = error_messages(obj)
    message = "; ".join(messages) if messages else "unspecified error"
    if len(message) > 300:
        message = message[:297] + "..."
    if status == 429:
        return WavesRateLimited(f"Waves: {redact(message, secret)}")
    nested = obj.get("error")
    code = None
    for source in (nested if isinstance(nested, dict) else {}, obj):
        found = source.get("code", source.get("error_code"))
        if code is None and isinstance(found, str | int) and not isinstance(found, bool):
            code = str(found)
    if code is None and status is not None:
        code = str(status)
    return frame_error(Frame("error", message=message, code=code), secret=secret)


def _status_number(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 3:
        return int(value)
    return None
