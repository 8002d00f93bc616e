"""The prompt cache's shared layer (server/cluster_prompts.py) on a real Redis, each "process" a
PromptCache of its own with its own cluster connection: what one synthesised another plays without
Waves; a synthesis under way is followed chunk by chunk and Waves is asked once; a maker killed
(`kill -9`) or abandoning mid-synthesis leaves its follower to make the prompt itself, exactly;
with Redis down, Waves answers and it is said once."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from telebridge.cluster import Cluster
from telebridge.server.cluster_prompts import ClusterPrompts
from telebridge.tts import SpeechOptions
from telebridge.tts.cache import PromptCache
from telebridge.tts.errors import WavesRateLimited, WavesTruncated
from telebridge.tts.guard import WavesGuard, speech_deadline
from telebridge.tts.speech import Synthesizer
from tests.servers.redis import RedisServer, private_redis, redis_server
from tests.tts.test_cache import FakeWaves, collect

__all__ = ["private_redis", "redis_server"]

ROOT = Path(__file__).resolve().parents[2]
EMILY = SpeechOptions(voice_id="emily")
CLAIM_TTL = 0.6


@dataclass
class Node:
    """One process's prompt cache with the shared layer."""

    cache: PromptCache
    prompts: ClusterPrompts
    waves: FakeWaves
    cluster: Cluster

    def speak(self, text: str = "hi") -> AsyncIterator[bytes]:
        return self.cache.synthesize(text, sample_rate=8000, options=EMILY)

    def prefetch(self, text: str = "hi") -> None:
        self.cache.prefetch(text, sample_rate=8000, options=EMILY)


Join = Callable[..., Awaitable[Node]]


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def join(redis_server: RedisServer, prefix: str) -> AsyncIterator[Join]:
    made: list[Node] = []

    async def make(
        name: str, waves: FakeWaves, url: str | None = None, inner: Synthesizer | None = None
    ) -> Node:
        cluster = await Cluster.connect(
            url or redis_server.url, process_id=name, prefix=prefix, heartbeat=0.2, ttl=1.0
        )
        prompts = ClusterPrompts(cluster, 10_000, "test", claim_ttl=CLAIM_TTL)
        cache = PromptCache(inner or waves, max_bytes=10_000, shared=prompts)
        node = Node(cache, prompts, waves, cluster)
        made.append(node)
        return node

    yield make
    for node in made:
        await node.cache.aclose()
        await node.cluster.close()


async def until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, within: float = 5
) -> None:
    """Poll `condition` (never a sleep as an assertion); fails naming `what`."""
    try:
        async with asyncio.timeout(within):
            while True:
                result = condition()
                if result if isinstance(result, bool) else await result:
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"not within {within:g} s: {what}")


async def following(node: Node) -> bool:
    """Some connection to Redis waits in XREAD: a follower is reading a fill."""
    clients = await node.cluster.client.client_list()
    return any(c.get("cmd") == "xread" for c in clients)


async def published(node: Node) -> None:
    await until(lambda: not node.prompts._publishing, "the maker published all it had")


async def test_what_one_process_synthesised_another_plays_without_waves(join: Join) -> None:
    a = await join("a", FakeWaves([b"ab", b"cd"]))
    b = await join("b", FakeWaves([b"zz"]))  # would say something else, if it were asked
    assert await collect(a.speak()) == b"abcd"
    await published(a)
    assert await collect(b.speak()) == b"abcd"
    assert await collect(b.speak()) == b"abcd"  # then from its own memory
    assert b.waves.requests == []
    assert (b.cache.shared_hits, b.cache.follows, b.cache.hits, b.cache.misses) == (1, 0, 2, 0)
    assert (a.cache.misses, a.cache.shared_hits) == (1, 0)


async def test_a_synthesis_under_way_is_followed_chunk_by_chunk_and_asked_once(
    join: Join,
) -> None:
    a = await join("a", FakeWaves([b"1", b"2", b"3"], gated=True))
    b = await join("b", FakeWaves([b"zz"]))
    a.prefetch()  # as the answer webhook does
    await until(lambda: a.waves.requests == ["hi"], "a asks Waves")
    heard = b.speak()  # the stream landed on b
    assert a.waves.gate is not None
    a.waves.gate.release()
    assert await anext(heard) == b"1"  # while a's synthesis is still under way
    assert not a.cache.size
    a.waves.gate.release()
    a.waves.gate.release()
    assert b"1" + await collect(heard) == b"123"
    assert b.waves.requests == [] and b.cache.follows == 1 and b.cache.hits == 1


async def test_concurrent_fills_on_two_processes_ask_waves_once(join: Join) -> None:
    a = await join("a", FakeWaves([b"1", b"2"]))
    b = await join("b", FakeWaves([b"1", b"2"]))
    for text in ("one", "two", "three", "four"):
        readers = [node.speak(text) for node in (a, b, a, b)]
        assert await asyncio.gather(*map(collect, readers)) == [b"12"] * 4
    assert len(a.waves.requests) + len(b.waves.requests) == 4, (a.waves.requests, b.waves.requests)


