"""`Fills`: something being made once for the cluster (a prompt's synthesis), its pieces
published as they come so that other processes follow them instead of making it again.

Keys under `<prefix>:fill:<name>:` — `<key>` (the claim: the fill id of the process making it,
expiring after `claim_ttl` unless renewed) and `<key>:<fill id>` (a stream of its entries, each
`k` (a kind) and `d` (bytes), expiring `stream_ttl` after the last one). An `end` or `error` entry
closes the fill and drops the claim in the same script, so a follower that sees the claim gone
without either knows the maker stopped (died, or lost Redis). Only the claim's holder can add
entries, so a fill taken over after its claim expired cannot be mixed with the old one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence

from redis.asyncio import Redis

from telebridge.cluster.connect import Cluster

__all__ = ["Fill", "FillLost", "Fills"]

END = "end"
ERROR = "error"

# KEYS: claim. ARGV: fill id, ttl_ms -> the fill id holding the claim now (ours if it was free).
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""

# KEYS: claim, stream. ARGV: fill id, claim ttl_ms, stream ttl_ms, then kind, data pairs
# -> 1, or 0 when the claim is not (any more) ours and nothing was added.
_ADD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local closed = false
for i = 4, #ARGV, 2 do
  redis.call('XADD', KEYS[2], '*', 'k', ARGV[i], 'd', ARGV[i + 1])
  if ARGV[i] == 'end' or ARGV[i] == 'error' then closed = true end
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if closed then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


class FillLost(Exception):
    """A followed fill ended without its end: an `error` entry, its claim gone, or too slow."""


class Fill:
    """Our claim on `key`: `add` entries in order, the last `end` or `error`."""

    def __init__(self, fills: Fills, key: str, fill_id: str) -> None:
        self._fills = fills
        self.key = key
        self.fill_id = fill_id
        self.entries = 0
        self.closed = False

    async def add(self, entries: Sequence[tuple[str, bytes]]) -> bool:
        """Publish `entries` (only the last may close the fill); False (and nothing added) once
        the claim is no longer ours, or when they would pass `max_entries` (the fill is then
        closed with an `error`)."""
        if self.closed:
            return False
        batch = list(entries)
        closing = bool(batch) and batch[-1][0] in (END, ERROR)
        # The last place is kept for the entry that closes the fill.
        refused = len(batch) > self._fills.max_entries - self.entries - (0 if closing else 1)
        if refused:
            batch = [(ERROR, b"too many pieces")]
        fills = self._fills
        args: list[str | bytes | int] = [self.fill_id, fills.claim_ms, fills.stream_ms]
        for kind, data in batch:
            args += [kind, data]
        keys = [fills.claim_key(self.key), fills.stream_key(self.key, self.fill_id)]
        added = await fills.cluster.run(lambda r: fills.add_script(keys=keys, args=args, client=r))
        self.entries += len(batch)
        if not added or refused or closing:
            self.closed = True
        return bool(added) and not refused

    async def renew(self) -> bool:
        """Keep the claim while making it; False when it is no longer ours."""
        return await self.add([])

    async def close(self, kind: str = END, data: bytes = b"") -> bool:
        return await self.add([(kind, data)])


class Fills:
    """Fills of the cluster named `name`, one at a time per key."""

    def __init__(
        self,
        cluster: Cluster,
        name: str,
        *,
        claim_ttl: float = 3.0,
        stream_ttl: float = 30.0,
        max_entries: int = 4096,
    ) -> None:
        if not 0 < claim_ttl <= stream_ttl:
            raise ValueError(f"claim_ttl ({claim_ttl}s) must be > 0 and <= stream_ttl")
        self.cluster = cluster
        self.claim_ms = int(claim_ttl * 1000)
        self.stream_ms = int(stream_ttl * 1000)
        self.max_entries = max_entries
        self._base = cluster.key("fill", name)
        self._claim = cluster.script(_CLAIM)
        self.add_script = cluster.script(_ADD)
        # Under the connection's socket timeout, so a blocked read is not taken for a lost Redis.
        self._block_ms = max(10, int(cluster.op_timeout * 500))

    def claim_key(self, key: str) -> str:
        return f"{self._base}:{key}"

    def stream_key(self, key: str, fill_id: str) -> str:
        return f"{self._base}:{key}:{fill_id}"

    async def claim(self, key: str) -> Fill | str:
        """Our `Fill` of `key` when nobody makes it now, else the fill id of the one who does."""
        fill_id = f"{self.cluster.process_id}.{uuid.uuid4().hex[:12]}"
        keys = [self.claim_key(key)]
        args: list[str | int] = [fill_id, self.claim_ms]
        holder = await self.cluster.run(lambda r: self._claim(keys=keys, args=args, client=r))
        holder = holder.decode() if isinstance(holder, bytes) else str(holder)
        return Fill(self, key, fill_id) if holder == fill_id else holder

    async def follow(
        self,
        key: str,
        fill_id: str,
        timeout: float,  # noqa: ASYNC109
    ) -> AsyncIterator[tuple[str, bytes]]:
        """The entries of fill `fill_id` of `key` from its first, as they come, up to its `end`;
        `FillLost` for an `error`, a claim gone without an end, or no end within `timeout` s.
        `ClusterUnavailable` when Redis is lost."""
        stream, claim = self.stream_key(key, fill_id), self.claim_key(key)
        last = "0-0"
        deadline = time.monotonic() + timeout
        gone = False  # the claim is gone: what the stream holds now is all there will be
        while True:
            if time.monotonic() > deadline:
                raise FillLost(f"fill {fill_id} did not end within {timeout:g}s")
            block = None if gone else self._block_ms

            async def read(r: Redis, after: str = last, block: int | None = block) -> object:
                return await r.xread({stream: after}, count=256, block=block)

            answer = await self.cluster.run(read)
            entries = answer[0][1] if answer else []  # type: ignore[index]
            for entry_id, fields in entries:
                last = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                kind = fields.get(b"k", b"").decode()
                data = bytes(fields.get(b"d", b""))
                if kind == END:
                    return
                if kind == ERROR:
                    raise FillLost(f"fill {fill_id} failed: {data.decode(errors='replace')}")
                yield kind, data
            if entries:
                continue
            if gone:
                raise FillLost(f"fill {fill_id} stopped without its end (its process went away)")

            async def holder(r: Redis) -> bytes | str | None:
                value: bytes | str | None = await r.get(claim)
                return value

            gone = await self.cluster.run(holder) != fill_id.encode()
