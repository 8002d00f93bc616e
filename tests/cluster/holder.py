"""A cluster process for the tests to kill: joins as `holder`, claims a call, takes a slot of a
semaphore (limit 1), prints `ready`, then only heartbeats until it is killed.

    python -m tests.cluster.holder URL PREFIX CALL_ID SEMAPHORE
"""

from __future__ import annotations

import asyncio
import sys

from telebridge.cluster import Cluster, Registry, Semaphore


async def main(url: str, prefix: str, call_id: str, semaphore: str) -> None:
    cluster = await Cluster.connect(url, process_id="holder", prefix=prefix, heartbeat=0.2, ttl=1.0)
    assert await Registry(cluster).claim(call_id, {"carrier": "plivo"})
    await Semaphore(cluster, semaphore, 1).acquire(timeout=5)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