async def speak_by(node: Node, seconds: float) -> bytes:
    """One call's request for "hi" that must be admitted within `seconds` (as a session sets)."""
    speech_deadline.set(time.monotonic() + seconds)
    return await collect(node.speak())


async def test_a_follower_gives_up_at_its_own_deadline_while_the_maker_waits_for_waves(
    join: Join, prefix: str
) -> None:
    waves = FakeWaves([b"ab", b"cd"])
    guard = WavesGuard(waves, queue_timeout=5.0)
    guard.observe_failure(WavesRateLimited("429"))  # Waves asks a for 0.5 s of back-off
    a = await join("a", waves, inner=guard)
    b = await join("b", FakeWaves([b"zz"]))
    a.prefetch()

    async def claimed() -> bool:
        return bool([k async for k in a.cluster.client.scan_iter(match=f"{prefix}:fill:*")])

    await until(claimed, "a claims the prompt")
    hurried = asyncio.create_task(speak_by(b, 0.1))
    patient = asyncio.create_task(speak_by(b, 3.0))
    with pytest.raises(WavesRateLimited):
        await hurried  # told of a's wait, it gives up at once, as it would have alone
    assert not patient.done()
    assert await patient == b"abcd"
    assert waves.requests == ["hi"] and b.waves.requests == [] and b.cache.follows == 1


async def start_maker(url: str, prefix: str, chunks: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.server.prompt_maker",
        url,
        prefix,
        str(chunks),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(20):
        line = await process.stdout.readline()
    assert line.strip() == b"ready", line
    return process


async def test_a_maker_killed_mid_synthesis_leaves_the_follower_to_make_it_exactly(
    join: Join, redis_server: RedisServer, prefix: str
) -> None:
    maker = await start_maker(redis_server.url, prefix, chunks=2)  # "first" twice, then stuck
    b = await join("b", FakeWaves([b"ab", b"cd"], gated=True))
    try:
        b.prefetch()  # nobody hears it yet: the maker's chunks can still be thrown away
        await until(lambda: following(b), "b follows the maker's fill")
    finally:
        maker.kill()
        await maker.wait()
    await until(lambda: b.waves.requests == ["hi"], "b synthesises the prompt itself", 10)
    assert b.waves.gate is not None
    b.waves.gate.release()
    b.waves.gate.release()
    assert await collect(b.speak()) == b"abcd"  # not a byte of the maker's
    assert b.cache.follows == 0


async def test_a_listener_who_heard_the_dead_makers_chunks_gets_a_failed_prompt(
    join: Join, redis_server: RedisServer, prefix: str
) -> None:
    maker = await start_maker(redis_server.url, prefix, chunks=1)
    b = await join("b", FakeWaves([b"ab", b"cd"]))
    heard = b.speak()
    try:
        assert await anext(heard) == b"first"
    finally:
        maker.kill()
        await maker.wait()
    with pytest.raises(WavesTruncated):
        await collect(heard)  # cut short, as when Waves fails mid-prompt: never two mixed
    assert await collect(b.speak()) == b"abcd"  # the next try: b makes it itself
    assert b.waves.requests == ["hi"]


async def test_a_synthesis_abandoned_by_its_maker_is_made_again_by_its_follower(
    join: Join,
) -> None:
    a = await join("a", FakeWaves([b"1", b"2"], gated=True))
    b = await join("b", FakeWaves([b"xy"]))
    heard = a.speak()

    async def first_chunk() -> bytes:
        return await anext(heard)

    first = asyncio.create_task(first_chunk())
    await until(lambda: a.waves.requests == ["hi"], "a asks Waves")
    b.prefetch()
    await until(lambda: following(b), "b follows a's fill")
    first.cancel()  # a's caller hangs up: a stops its synthesis
    with pytest.raises(asyncio.CancelledError):
        await first
    await until(lambda: b.waves.requests == ["hi"], "b synthesises the prompt itself")
    assert await collect(b.speak()) == b"xy"
    assert a.waves.closed == 1 and b.cache.follows == 0


async def test_with_redis_down_waves_answers_and_it_is_said_once(
    join: Join, private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    a = await join("a", FakeWaves([b"ab"]), url=private_redis.url)
    private_redis.stop()
    for text in ("one", "two", "three"):
        assert await collect(a.speak(text)) == b"ab"
    assert a.waves.requests == ["one", "two", "three"]
    assert a.prompts.errors == 3
    said = [r for r in caplog.records if "synthesises its prompts alone" in r.message]
    assert len(said) == 1, said

    private_redis.start()
    await until(lambda: not a.prompts._alone, "the heartbeat finds Redis again")
    assert await collect(a.speak("four")) == b"ab"
    await published(a)
    b = await join("b", FakeWaves([b"zz"]), url=private_redis.url)
    assert await collect(b.speak("four")) == b"ab"
    assert b.waves.requests == []
