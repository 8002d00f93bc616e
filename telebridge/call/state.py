"""A call's lifecycle as explicit states: streaming, then ending (we hung up), then ended.

Like starlette's WebSocket states, a move the lifecycle does not allow raises at once rather
than leaving the call half in two states.
"""

from __future__ import annotations

import enum

__all__ = ["CallLifecycle", "CallState", "InvalidTransition"]


class CallState(enum.Enum):
    STREAMING = "streaming"  # the carrier's stream is up and the flow runs
    ENDING = "ending"  # the bridge ended the call; the carrier has yet to close the stream
    ENDED = "ended"  # the session is over


# Where each state may go. A call the caller ends goes from streaming straight to ended.
_NEXT: dict[CallState, frozenset[CallState]] = {
    CallState.STREAMING: frozenset({CallState.ENDING, CallState.ENDED}),
    CallState.ENDING: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}


class InvalidTransition(RuntimeError):
    """A call was asked to move to a state it cannot reach from where it is."""


class CallLifecycle:
    """The state of one call; `move_to` is the only way it changes."""

    def __init__(self) -> None:
        self._state = CallState.STREAMING

    @property
    def state(self) -> CallState:
        return self._state

    def move_to(self, state: CallState) -> None:
        if state not in _NEXT[self._state]:
            raise InvalidTransition(f"a call cannot go from {self._state.value} to {state.value}")
        self._state = state
