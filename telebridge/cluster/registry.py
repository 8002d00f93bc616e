"""`Registry`: which process holds which call, seen from every process of the cluster.

Each call is a hash `<prefix>:call:<call_id>` (field `@owner` is the process, the others are the
call's info, JSON-encoded) with a ttl, and a member of the index ZSET `<prefix>:calls` scored by its
expiry (Redis time, ms) so `calls()` lists them without scanning. The heartbeat renews this
process's entries; a process that stops beating loses them after the ttl. Claims and updates are
also kept here, so entries lost while Redis was away (or restarted empty) are written again by the
first heartbeat that reaches it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from redis.asyncio import Redis

from telebridge.cluster.connect import Cluster

logger = logging.getLogger(__name__)

OWNER = "@owner"

_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# KEYS: call, index. ARGV: me, ttl_ms, call_id, field, value, ... -> 1 written, 0 held by another.
_PUT = (
    _NOW
    + """
local owner = redis.call('HGET', KEYS[1], '@owner')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '@owner', ARGV[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
return 1
"""
)

# KEYS: index, call... ARGV: me, ttl_ms, call_id... -> {ids missing, ids held by another}.
_RENEW = (
    _NOW
    + """
local missing, taken = {}, {}
for i = 2, #KEYS do
  local owner = redis.call('HGET', KEYS[i], '@owner')
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[i + 1])
  elseif owner then
    table.insert(taken, ARGV[i + 1])
  else
    table.insert(missing, ARGV[i + 1])
  end
end
return {missing, taken}
"""
)

# KEYS: call, index. ARGV: me, call_id.
_RELEASE = """
if redis.call('HGET', KEYS[1], '@owner') == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[2])
"""

# KEYS: index. ARGV: the call keys' prefix -> {call_id, {field, value, ...}, ...}.
_LIST = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local fields = redis.call('HGETALL', ARGV[1] .. id)
  if #fields == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    table.insert(out, id)
    table.insert(out, fields)
  end
end
return out
"""
)


class Registry:
    """The cluster's calls; `claim`, `update` and `release` this process's own."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._index = cluster.key("calls")
        self._mine: dict[str, dict[str, Any]] = {}
        self._put = cluster.script(_PUT)
        self._renew_script = cluster.script(_RENEW)
        self._release = cluster.script(_RELEASE)
        self._list = cluster.script(_LIST)
        # A renewal in flight would write a call released meanwhile again; they take turns.
        self._renewing = asyncio.Lock()
        cluster.on_beat(self._renew)

    def _key(self, call_id: str) -> str:
        return self._cluster.key("call", call_id)

    async def claim(self, call_id: str, info: dict[str, Any]) -> bool:
        """Hold `call_id` here with `info` (JSON values); False when another live process holds it.
        While Redis is away: `ClusterUnavailable`, and the claim is written when it is back."""
        self._mine[call_id] = dict(info)
        if not await self._write(call_id):
            del self._mine[call_id]
            return False
        return True

    async def update(self, call_id: str, **fields: Any) -> None:
        """Change fields of a call this process holds (`KeyError` if it holds no such call)."""
        self._mine[call_id].update(fields)
        if not await self._write(call_id):
            logger.warning("call %s is now held by another process", call_id)
            del self._mine[call_id]

    async def release(self, call_id: str) -> None:
        """The call is over here: remove its entry (if this process still holds it)."""
        c = self._cluster
        async with self._renewing:
            self._mine.pop(call_id, None)
            await c.run(
                lambda r: self._release(
                    keys=[self._key(call_id), self._index], args=[c.process_id, call_id], client=r
                )
            )

    async def owner(self, call_id: str) -> str | None:
        """The process holding `call_id`, or None when no live process does."""

        async def get(r: Redis) -> bytes | str | None:
            raw: bytes | str | None = await r.hget(self._key(call_id), OWNER)  # type: ignore[misc]
            return raw

        raw = await self._cluster.run(get)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def calls(self) -> list[dict[str, Any]]:
        """Every live call of the cluster: its info with `call_id` and `process_id` (its holder)."""
        prefix = self._key("")
        flat = await self._cluster.run(
            lambda r: self._list(keys=[self._index], args=[prefix], client=r)
        )
        out: list[dict[str, Any]] = []
        for call_id, fields in zip(flat[::2], flat[1::2], strict=True):
            pairs = dict(zip(fields[::2], fields[1::2], strict=True))
            owner = pairs.pop(OWNER.encode()).decode()
            entry = {k.decode(): json.loads(v) for k, v in pairs.items()}
            entry.update(call_id=call_id.decode(), process_id=owner)
            out.append(entry)
        return out

    async def _write(self, call_id: str) -> bool:
        c = self._cluster
        args: list[str | int] = [c.process_id, c.ttl_ms, call_id]
        for name, value in self._mine[call_id].items():
            args += [name, json.dumps(value)]
        written = await c.run(
            lambda r: self._put(keys=[self._key(call_id), self._index], args=args, client=r)
        )
        return bool(written)

    async def _renew(self) -> None:
        async with self._renewing:
            await self._renew_mine()

    async def _renew_mine(self) -> None:
        if not self._mine:
            return
        c = self._cluster
        ids = list(self._mine)
        keys = [self._index, *(self._key(i) for i in ids)]
        args: list[str | int] = [c.process_id, c.ttl_ms, *ids]
        missing, taken = await c.run(lambda r: self._renew_script(keys=keys, args=args, client=r))
        for raw in taken:
            logger.warning("call %s is now held by another process", raw.decode())
            self._mine.pop(raw.decode(), None)
        for raw in missing:
            call_id = raw.decode()
            if call_id in self._mine and not await self._write(call_id):
                self._mine.pop(call_id, None)
