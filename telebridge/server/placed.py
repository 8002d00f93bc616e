"""The calls this bridge placed through the call API, from the carrier's answer to their end:
how the id `POST /v1/calls` gave (Plivo's request_uuid, Vonage's uuid) finds the call later.

A placed call carries a signed `attempt` variable; the stream's grant and the carrier's hangup
callback bring it back, so the registry learns the carrier's call id and when the call is over.
Entries are forgotten `keep` seconds after placing (the answer URL's lifetime), at most
`max_calls` of them, and with the process: a restart forgets them. This is the process's own
layer: in a cluster, `listen` hands every change of a placed call (whichever process placed it)
to the cluster's shared record (server/cluster_link.py), and the desk reads both.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "API_ATTEMPT",
    "KEEP_S",
    "QUEUED_FOR_S",
    "STATES",
    "PlacedCall",
    "PlacedCalls",
    "further",
]

# The prefix of the `attempt` variable of a call the API placed (the desk makes them).
API_ATTEMPT = "api-"
# How long a placed call is remembered: the answer URL's lifetime.
KEEP_S = 3600.0
# A placed call's states, in the order they come.
STATES = ("queued", "live", "ended")

# A call that has neither streamed nor ended this long after it was placed is not listed as
# queued any more: its carrier rang out long ago, and the callback that says so was lost.
QUEUED_FOR_S = 300.0

State = Literal["queued", "live", "ended"]
# A change of a placed call: its attempt, its new state, the carrier's call id (if known).
Listener = Callable[[str, State, str | None], None]


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
    state: State = "queued"
    call_id: str | None = None  # the carrier's call id, once it streamed or ended

    @classmethod
    def from_record(cls, record: dict[str, Any], at: float) -> PlacedCall:
        """The call as the cluster's shared record (cluster/placed.py) has it."""
        state = record.get("state")
        return cls(
            str(record["request_id"]), str(record.get("attempt", "")),
            str(record.get("carrier", "")), str(record.get("to", "")),
            str(record.get("from", "")), str(record.get("flow", "")),
            str(record.get("placed_at", "")), at,
            state if state in ("queued", "live", "ended") else "queued",
            record.get("call_id") or None,
        )  # fmt: skip

    def as_record(self) -> dict[str, str | None]:
        """The call as the cluster's shared record holds it."""
        return {"carrier": self.carrier, "to": self.to, "from": self.from_, "flow": self.flow,
                "attempt": self.attempt, "placed_at": self.placed_at, "state": self.state,
                "call_id": self.call_id}  # fmt: skip

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


def further(local: PlacedCall | None, shared: PlacedCall | None) -> PlacedCall | None:
    """Of this process's record of a call and the cluster's, the one further along (the
    cluster's hears of streams and callbacks on other processes; this one of writes still on
    their way)."""
    if local is None or shared is None:
        return local or shared
    ahead = shared if STATES.index(shared.state) > STATES.index(local.state) else local
    ahead.call_id = ahead.call_id or local.call_id or shared.call_id
    return ahead


class PlacedCalls:
    def __init__(
        self,
        *,
        keep: float = KEEP_S,
        max_calls: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keep = keep
        self._max = max_calls
        self._clock = clock
        self._by_request: OrderedDict[str, PlacedCall] = OrderedDict()
        self._by_attempt: dict[str, PlacedCall] = {}
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        """Tell `listener` of every stream start and end of a call the API placed, whether or not
        this process placed it (the call's attempt says so)."""
        self._listeners.append(listener)

    def _tell(self, attempt: str | None, state: State, call_id: str | None) -> None:
        if attempt and attempt.startswith(API_ATTEMPT):
            for listener in self._listeners:
                listener(attempt, state, call_id)

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
        self._tell(attempt, "live", call_id)

    def ended(self, attempt: str | None, call_id: str | None = None) -> None:
        placed = self._by_attempt.get(attempt or "")
        if placed is not None:
            placed.state = "ended"
            placed.call_id = placed.call_id or call_id or None
        self._tell(attempt, "ended", call_id or None)

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
