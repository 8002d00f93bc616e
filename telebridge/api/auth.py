"""Who may use the call API: the keys of `TELEBRIDGE_API_KEY` (comma-separated, so a key can be
rotated without a gap), checked in constant time, and a token bucket per key (and per client
address for requests that present no valid key), so one client's burst is answered 429.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["ApiKeys", "RateLimiter"]

# Keys shorter than this are accepted but logged as weak by the server.
WEAK_KEY_CHARS = 16


class ApiKeys:
    """The accepted keys. `match` tells which one a request presents, in constant time."""

    def __init__(self, keys: list[str]) -> None:
        cleaned = [k.strip() for k in keys if k.strip()]
        if not cleaned:
            raise ValueError("no API key given")
        # Digests of equal length: compare_digest's time then depends on neither key's length.
        self._digests = [hashlib.sha256(k.encode()).digest() for k in cleaned]
        self.weak = any(len(k) < WEAK_KEY_CHARS for k in cleaned)

    @classmethod
    def parse(cls, setting: str | None) -> ApiKeys | None:
        """The keys of a `TELEBRIDGE_API_KEY` value; None when it names none."""
        if setting is None or not any(k.strip() for k in setting.split(",")):
            return None
        return cls(setting.split(","))

    def __len__(self) -> int:
        return len(self._digests)

    def match(self, presented: str) -> int | None:
        """The index of the key `presented` is, or None. Every key is compared, always."""
        digest = hashlib.sha256(presented.encode()).digest()
        found: int | None = None
        for index, known in enumerate(self._digests):
            if hmac.compare_digest(digest, known) and found is None:
                found = index
        return found


class RateLimiter:
    """A token bucket per client: `rate` requests a second, bursts of up to `burst`.

    Only the most recently seen `max_clients` are remembered, so a flood of made-up client
    names costs bounded memory (a forgotten client starts again with a full bucket).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self._rate = rate
        self._burst = float(burst)
        self._max = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, client: str) -> float:
        """Spend one request of `client`: 0.0 when allowed, else the seconds to wait."""
        now = self._clock()
        tokens, at = self._buckets.pop(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self._rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait


def retry_after(wait: float) -> str:
    """A `Retry-After` header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait)))
