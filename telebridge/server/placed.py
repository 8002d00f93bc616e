"""The calls this bridge placed through the call API, from the carrier's answer to their end:
how the id `POST /v1/calls` gave (Plivo's request_uuid, Vonage's uuid) finds the call later.

A placed call carries a signed `attempt` variable; the stream's grant and the carrier's hangup
callback bring it back, so the registry learns the carrier's call id and when the call is over.
Entries are forgotten `keep` seconds after placing (the answer URL's lifetime), at most
`max_calls` of them, and with the process: a restart forgets them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

__all__ = ["PlacedCall", "PlacedCalls"]

# A call that has neither streamed nor ended this long after it was placed is not listed as
# queued any more: its carrier rang out long ago, and the callback that says so was lost.
QUEUED_FOR_S = 300.0


@dataclass(slots=True)
class PlacedCall:
    request_id: str
    attempt: str
    carrier: str
    to: str
    from_: str
    flow: str
    placed_at: str  # ISO-8601 UTC
    at: float  # monotonic
    state: Literal["queued", "live", "ended"] = "queued"
    call_id: str | None = None  # the carrier's call id, once it streamed or ended

    def as_api(self) -> dict[str, object]:
        return {
            "call_id": self.call_id or self.request_id,
            "request_id": self.request_id,
            "carrier": self.carrier,
            "from": self.from_,
            "to": self.to,
            "flow": self.flow,
            "step": None,
            "started_at": None,
            "placed_at": self.placed_at,
            "state": self.state,
        }


class PlacedCalls:
    def __init__(
        self,
        *,
        keep: float = 3600.0,
        max_calls: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keep = keep
        self._max = max_calls
        self._clock = clock
        self._by_request: OrderedDict[str, PlacedCall] = OrderedDict()
        self._by_attempt: dict[str, PlacedCall] = {}

    def add(
        self, request_id: str, attempt: str, carrier: str, to: str, from_: str, flow: str
    ) -> PlacedCall:
        placed = PlacedCall(
            request_id, attempt, carrier, to, from_, flow,
            datetime.now(UTC).isoformat(timespec="milliseconds"), self._clock(),
        )  # fmt: skip
        self._by_request[request_id] = placed
        self._by_attempt[attempt] = placed
        self._expire()
        return placed

    def get(self, request_id: str) -> PlacedCall | None:
        return self._by_request.get(request_id)

    def by_attempt(self, attempt: str | None) -> PlacedCall | None:
        return self._by_attempt.get(attempt or "")

    def streaming(self, attempt: str | None, call_id: str) -> None:
        """The carrier answered and the stream of `call_id` started."""
        placed = self._by_attempt.get(attempt or "")
        if placed is not None and placed.state == "queued":  # an ended call never comes back
            placed.state, placed.call_id = "live", call_id

    def ended(self, attempt: str | None, call_id: str | None = None) -> None:
        placed = self._by_attempt.get(attempt or "")
        if placed is not None:
            placed.state = "ended"
            placed.call_id = placed.call_id or call_id or None

    def queued(self) -> list[PlacedCall]:
        """Placed calls that have neither streamed nor ended (recently)."""
        self._expire()
        cutoff = self._clock() - QUEUED_FOR_S
        return [p for p in self._by_request.values() if p.state == "queued" and p.at >= cutoff]

    def _expire(self) -> None:
        cutoff = self._clock() - self._keep
        while self._by_request:
            placed = next(iter(self._by_request.values()))
            if placed.at >= cutoff and len(self._by_request) <= self._max:
                break
            del self._by_request[placed.request_id]
            self._by_attempt.pop(placed.attempt, None)
