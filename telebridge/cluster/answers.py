"""`Answers`: the cluster's memory of `Idempotency-Key` answers, so a request retried through a
load balancer onto another process places no second call.

One key per (client, idempotency key), `<prefix>:idem:<sha256>`, holding JSON: `{"fp": request
fingerprint, "owner": process}` while the first request runs (a lease of `lease` seconds, so a
process that dies mid-request does not hold the key for ever), then `{"fp", "answer": {...}}` for
`ttl` seconds. A claim is one `SET NX`; a waiter polls the key until an answer is there, or the
key is gone (the first request failed without an answer to keep, or its process died), or most
of the lease has passed (the first request is still running).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from telebridge.cluster.connect import Cluster

__all__ = ["Answers", "Claim"]

POLL = 0.05  # how often a waiter looks for the first request's answer
WAIT_SHARE = 0.8  # a waiter waits this share of the lease for the first request's answer

# KEYS: key. ARGV: me -> 1 dropped, 0 not ours (answered, or claimed again by another).
_DROP = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local entry = cjson.decode(raw)
if entry['owner'] == ARGV[1] and entry['answer'] == nil then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim found: `mine` (run the request), or the first request's `answer` and its
    fingerprint (`fingerprint` differs: the key was used for another request)."""

    mine: bool
    fingerprint: str = ""
    answer: dict[str, Any] | None = None


class Answers:
    def __init__(self, cluster: Cluster, *, lease: float = 60.0, ttl: float = 86400.0) -> None:
        self._cluster = cluster
        self._lease_ms = int(lease * 1000)
        self._ttl_ms = int(ttl * 1000)
        self.lease = lease
        self._drop = cluster.script(_DROP)

    def _key(self, client: str, key: str) -> str:
        digest = hashlib.sha256(f"{client}\n{key}".encode()).hexdigest()
        return self._cluster.key("idem", digest)

    async def claim(self, client: str, key: str, fingerprint: str) -> Claim:
        """Claim the key for this request, or wait (most of the lease) for the first one's answer.

        `ClusterUnavailable` when Redis is lost; `LookupError` when the first request ended
        without an answer while we waited; `TimeoutError` when it is still running."""
        name = self._key(client, key)
        entry = json.dumps({"fp": fingerprint, "owner": self._cluster.process_id})
        # Short of the lease: past it, the key is gone and a waiter could not tell why.
        deadline = time.monotonic() + self.lease * WAIT_SHARE
        waited = False
        while True:
            if not waited:
                stored = await self._cluster.run(
                    lambda r: r.set(name, entry, nx=True, px=self._lease_ms)
                )
                if stored:
                    return Claim(mine=True)
            raw = await self._cluster.run(lambda r: r.get(name))
            if raw is None:
                if waited:  # it ran while we waited, and left no answer
                    raise LookupError("the first request with this key failed")
                continue  # gone between the two commands: claim it again
            found = json.loads(raw)
            if found["fp"] != fingerprint or found.get("answer") is not None:
                return Claim(False, found["fp"], found.get("answer"))
            if time.monotonic() >= deadline:
                raise TimeoutError("the first request with this key is still running")
            waited = True
            await asyncio.sleep(POLL)

    async def settle(self, client: str, key: str, fingerprint: str, answer: dict[str, Any]) -> None:
        """Keep the first request's answer for the ttl."""
        entry = json.dumps({"fp": fingerprint, "answer": answer})
        name = self._key(client, key)
        await self._cluster.run(lambda r: r.set(name, entry, px=self._ttl_ms))

    async def drop(self, client: str, key: str) -> None:
        """Give the key up (no answer to keep): the next request with it runs again."""
        name = self._key(client, key)
        me = self._cluster.process_id
        await self._cluster.run(lambda r: self._drop(keys=[name], args=[me], client=r))
