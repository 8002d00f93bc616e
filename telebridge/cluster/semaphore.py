"""`Semaphore`: one cap for the whole cluster (`WAVES_MAX_IN_FLIGHT`), fair and leased.

Keys under `<prefix>:sem:<name>:` — `holders` (ZSET token -> lease expiry), `queue` (ZSET token ->
arrival ticket from the `ticket` counter) and `waiting` (ZSET token -> waiter's lease). One Lua
script, run atomically, drops expired holders and vanished waiters, queues the caller, and grants a
slot to the first `free` waiters in arrival order, so waiters are served roughly FIFO across
processes. Holders' leases are renewed by the heartbeat and waiters' by their polling: a dead
process's slots free after the ttl and its waiters leave the queue within `waiter_ttl`. A waiter
asks again every `poll` (at most 0.1 s), and at once when its own process gives a slot back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from telebridge.cluster.connect import Cluster
from telebridge.cluster.errors import ClusterUnavailable, SemaphoreTimeout

logger = logging.getLogger(__name__)

_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# KEYS: holders, queue, waiting, ticket. ARGV: token, limit, lease_ms, waiter_ms -> 1 granted.
_ACQUIRE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('ZREM', KEYS[2], gone)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[1])
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[1])
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free > 0 and redis.call('ZRANK', KEYS[2], ARGV[1]) < free then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  return 1
end
return 0
"""
)

# KEYS: holders, queue, waiting. ARGV: token.
_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
"""

# KEYS: holders. ARGV: limit, lease_ms, token... -> tokens whose slot is gone and could not be had
# again (a Redis that lost its data takes its holders back while the cap allows).
_RENEW = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lost = {}
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i])
      or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""
)

# KEYS: holders -> how many slots are held now.
_IN_USE = _NOW + "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
_IN_USE += "return redis.call('ZCARD', KEYS[1])"


class Semaphore:
    """At most `limit` holders across the cluster; `acquire` a token, `release` it when done."""

    def __init__(self, cluster: Cluster, name: str, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a semaphore needs a limit of at least 1, not {limit}")
        self._cluster = cluster
        self.name = name
        self.limit = limit
        base = cluster.key("sem", name)
        self._keys = [f"{base}:holders", f"{base}:queue", f"{base}:waiting", f"{base}:ticket"]
        self._poll = min(0.1, cluster.heartbeat / 4)
        self._waiter_ms = int(min(cluster.ttl, max(1.0, 10 * self._poll)) * 1000)
        self._held: set[str] = set()
        # Set (and replaced) when this process gives a slot back: its waiters ask again at once.
        self._freed = asyncio.Event()
        self._acquire = cluster.script(_ACQUIRE)
        self._release = cluster.script(_RELEASE)
        self._renew_script = cluster.script(_RENEW)
        self._in_use = cluster.script(_IN_USE)
        self._cleanups: set[asyncio.Task[None]] = set()
        # A renewal in flight would take a slot released meanwhile back; they take turns.
        self._renewing = asyncio.Lock()
        cluster.on_beat(self._renew)

    # The timeout is the semaphore's own: giving up leaves the queue and says which cap was full.
    async def acquire(self, timeout: float) -> str:  # noqa: ASYNC109
        """Wait up to `timeout` s for a slot, in arrival order: its token, or `SemaphoreTimeout`."""
        c = self._cluster
        token = f"{c.process_id}:{uuid.uuid4().hex}"
        args: list[str | int] = [token, self.limit, c.ttl_ms, self._waiter_ms]
        deadline = time.monotonic() + timeout
        try:
            while True:
                granted = await c.run(lambda r: self._acquire(keys=self._keys, args=args, client=r))
                if granted:
                    self._held.add(token)
                    return token
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                freed = self._freed
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(self._poll, left)):
                        await freed.wait()
        except BaseException:
            if token not in self._held:
                self._leave_queue(token)
            raise
        with contextlib.suppress(ClusterUnavailable):
            await self.release(token)  # leave the queue (if Redis is away, the waiter lease ends)
        raise SemaphoreTimeout(
            f"no slot of {self.name!r} (limit {self.limit}) free within {timeout:g}s"
        )

    async def release(self, token: str) -> None:
        """Give the slot back (nothing happens if its lease already expired)."""
        async with self._renewing:
            self._held.discard(token)
            await self._cluster.run(
                lambda r: self._release(keys=self._keys[:3], args=[token], client=r)
            )
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()

    @contextlib.asynccontextmanager
    async def slot(self, timeout: float) -> AsyncIterator[str]:  # noqa: ASYNC109
        """`async with semaphore.slot(timeout) as token:` — acquire, and release on the way out."""
        token = await self.acquire(timeout)
        try:
            yield token
        finally:
            await self.release(token)

    async def in_use(self) -> int:
        """How many slots are held across the cluster now (expired leases not counted)."""
        count = await self._cluster.run(lambda r: self._in_use(keys=self._keys[:1], client=r))
        return int(count)

    async def queued(self) -> int:
        """How many callers wait for a slot across the cluster now."""

        async def count(r: Redis) -> int:
            return int(await r.zcard(self._keys[1]))

        return await self._cluster.run(count)

    def _leave_queue(self, token: str) -> None:
        # A waiter cancelled (or failed) leaves the queue without delaying its caller; if Redis
        # is away, its waiter lease expires instead.
        async def leave() -> None:
            with contextlib.suppress(Exception):
                await self.release(token)

        task = asyncio.get_running_loop().create_task(leave())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _renew(self) -> None:
        async with self._renewing:
            if not self._held:
                return
            c = self._cluster
            args: list[str | int] = [self.limit, c.ttl_ms, *self._held]
            lost = await c.run(
                lambda r: self._renew_script(keys=self._keys[:1], args=args, client=r)
            )
        for raw in lost:
            logger.warning("slot of %r lost while Redis was away", self.name)
            self._held.discard(raw.decode())
