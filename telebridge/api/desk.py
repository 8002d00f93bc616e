"""What the call API's routes act through: the `CallDesk`, which the server implements over its
live calls, the call log and the carriers' REST APIs. Raise `ApiError` for answers other than
success (404 no such call, 409 not now, 502 the carrier failed)."""

from __future__ import annotations

from typing import Any, Protocol

from telebridge.api.bodies import HangupCall, PlaceCall, Say, TransferCall

__all__ = ["CallDesk"]


class CallDesk(Protocol):
    async def place(self, call: PlaceCall) -> dict[str, Any]:
        """Have the carrier place `call`; the created call as the API shows it."""
        ...

    async def live_calls(self) -> list[dict[str, Any]]:
        """The calls in progress here, or in a cluster on any of its processes (and those placed
        here and not answered yet)."""
        ...

    async def find(self, call_id: str) -> dict[str, Any] | None:
        """One call, live or from the call log, by the carrier's id or the id `place` gave."""
        ...

    async def say(self, call_id: str, request: Say) -> None:
        """Queue speech on a live call."""
        ...

    async def hangup(self, call_id: str, request: HangupCall) -> None:
        """End a live call once what is queued has played."""
        ...

    async def transfer(self, call_id: str, request: TransferCall) -> None:
        """Transfer a live call once what is queued has played."""
        ...
