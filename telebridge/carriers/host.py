"""What a carrier's routes need of the running server: the `CallHost` interface.

The routes answer webhooks and hand streams on through it, so they depend on this narrow
interface, never on the server's application object (`telebridge.server.Bridge` implements it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from starlette.websockets import WebSocket

from telebridge.call.events import Started
from telebridge.call.ports import CallControl, CarrierStream
from telebridge.settings import Settings
from telebridge.tokens import Keys, StreamGrant

# Builds a started call's control; it is also given the stream's own (bounded) close, for a
# carrier that ends a call by closing its stream.
ControlFor = Callable[[StreamGrant, Started, Callable[[], Awaitable[None]]], CallControl]


class CallHost(Protocol):
    """The server as the carriers' routes see it: admission, tokens, the call log, streams."""

    @property
    def settings(self) -> Settings: ...

    @property
    def keys(self) -> Keys: ...

    def public_url(self, path: str) -> str:
        """`path` under TELEBRIDGE_PUBLIC_URL (what the carrier calls, and signs)."""
        ...

    def stream_url(self, path: str, grant: StreamGrant) -> str:
        """The WebSocket URL, with its token, that the answer points the carrier at."""
        ...

    def busy(self, carrier: str) -> bool:
        """True when a new call must be answered busy."""
        ...

    def answer_variables(
        self, carrier: str, token: str | None, call_id: str
    ) -> dict[str, str] | None:
        """The variables a `vars` query parameter gives the call's flow; None: refuse the call."""
        ...

    def traced_variables(self, carrier: str, token: str | None, call_id: str) -> dict[str, str]:
        """The variables a status callback carries, to trace the call; bad ones are dropped."""
        ...

    def flow_names(self) -> list[str]:
        """The names of the flows this bridge runs."""
        ...

    def choose_flow(self, requested: str | None, callee: str) -> str:
        """The flow's name for a new call; raises UnknownFlow."""
        ...

    def prefetch(self, grant: StreamGrant, sample_rate: int) -> None:
        """Start the flow's first prompt while the carrier opens the stream."""
        ...

    def record_hangup(
        self,
        carrier: str,
        call_id: str,
        cause: str,
        duration: float | None,
        *,
        variables: dict[str, str] | None = None,
        from_number: str | None = None,
        to_number: str | None = None,
    ) -> None:
        """A carrier's hangup/completed callback, for the call log."""
        ...

    async def serve_stream(
        self, ws: WebSocket, *, carrier: str, stream: CarrierStream, control_for: ControlFor
    ) -> None:
        """Authorise, start and run one call's stream; returns when the call is over."""
        ...
