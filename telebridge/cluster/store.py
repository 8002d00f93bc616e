"""`Store`: a byte store shared by the cluster (the prompt cache), its total size bounded.

Keys under `<prefix>:store:<name>:` — `data:<key>` (the bytes), `sizes` (HASH key -> length),
`total` (the sum of the lengths), `lru` (ZSET key -> last use, a tick of the `tick` counter). A put
evicts the least recently used entries until the total fits `max_bytes`; a get counts as a use.
Both are one Lua script each, so processes sharing the store never see the bound broken.
"""

from __future__ import annotations

from redis.asyncio import Redis

from telebridge.cluster.connect import Cluster

# KEYS: lru, sizes, total, tick. ARGV: key, data, max_bytes, data key prefix -> 1 stored, 0 too big.
_PUT = """
local size = string.len(ARGV[2])
local max = tonumber(ARGV[3])
if size > max then return 0 end
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
redis.call('SET', ARGV[4] .. ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], size)
local total = redis.call('INCRBY', KEYS[3], size - old)
redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[4]), ARGV[1])
while total > max do
  local victim = redis.call('ZPOPMIN', KEYS[1])[1]
  local freed = tonumber(redis.call('HGET', KEYS[2], victim) or '0')
  total = redis.call('INCRBY', KEYS[3], -freed)
  redis.call('HDEL', KEYS[2], victim)
  redis.call('DEL', ARGV[4] .. victim)
end
return 1
"""

# KEYS: lru, sizes, total, tick. ARGV: key, data key prefix -> the bytes or nil.
_GET = """
local data = redis.call('GET', ARGV[2] .. ARGV[1])
if data then
  redis.call('ZADD', KEYS[1], 'XX', redis.call('INCR', KEYS[4]), ARGV[1])
else
  local size = redis.call('HGET', KEYS[2], ARGV[1])
  if size then
    redis.call('INCRBY', KEYS[3], -tonumber(size))
    redis.call('HDEL', KEYS[2], ARGV[1])
    redis.call('ZREM', KEYS[1], ARGV[1])
  end
end
return data
"""


class Store:
    """Bytes by key, at most `max_bytes` in all; the least recently used go first."""

    def __init__(self, cluster: Cluster, name: str, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"a store needs max_bytes >= 1, not {max_bytes}")
        self._cluster = cluster
        self.max_bytes = max_bytes
        base = cluster.key("store", name)
        self._keys = [f"{base}:lru", f"{base}:sizes", f"{base}:total", f"{base}:tick"]
        self._data = f"{base}:data:"
        self._put = cluster.script(_PUT)
        self._get = cluster.script(_GET)

    async def get(self, key: str) -> bytes | None:
        """The bytes stored under `key`, or None (never stored, or evicted)."""
        data = await self._cluster.run(
            lambda r: self._get(keys=self._keys, args=[key, self._data], client=r)
        )
        return bytes(data) if data is not None else None

    async def put(self, key: str, data: bytes) -> bool:
        """Store `data` under `key`, evicting as needed; False if `data` alone exceeds the bound."""
        args: list[str | bytes | int] = [key, data, self.max_bytes, self._data]
        stored = await self._cluster.run(lambda r: self._put(keys=self._keys, args=args, client=r))
        return bool(stored)

    async def size(self) -> int:
        """The total length of the bytes stored now."""

        async def total(r: Redis) -> bytes | str | None:
            raw: bytes | str | None = await r.get(self._keys[2])
            return raw

        raw = await self._cluster.run(total)
        return int(raw) if raw is not None else 0
