"""The browser phone without I/O: the web console's phone page as a carrier called "browser".

`BrowserStream` turns the page's WebSocket messages (binary PCM16LE at 16 kHz and small JSON
events) into call events, and the session's commands into binary audio of up to five 20 ms
frames and `mark` / `clear` / `dtmf` / `transfer` events. The protocol is ours (the README's
browser phone table); anything that does not follow it is a ProtocolError.
"""

from __future__ import annotations

import json
from typing import Any

from telebridge.call.audio import Codec
from telebridge.call.events import (
    CallerAudio,
    CallEvent,
    Cleared,
    Digit,
    Played,
    ProtocolError,
    Started,
    Stopped,
    WireMessage,
    json_object,
)

CARRIER = "browser"
RATE = 16000
FRAME_BYTES = RATE // 50 * 2  # one 20 ms frame of PCM16 mono: 640 bytes
FRAMES_PER_MESSAGE = 5
# The page sends 20 ms per message; a second of audio in one message is already far too much.
MAX_AUDIO_BYTES = RATE * 2
# Every event of the page's is a few dozen bytes.
MAX_TEXT_BYTES = 4096
MAX_NAME_CHARS = 200  # a call id or a mark name
# The page's keypad: no A-D column.
KEYS = frozenset("0123456789*#")


class BrowserStream:
    """One browser phone's WebSocket. `start` must come first and name the call."""

    carrier = CARRIER
    codec: Codec = "l16"
    sample_rate = RATE
    max_frames_per_message = FRAMES_PER_MESSAGE

    def __init__(self) -> None:
        self.call_id: str | None = None
        self.decode_caller_audio = False  # the page sends PCM16: nothing to decode either way

    # --- browser -> bridge --------------------------------------------------------

    def ignorable(self, payload: bytes, text: bool) -> bool:
        # Well-formed caller audio once started, when nothing listens: `receive` would only
        # turn it into an event nobody reads. Anything else reaches `receive`, which judges it.
        return (
            not text
            and not self.decode_caller_audio
            and self.call_id is not None
            and _audio_problem(len(payload)) is None
        )

    def receive(self, message: str | bytes) -> list[CallEvent]:
        if isinstance(message, bytes):
            if self.call_id is None:
                raise ProtocolError("audio before start")
            problem = _audio_problem(len(message))
            if problem is not None:
                raise ProtocolError(problem)
            return [CallerAudio(message)]
        # A character is at least one byte: the cheap check first, then the exact one.
        if len(message) > MAX_TEXT_BYTES or len(message.encode(errors="replace")) > MAX_TEXT_BYTES:
            raise ProtocolError(f"text message over {MAX_TEXT_BYTES} bytes")
        data = json_object(message)
        event = data.get("event")
        if not isinstance(event, str):
            raise ProtocolError("text message without an event")
        if event == "start":
            return [self._start(data)]
        if self.call_id is None:
            raise ProtocolError(f"{event[:40]!r} before start")
        if event == "dtmf":
            return [Digit(_digit(data.get("digit")))]
        if event == "played":
            return [Played(_name(data.get("name"), "played"))]
        if event == "cleared":
            return [Cleared()]
        if event == "hangup":
            return [Stopped()]
        raise ProtocolError(f"unknown event {event[:40]!r}")

    def _start(self, data: dict[str, Any]) -> Started:
        if self.call_id is not None:
            raise ProtocolError("second start on one socket")
        call_id = _name(data.get("call_id"), "start")
        self.call_id = call_id
        return Started(call_id=call_id, stream_id="")

    # --- bridge -> browser --------------------------------------------------------

    def play(self, frames: bytes) -> list[WireMessage]:
        if len(frames) % FRAME_BYTES:
            raise ValueError(f"the browser phone takes whole 20 ms frames of {FRAME_BYTES} bytes")
        size = FRAME_BYTES * FRAMES_PER_MESSAGE
        return [frames[i : i + size] for i in range(0, len(frames), size)]

    def mark(self, name: str) -> list[WireMessage]:
        return [json.dumps({"event": "mark", "name": name})]

    def clear(self) -> list[WireMessage]:
        return ['{"event": "clear"}']

    def send_digits(self, digits: str) -> list[WireMessage]:
        """The tones go on the socket: the page shows them (there is no phone line to tone)."""
        return [json.dumps({"event": "dtmf", "digits": digits})]

    def transfer(self, to: str) -> list[WireMessage]:
        """Messages telling the page the call is being transferred to `to` (the bridge then
        closes the socket: `BrowserCallControl.transfer`)."""
        return [json.dumps({"event": "transfer", "to": to})]


def _audio_problem(size: int) -> str | None:
    if size == 0:
        return "empty audio message"
    if size % 2:
        return f"caller audio of {size} bytes: PCM16 comes in whole samples"
    if size > MAX_AUDIO_BYTES:
        return f"caller audio of {size} bytes, over {MAX_AUDIO_BYTES}"
    return None


def _digit(value: object) -> str:
    if not isinstance(value, str) or value not in KEYS:
        raise ProtocolError(f"dtmf with an invalid digit {str(value)[:8]!r}")
    return value


def _name(value: object, event: str) -> str:
    """A call id or mark name: a short, non-empty string."""
    field = "call_id" if event == "start" else "name"
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{event} without a {field}")
    if len(value) > MAX_NAME_CHARS:
        raise ProtocolError(f"{event} with a {field} over {MAX_NAME_CHARS} characters")
    return value
