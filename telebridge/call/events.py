"""The neutral vocabulary between carriers and the call session.

A carrier module turns its wire messages into these events and turns the session's
commands into wire messages; nothing else in the bridge knows a carrier's format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Started:
    """The media stream is up. `call_id` is the carrier's id for the call leg."""

    call_id: str
    stream_id: str = ""


@dataclass(frozen=True, slots=True)
class CallerAudio:
    """Audio from the caller, in the carrier's own encoding (kept raw: decoding is on demand)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Digit:
    """A DTMF key press: one of 0-9, *, #, A-D."""

    digit: str


@dataclass(frozen=True, slots=True)
class Played:
    """The carrier has played everything queued before the mark called `name`."""

    name: str


@dataclass(frozen=True, slots=True)
class Cleared:
    """The carrier emptied its playback queue after a clear."""


@dataclass(frozen=True, slots=True)
class Stopped:
    """The carrier says the stream is over (the socket closing is the real end)."""


CallEvent = Started | CallerAudio | Digit | Played | Cleared | Stopped

# A message for the carrier's WebSocket: text frames are str, binary frames are bytes.
WireMessage = str | bytes


class ProtocolError(ValueError):
    """A carrier message that does not follow the carrier's protocol."""


def json_object(message: str) -> dict[str, Any]:
    """A carrier's text message as a JSON object; anything else is a ProtocolError."""
    try:
        data = json.loads(message)
    except ValueError:
        raise ProtocolError("text message is not JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("text message is not a JSON object")
    return data
