"""The call core's ports: what a call needs from a carrier and from the socket it arrives on.

`CarrierStream` is the sans-I/O shape of every carrier's stream protocol, `CallControl` the
carrier's out-of-band control of one call (REST hangup and transfer), `Transport` the stream's
WebSocket, `CallObserver` who watches a call. The session knows nothing else of a carrier or of
the server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from telebridge.call.audio import Codec
from telebridge.call.events import CallEvent, WireMessage


class CarrierStream(Protocol):
    """One call's media stream, without I/O: messages in, events out; commands in, messages out."""

    carrier: str
    codec: Codec
    sample_rate: int
    # How many 20 ms frames one outgoing audio message may carry.
    max_frames_per_message: int
    # True while something listens to the caller: `CallerAudio` events are then produced (and
    # `ignorable` lets no caller audio go unseen).
    decode_caller_audio: bool

    def receive(self, message: str | bytes) -> list[CallEvent]:
        """Events in a message from the carrier; raises ProtocolError for a malformed one."""
        ...

    def ignorable(self, payload: bytes, text: bool) -> bool:
        """True for a message (its raw payload) that carries nothing the call needs, such as
        caller audio that is not decoded: the server may drop it before it reaches `receive`."""
        ...

    def play(self, frames: bytes) -> list[WireMessage]:
        """Messages that queue `frames` (whole encoded frames, at most max_frames_per_message)."""
        ...

    def mark(self, name: str) -> list[WireMessage]:
        """Messages asking the carrier to report `Played(name)` once what precedes has played."""
        ...

    def clear(self) -> list[WireMessage]:
        """Messages that empty the carrier's playback queue now."""
        ...

    def send_digits(self, digits: str) -> list[WireMessage]:
        """Messages that play DTMF tones into the call; [] when the carrier does it out of band
        (`CallControl.send_digits`)."""
        ...


class CallControl(Protocol):
    """Out-of-band control of one call through the carrier's REST API."""

    async def hangup(self) -> None:
        """End the call; a call that has already ended is not an error."""
        ...

    async def transfer(self, to: str, timeout: float) -> bool:  # noqa: ASYNC109
        """Connect the caller to `to`; True when the carrier accepted the transfer."""
        ...

    async def end_with_message(self, text: str) -> bool:
        """Speak `text` with the carrier's own TTS, then end the call; False when it cannot."""
        ...

    async def send_digits(self, digits: str) -> bool:
        """Play DTMF tones into the call out of band; False when the carrier cannot."""
        ...


class TransportClosed(Exception):
    """The carrier's WebSocket is gone."""


class Transport(Protocol):
    """The carrier's WebSocket as the session sees it."""

    async def receive(self) -> str | bytes: ...
    async def send_many(self, messages: Sequence[WireMessage]) -> None: ...
    async def close(self, code: int = 1000) -> None: ...


# call id, what happened, details: for timelines, metrics and tests.
CallObserver = Callable[[str, str, dict[str, Any]], None]


class Emit(Protocol):
    """How the parts of a session report what happened; the session tells its observer."""

    def __call__(self, kind: str, **fields: Any) -> None: ...
