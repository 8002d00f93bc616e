"""What the flow runner talks to, and what it hands out: the call (`CallPort`), the I/O edge
(`FlowIO`: webhook HTTP and audio files), the call log (`FlowRecorder`), per-step speech settings
and the errors a step can end in. Protocols and small values only; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

__all__ = ["AgentClosed", "AgentEnd", "AgentLink", "AgentUnavailable", "CallPort", "FetchFailed",
           "FlowIO", "FlowRecorder", "FlowRunError", "NullRecorder", "SpeechOverrides"]  # fmt: skip


@dataclass(frozen=True, slots=True)
class SpeechOverrides:
    """Per-step speech settings; None keeps the bridge's default."""

    voice: str | None = None
    speed: float | None = None
    language: str | None = None


class FetchFailed(Exception):
    """The webhook gave no answer (refused, timed out, broken); the text says which."""


class AgentUnavailable(Exception):
    """The application's WebSocket could not be opened (refused, timed out); the text says why."""


class AgentClosed(Exception):
    """The application's WebSocket is gone: `normal` when it closed it cleanly (1000 or 1001)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        self.code = code
        self.normal = code in (1000, 1001)
        super().__init__(f"closed with {code}" + (f" ({reason})" if reason else ""))


class AgentLink(Protocol):
    """An open WebSocket to the application of an agent step (opened by `FlowIO.open_agent`)."""

    async def send(self, message: str | bytes) -> None:
        """Send a text (str) or binary frame; raises AgentClosed."""

    def send_now(self, message: str | bytes) -> bool:
        """Send the frame at once when that needs no waiting (the socket is open and holds
        nothing unwritten); False: nothing was sent, `send` it. Never raises."""

    async def receive(self) -> str | bytes:
        """The next frame; raises AgentClosed."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket (no error when it is closed already)."""


@dataclass(frozen=True, slots=True)
class AgentEnd:
    """How an agent step ended, for the runner to route on."""

    kind: Literal["next", "hangup", "transfer", "error"]
    step: str | None = None  # next: the step to go to (None: the step's `next`)
    vars: dict[str, str] = field(default_factory=dict)
    to: str | None = None  # transfer: the number
    detail: str = ""  # hangup: the reason; error: what went wrong


class FlowIO(Protocol):
    """What a flow needs from outside the call: the webhook step's HTTP and `play`'s audio files.

    `telebridge.flows.fetch.HttpFlowIO` is the real one; the runner itself does no I/O.
    """

    async def post_json(
        self,
        url: str,
        payload: Mapping[str, object],
        timeout: float,  # noqa: ASYNC109
    ) -> tuple[int, bytes]:
        """POST `payload` as JSON: the answer's status and body; raises FetchFailed."""
        ...

    async def load_audio(self, path: Path) -> tuple[bytes, int]:
        """16-bit mono PCM and its sample rate; raises FlowRunError for an unreadable file."""
        ...

    async def open_agent(self, url: str, timeout: float) -> AgentLink:  # noqa: ASYNC109
        """Open the agent step's WebSocket, its handshake signed; raises AgentUnavailable."""
        ...


class CallPort(Protocol):
    """What the runner may do to a call; the call session implements it per carrier."""

    async def say(self, text: str, *, barge_in: bool, overrides: SpeechOverrides) -> None:
        """Queue speech; return once all of it is queued, or early when a key cut it off."""

    async def play(self, pcm: bytes, sample_rate: int, *, barge_in: bool) -> None:
        """Queue audio (PCM16LE mono)."""

    async def pause(self, seconds: float) -> None:
        """Queue silence."""

    async def wait_played(self) -> bool:
        """Wait until all queued audio played; False when a key cut a barge-in prompt off."""

    def take_digits(self) -> str:
        """Keys pressed since the last take (and forget them)."""

    # The port's contract takes timeouts as arguments (the carrier side owns the clock).
    async def next_digit(self, timeout: float) -> str | None:  # noqa: ASYNC109
        """The next key press, or None after `timeout` seconds."""

    async def transfer(self, to: str, timeout: float) -> bool:  # noqa: ASYNC109
        """Transfer the call; True when the carrier accepted."""

    async def hangup(self, reason: str) -> None:
        """Wait until the queued audio played, then end the call."""

    async def converse(
        self, link: AgentLink, start: dict[str, Any], *, listen: bool, barge_in: bool
    ) -> AgentEnd:
        """Hand the call to the application on `link` (its `start` message given) until it
        sends the step on, ends the call, or its socket fails."""


class FlowRecorder(Protocol):
    """The call log's view of a running flow."""

    def step_entered(self, step: str) -> None: ...
    def digits_collected(self, step: str, digits: str) -> None: ...
    def vars_set(self, values: dict[str, str]) -> None: ...
    def webhook_result(self, step: str, ok: bool, detail: str) -> None: ...


class NullRecorder:
    """A recorder that forgets everything."""

    def step_entered(self, step: str) -> None:
        pass

    def digits_collected(self, step: str, digits: str) -> None:
        pass

    def vars_set(self, values: dict[str, str]) -> None:
        pass

    def webhook_result(self, step: str, ok: bool, detail: str) -> None:
        pass


class FlowRunError(RuntimeError):
    """A step cannot go on (unreadable audio file, missing step): the flow ends in error."""
