"""`Rate`: one rate for the whole cluster (campaign call creation), by GCRA in one Lua script.

The key `<prefix>:rate:<name>` holds the theoretical arrival time (TAT, Redis time in ms). Each
`wait()` reserves the next slot atomically — TAT moves on by one interval — and sleeps until that
slot may start: the first `burst` go at once, then one per `1 / per_second` seconds, whichever
process asks. Waiting is reserved, not polled, so waiters go in the order they asked.
"""

from __future__ import annotations

import asyncio

from telebridge.cluster.connect import Cluster

# KEYS: tat. ARGV: interval_ms, burst -> microseconds until the reserved slot starts.
_RESERVE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next_tat = tat + interval
local wait = next_tat - now - tonumber(ARGV[2]) * interval
if wait < 0 then wait = 0 end
redis.call('SET', KEYS[1], string.format('%.3f', next_tat), 'PX', math.ceil(next_tat - now) + 1000)
return math.ceil(wait * 1000)
"""


class Rate:
    """At most `burst` at once and `per_second` on average, across every process of the cluster."""

    def __init__(self, cluster: Cluster, name: str, per_second: float, burst: int = 1) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError(
                f"a rate needs per_second > 0 and burst >= 1, not {per_second}, {burst}"
            )
        self._cluster = cluster
        self.name = name
        self.per_second = per_second
        self.burst = burst
        self._key = cluster.key("rate", name)
        self._interval_ms = f"{1000 / per_second:.6f}"
        self._reserve = cluster.script(_RESERVE)

    async def wait(self) -> None:
        """Return when this caller may go; `ClusterUnavailable` (at once) when Redis is away."""
        args: list[str | int] = [self._interval_ms, self.burst]
        micros = await self._cluster.run(
            lambda r: self._reserve(keys=[self._key], args=args, client=r)
        )
        if micros > 0:
            await asyncio.sleep(int(micros) / 1_000_000)
