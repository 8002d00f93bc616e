"""`SharedPlaced`: the calls the call API placed, known to every process of the cluster, so the id
`POST /v1/calls` answered (the carrier's request id) finds the call on any of them.

Each placed call is a hash `<prefix>:placed:<request_id>` (carrier, to, from, flow, attempt,
placed_at, state, call_id; `call_id` empty until the carrier's call id is known) and an index
`<prefix>:placed-attempt:<attempt>` -> request id, both expiring `keep` seconds after placing. The
stream and the hangup callback bring the call's `attempt` back to whichever process they reach:
`streaming` and `ended` find the record through the index. One of them may come before the
placing process wrote the record (the carrier answered before it confirmed the call); it is kept
as `<prefix>:placed-early:<attempt>` and applied by `add`. The ZSET `<prefix>:placed-queued`
(scored by the placing time, Redis time in ms) lists the calls still queued without scanning.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from telebridge.cluster.connect import Cluster

__all__ = ["SharedPlaced"]

FIELDS = ("carrier", "to", "from", "flow", "attempt", "placed_at", "state", "call_id")

_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# KEYS: record, attempt index, early, queued. ARGV: keep_ms, request_id, field, value, ...
_ADD = (
    _NOW
    + """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[1])
local early = redis.call('HGETALL', KEYS[3])
if #early > 0 then
  redis.call('HSET', KEYS[1], unpack(early))
  redis.call('DEL', KEYS[3])
else
  redis.call('ZADD', KEYS[4], now, ARGV[2])
end
"""
)

# KEYS: attempt index, early, queued. ARGV: keep_ms, attempt, state, call_id, prefix.
# `live` only moves a queued call (an ended call never comes back); `ended` keeps a known call id.
_MOVE = """
local request_id = redis.call('GET', KEYS[1])
if not request_id then
  local held = redis.call('HGET', KEYS[2], 'state')
  if held == 'ended' then return 0 end
  redis.call('HSET', KEYS[2], 'state', ARGV[3])
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'call_id', ARGV[4]) end
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
  return 0
end
local record = ARGV[5] .. request_id
local state = redis.call('HGET', record, 'state')
if not state then return 0 end
if ARGV[3] == 'live' and state ~= 'queued' then return 0 end
redis.call('HSET', record, 'state', ARGV[3])
local known = redis.call('HGET', record, 'call_id')
if ARGV[4] ~= '' and (not known or known == '') then
  redis.call('HSET', record, 'call_id', ARGV[4])
end
redis.call('ZREM', KEYS[3], request_id)
return 1
"""

# KEYS: queued. ARGV: queued_for_ms, the records' prefix -> {request_id, {field, value...}, ...}.
_QUEUED = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local fields = redis.call('HGETALL', ARGV[2] .. id)
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


class SharedPlaced:
    """The cluster's placed calls, as dicts of `FIELDS` plus `request_id` (`call_id` None until
    known). Every operation may raise `ClusterUnavailable`."""

    def __init__(self, cluster: Cluster, *, keep: float, queued_for: float) -> None:
        self._cluster = cluster
        self._keep_ms = int(keep * 1000)
        self._queued_for_ms = int(queued_for * 1000)
        self._queued = cluster.key("placed-queued")
        self._add = cluster.script(_ADD)
        self._move = cluster.script(_MOVE)
        self._list = cluster.script(_QUEUED)

    def _record(self, request_id: str) -> str:
        return self._cluster.key("placed", request_id)

    def _keys_of(self, attempt: str) -> list[str]:
        c = self._cluster
        return [c.key("placed-attempt", attempt), c.key("placed-early", attempt), self._queued]

    async def add(self, request_id: str, call: dict[str, str | None]) -> None:
        """Write a call just placed (`call` has `FIELDS`; its state is normally queued)."""
        args: list[str | int] = [self._keep_ms, request_id]
        for name in FIELDS:
            args += [name, call.get(name) or ""]
        attempt = call.get("attempt") or ""
        keys = [self._record(request_id), *self._keys_of(attempt)]
        await self._cluster.run(lambda r: self._add(keys=keys, args=args, client=r))

    async def streaming(self, attempt: str, call_id: str) -> None:
        """The stream of the call placed with `attempt` started (as carrier call `call_id`)."""
        await self._move_to(attempt, "live", call_id)

    async def ended(self, attempt: str, call_id: str | None = None) -> None:
        await self._move_to(attempt, "ended", call_id or "")

    async def _move_to(self, attempt: str, state: str, call_id: str) -> None:
        args: list[str | int] = [self._keep_ms, attempt, state, call_id, self._record("")]
        keys = self._keys_of(attempt)
        await self._cluster.run(lambda r: self._move(keys=keys, args=args, client=r))

    async def get(self, request_id: str) -> dict[str, Any] | None:
        key = self._record(request_id)

        async def read(r: Redis) -> dict[Any, Any]:
            raw: dict[Any, Any] = await r.hgetall(key)  # type: ignore[misc]
            return raw

        raw = await self._cluster.run(read)
        return _decoded(request_id, raw) if raw else None

    async def states(self, request_ids: list[str]) -> dict[str, str | None]:
        """The state of each of `request_ids` (None: the cluster does not know the call)."""
        if not request_ids:
            return {}
        keys = [self._record(i) for i in request_ids]

        async def read(r: Redis) -> list[Any]:
            async with r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hget(key, "state")
                return list(await pipe.execute())

        found = await self._cluster.run(read)
        return {
            i: _text(s) if s is not None else None for i, s in zip(request_ids, found, strict=True)
        }

    async def queued(self) -> list[dict[str, Any]]:
        """The calls placed (within `queued_for`) that have neither streamed nor ended."""
        args: list[str | int] = [self._queued_for_ms, self._record("")]
        flat = await self._cluster.run(
            lambda r: self._list(keys=[self._queued], args=args, client=r)
        )
        out = []
        for request_id, fields in zip(flat[::2], flat[1::2], strict=True):
            raw = dict(zip(fields[::2], fields[1::2], strict=True))
            out.append(_decoded(request_id.decode(), raw))
        return out


def _decoded(request_id: str, raw: dict[Any, Any]) -> dict[str, Any]:
    call: dict[str, Any] = {_text(k): _text(v) for k, v in raw.items()}
    call["request_id"] = request_id
    call["call_id"] = call.get("call_id") or None
    return call


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
