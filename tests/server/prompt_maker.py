"""A cluster process for the tests to kill mid-synthesis: joins as `maker`, starts synthesising
`hi` through a prompt cache with the shared layer (a fake Waves that says `CHUNKS` chunks of
`first` and then never finishes), prints `ready` once they are published, then waits to be killed.

    python -m tests.server.prompt_maker URL PREFIX CHUNKS
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

from telebridge.cluster import Cluster
from telebridge.server.cluster_prompts import ClusterPrompts
from telebridge.tts import SpeechOptions
from telebridge.tts.cache import PromptCache

CLAIM_TTL = 0.6


class StuckWaves:
    def __init__(self, chunks: int) -> None:
        self.chunks = chunks

    async def _gen(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            yield b"first"
        await asyncio.Event().wait()

    def synthesize(
        self, text: str, *, sample_rate: int, options: SpeechOptions, request_id: str | None = None
    ) -> AsyncIterator[bytes]:
        return self._gen()


async def main(url: str, prefix: str, chunks: str) -> None:
    cluster = await Cluster.connect(url, process_id="maker", prefix=prefix, heartbeat=0.2, ttl=1.0)
    prompts = ClusterPrompts(cluster, 10_000, "test", claim_ttl=CLAIM_TTL)
    cache = PromptCache(StuckWaves(int(chunks)), max_bytes=10_000, shared=prompts)
    cache.prefetch("hi", sample_rate=8000, options=SpeechOptions(voice_id="emily"))
    while not await ready(cluster, prefix, int(chunks)):
        await asyncio.sleep(0.02)
    print("ready", flush=True)
    await asyncio.Event().wait()


async def ready(cluster: Cluster, prefix: str, chunks: int) -> bool:
    """The claim is held and the fill's stream holds `chunks` chunks."""
    if not [k async for k in cluster.client.scan_iter(match=f"{prefix}:fill:*")]:
        return False
    if not chunks:
        return True
    keys = [k async for k in cluster.client.scan_iter(match=f"{prefix}:fill:*:*:*")]
    return bool(keys) and int(await cluster.client.xlen(keys[0])) >= chunks


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
