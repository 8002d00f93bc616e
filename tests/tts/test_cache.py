"""The prompt cache: hits, shared in-flight synthesis, nothing kept from failures, LRU bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from telebridge.tts.cache import PromptCache
from telebridge.tts.errors import WavesTruncated
from telebridge.tts.waves import SpeechOptions

EMILY = SpeechOptions(voice_id="emily")


class FakeWaves:
    """Yields `chunks` for any text (gated: one per `gate` release); records every request."""

    def __init__(
        self, chunks: list[bytes], *, fail_after: int | None = None, gated: bool = False
    ) -> None:
        self.chunks = chunks
        self.fail_after = fail_after
        self.requests: list[str] = []
        self.gate = asyncio.Semaphore(0) if gated else None
        self.closed = 0

    async def _gen(self, text: str) -> AsyncIterator[bytes]:
        self.requests.append(text)
        try:
            for i, chunk in enumerate(self.chunks):
                if self.fail_after is not None and i == self.fail_after:
                    raise WavesTruncated("dropped")
                if self.gate is not None:
                    await self.gate.acquire()
                yield chunk
        finally:
            self.closed += 1

    def synthesize(
        self, text: str, *, sample_rate: int, options: SpeechOptions, request_id: str | None = None
    ) -> AsyncIterator[bytes]:
        return self._gen(text)


async def collect(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in it])


async def test_second_request_is_a_hit_with_the_same_bytes() -> None:
    waves = FakeWaves([b"ab", b"cde", b"f"])
    cache = PromptCache(waves, max_bytes=1000)
    first = await collect(cache.synthesize("hi", sample_rate=8000, options=EMILY))
    second = await collect(cache.synthesize("hi", sample_rate=8000, options=EMILY))
    assert first == second == b"abcdef"
    assert waves.requests == ["hi"] and (cache.hits, cache.misses) == (1, 1)


@pytest.mark.parametrize(
    "other",
    [
        {"sample_rate": 16000, "options": EMILY},
        {"sample_rate": 8000, "options": SpeechOptions(voice_id="james")},
        {"sample_rate": 8000, "options": SpeechOptions(voice_id="emily", speed=1.5)},
        {"sample_rate": 8000, "options": SpeechOptions(voice_id="emily", language="de")},
        {
            "sample_rate": 8000,
            "options": SpeechOptions(voice_id="emily", model="lightning_v3.1_pro"),
        },
    ],
)
async def test_anything_that_shapes_the_audio_is_part_of_the_key(other: dict[str, Any]) -> None:
    waves = FakeWaves([b"xy"])
    cache = PromptCache(waves, max_bytes=1000)
    await collect(cache.synthesize("hi", sample_rate=8000, options=EMILY))
    await collect(cache.synthesize("hi", **other))
    assert len(waves.requests) == 2


async def test_a_prompt_in_flight_is_shared_not_asked_twice() -> None:
    waves = FakeWaves([b"1", b"2", b"3"])
    cache = PromptCache(waves, max_bytes=1000)
    a = asyncio.create_task(collect(cache.synthesize("hi", sample_rate=8000, options=EMILY)))
    await asyncio.sleep(0)
    b = asyncio.create_task(collect(cache.synthesize("hi", sample_rate=8000, options=EMILY)))
    assert await a == await b == b"123"
    assert waves.requests == ["hi"]


async def test_a_failure_is_seen_by_every_reader_and_nothing_is_kept() -> None:
    waves = FakeWaves([b"1", b"2", b"3"], fail_after=2)
    cache = PromptCache(waves, max_bytes=1000)
    for _ in range(2):
        with pytest.raises(WavesTruncated):
            await collect(cache.synthesize("hi", sample_rate=8000, options=EMILY))
    assert len(waves.requests) == 2 and cache.size == 0


async def test_an_abandoned_prompt_stops_waves_and_is_not_kept() -> None:
    waves = FakeWaves([b"1", b"2", b"3"], gated=True)
    cache = PromptCache(waves, max_bytes=1000)
    stream = cache.synthesize("hi", sample_rate=8000, options=EMILY)
    assert waves.gate is not None
    waves.gate.release()
    assert await anext(stream) == b"1"
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(0.01)
    assert waves.closed == 1 and cache.size == 0
    for _ in range(3):
        waves.gate.release()
    assert await collect(cache.synthesize("hi", sample_rate=8000, options=EMILY)) == b"123"


async def test_prefetch_fills_the_cache_without_a_reader() -> None:
    waves = FakeWaves([b"ab", b"c"])
    cache = PromptCache(waves, max_bytes=1000)
    cache.prefetch("hi", sample_rate=8000, options=EMILY)
    cache.prefetch("hi", sample_rate=8000, options=EMILY)  # once is enough
    got = await collect(cache.synthesize("hi", sample_rate=8000, options=EMILY))
    await asyncio.sleep(0)
    assert got == b"abc" and waves.requests == ["hi"] and cache.size == 3


async def test_lru_stays_within_its_bound() -> None:
    waves = FakeWaves([b"x" * 100])
    cache = PromptCache(waves, max_bytes=400)
    for text in ("a", "b", "a", "c", "d", "e"):
        await collect(cache.synthesize(text, sample_rate=8000, options=EMILY))
    assert cache.size <= 400
    # "b" was the least recently used ("a" was heard again), so "e" pushed it out.
    for text in ("a", "b"):
        await collect(cache.synthesize(text, sample_rate=8000, options=EMILY))
    assert waves.requests == ["a", "b", "c", "d", "e", "b"]


async def test_zero_size_stores_nothing() -> None:
    waves = FakeWaves([b"ab"])
    cache = PromptCache(waves, max_bytes=0)
    for _ in range(2):
        await collect(cache.synthesize("hi", sample_rate=8000, options=EMILY))
    assert len(waves.requests) == 2
