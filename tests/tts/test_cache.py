"""The prompt cache: hits, shared in-flight synthesis, nothing kept from failures, LRU bounds,
and the on-disk layer that survives a restart."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from telebridge.tts import SpeechOptions
from telebridge.tts.cache import PromptCache
from telebridge.tts.cache_folder import encode, file_name
from telebridge.tts.errors import WavesRateLimited, WavesTruncated
from telebridge.tts.guard import WavesGuard, speech_deadline

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


# --- the on-disk layer ---------------------------------------------------------------------


def prompt_file(folder: Path, text: str = "hi") -> Path:
    return folder / file_name(PromptCache.key(text, 8000, EMILY))


def listing(folder: Path) -> dict[str, int]:
    """File name -> size of everything in `folder`."""
    return {p.name: p.stat().st_size for p in folder.iterdir()}


async def settle(cache: PromptCache) -> None:
    """Let the background disk writes finish (what shutdown does)."""
    await cache.aclose()


async def test_a_new_cache_on_the_same_folder_plays_without_asking_waves(tmp_path: Path) -> None:
    first = PromptCache(FakeWaves([b"ab", b"cdef"]), max_bytes=1000, directory=tmp_path)
    assert await collect(first.synthesize("hi", sample_rate=8000, options=EMILY)) == b"abcdef"
    await settle(first)
    assert prompt_file(tmp_path).exists()

    waves = FakeWaves([b"zz"])  # would say something else, if it were asked
    second = PromptCache(waves, max_bytes=1000, directory=tmp_path)
    assert await collect(second.synthesize("hi", sample_rate=8000, options=EMILY)) == b"abcdef"
    assert await collect(second.synthesize("hi", sample_rate=8000, options=EMILY)) == b"abcdef"
    assert waves.requests == []
    assert (second.hits, second.misses, second.disk_hits) == (2, 0, 1)  # then from memory
    assert second.size == 6


async def test_the_disk_layer_works_without_the_memory_cache(tmp_path: Path) -> None:
    first = PromptCache(FakeWaves([b"ab"]), max_bytes=0, directory=tmp_path)
    await collect(first.synthesize("hi", sample_rate=8000, options=EMILY))
    await settle(first)
    waves = FakeWaves([b"zz"])
    second = PromptCache(waves, max_bytes=0, directory=tmp_path)
    for _ in range(2):
        assert await collect(second.synthesize("hi", sample_rate=8000, options=EMILY)) == b"ab"
    assert waves.requests == [] and second.disk_hits == 2 and second.size == 0


def _truncated(data: bytes) -> bytes:
    return data[:-1]


def _odd_length(data: bytes) -> bytes:
    # A whole, self-consistent file whose audio is an odd number of bytes: not PCM16.
    return encode(PromptCache.key("hi", 8000, EMILY), b"abc")


def _other_key(data: bytes) -> bytes:
    # As if two keys hashed alike: the header names another prompt.
    return encode(PromptCache.key("ho", 8000, EMILY), b"zzzz")


def _flipped(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


@pytest.mark.parametrize(
    "damage",
    [_truncated, _odd_length, _other_key, _flipped, lambda _: b"", lambda _: b"garbage" * 9],
    ids=["truncated", "odd-length", "other-key", "bit-flip", "empty", "garbage"],
)
async def test_a_bad_file_is_a_miss_and_is_replaced(
    tmp_path: Path, damage: Callable[[bytes], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    first = PromptCache(FakeWaves([b"ab", b"cd"]), max_bytes=1000, directory=tmp_path)
    await collect(first.synthesize("hi", sample_rate=8000, options=EMILY))
    await settle(first)
    path = prompt_file(tmp_path)
    good = path.read_bytes()
    path.write_bytes(damage(good))

    waves = FakeWaves([b"ab", b"cd"])
    second = PromptCache(waves, max_bytes=1000, directory=tmp_path)
    assert await collect(second.synthesize("hi", sample_rate=8000, options=EMILY)) == b"abcd"
    assert waves.requests == ["hi"] and second.disk_hits == 0 and second.misses == 1
    assert [r.levelname for r in caplog.records if "deleting" in r.message] == ["WARNING"]
    await settle(second)
    assert path.read_bytes() == good


async def test_failed_or_interrupted_audio_is_never_written(tmp_path: Path) -> None:
    failing = PromptCache(
        FakeWaves([b"1", b"2", b"3"], fail_after=2), max_bytes=1000, directory=tmp_path
    )
    with pytest.raises(WavesTruncated):
        await collect(failing.synthesize("hi", sample_rate=8000, options=EMILY))
    await settle(failing)

    waves = FakeWaves([b"1", b"2", b"3"], gated=True)
    abandoned = PromptCache(waves, max_bytes=1000, directory=tmp_path)
    stream = abandoned.synthesize("hi", sample_rate=8000, options=EMILY)
    assert waves.gate is not None
    waves.gate.release()
    assert await anext(stream) == b"1"
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(0.01)
    assert waves.closed == 1
    await settle(abandoned)
    assert listing(tmp_path) == {}


async def test_a_shutdown_stops_a_synthesis_under_way_and_writes_nothing(tmp_path: Path) -> None:
    waves = FakeWaves([b"1", b"2"], gated=True)
    cache = PromptCache(waves, max_bytes=1000, directory=tmp_path)
    cache.prefetch("hi", sample_rate=8000, options=EMILY)
    assert waves.gate is not None
    waves.gate.release()
    await asyncio.sleep(0.01)
    await cache.aclose()
    assert waves.closed == 1 and listing(tmp_path) == {}


async def test_the_folder_stays_within_its_bound_dropping_the_least_recently_played(
    tmp_path: Path,
) -> None:
    audio = b"x" * 100
    size = len(encode(PromptCache.key("a", 8000, EMILY), audio))
    waves = FakeWaves([audio])
    cache = PromptCache(waves, max_bytes=0, directory=tmp_path, disk_max_bytes=4 * size)
    for i, text in enumerate(("a", "b", "c", "d")):
        await collect(cache.synthesize(text, sample_rate=8000, options=EMILY))
        await asyncio.gather(*cache._writes)
        # mtimes one second apart, as if played at different times (coarse clocks tie otherwise)
        os.utime(prompt_file(tmp_path, text), (1000 + i, 1000 + i))
    await collect(cache.synthesize("a", sample_rate=8000, options=EMILY))  # a disk hit: touched
    await collect(cache.synthesize("e", sample_rate=8000, options=EMILY))
    await settle(cache)
    # "b" was the least recently played ("a" was heard again), so "e" pushed it out.
    files = listing(tmp_path)
    assert set(files) == {prompt_file(tmp_path, t).name for t in ("a", "c", "d", "e")}
    assert sum(files.values()) <= 4 * size
    assert waves.requests == ["a", "b", "c", "d", "e"]


async def test_a_prompt_over_a_quarter_of_the_folder_is_not_written(tmp_path: Path) -> None:
    waves = FakeWaves([b"x" * 100])
    cache = PromptCache(waves, max_bytes=0, directory=tmp_path, disk_max_bytes=300)
    await collect(cache.synthesize("hi", sample_rate=8000, options=EMILY))
    await settle(cache)
    assert listing(tmp_path) == {}


async def test_concurrent_readers_of_a_prompt_on_disk_share_one_lookup(tmp_path: Path) -> None:
    first = PromptCache(FakeWaves([b"ab"]), max_bytes=1000, directory=tmp_path)
    await collect(first.synthesize("hi", sample_rate=8000, options=EMILY))
    await settle(first)
    prompt_file(tmp_path).unlink()  # gone: both readers must fall through to one Waves request

    waves = FakeWaves([b"cd"], gated=True)
    cache = PromptCache(waves, max_bytes=1000, directory=tmp_path)
    readers = [
        asyncio.create_task(collect(cache.synthesize("hi", sample_rate=8000, options=EMILY)))
        for _ in range(3)
    ]
    await asyncio.sleep(0.05)  # all three are waiting on the disk lookup or on Waves
    assert waves.gate is not None
    waves.gate.release()
    assert await asyncio.gather(*readers) == [b"cd"] * 3
    assert waves.requests == ["hi"] and (cache.hits, cache.misses) == (2, 1)

    again = PromptCache(FakeWaves([b"zz"]), max_bytes=1000, directory=tmp_path)
    await settle(cache)
    readers = [
        asyncio.create_task(collect(again.synthesize("hi", sample_rate=8000, options=EMILY)))
        for _ in range(3)
    ]
    assert await asyncio.gather(*readers) == [b"cd"] * 3
    assert again.disk_hits == 1 and (again.hits, again.misses) == (3, 0)


async def test_prefetch_finds_a_prompt_on_disk(tmp_path: Path) -> None:
    first = PromptCache(FakeWaves([b"ab"]), max_bytes=1000, directory=tmp_path)
    await collect(first.synthesize("hi", sample_rate=8000, options=EMILY))
    await settle(first)
    waves = FakeWaves([b"zz"])
    cache = PromptCache(waves, max_bytes=1000, directory=tmp_path)
    cache.prefetch("hi", sample_rate=8000, options=EMILY)
    await asyncio.sleep(0.05)
    assert cache.size == 2 and cache.disk_hits == 1
    assert await collect(cache.synthesize("hi", sample_rate=8000, options=EMILY)) == b"ab"
    assert waves.requests == []


# --- deadlines of callers sharing one synthesis ------------------------------------------


async def speak_by(cache: PromptCache, seconds: float) -> bytes:
    """One call's request for "hi" that must be admitted within `seconds` (as a session sets)."""
    speech_deadline.set(time.monotonic() + seconds)
    return await collect(cache.synthesize("hi", sample_rate=8000, options=EMILY))


async def test_a_caller_joining_a_fill_keeps_its_own_longer_deadline() -> None:
    waves = FakeWaves([b"ab", b"cd"])
    guard = WavesGuard(waves, queue_timeout=5.0)
    guard.observe_failure(WavesRateLimited("429"))  # Waves asks for 0.5 s of back-off
    cache = PromptCache(guard, max_bytes=1000)
    hurried = asyncio.create_task(speak_by(cache, 0.1))
    patient = asyncio.create_task(speak_by(cache, 3.0))  # joins the fill the first one started
    with pytest.raises(WavesRateLimited):
        await hurried
    assert not patient.done()
    assert await patient == b"abcd"
    assert waves.requests == ["hi"]


async def test_each_caller_gives_up_waiting_for_a_slot_at_its_own_deadline() -> None:
    busy = FakeWaves([b"zz"], gated=True)
    guard = WavesGuard(busy, max_in_flight=1, queue_timeout=5.0)
    holder = asyncio.create_task(collect(guard.synthesize("x", sample_rate=8000, options=EMILY)))
    await asyncio.sleep(0.01)
    assert guard.in_flight == 1
    cache = PromptCache(guard, max_bytes=1000)
    loop = asyncio.get_running_loop()
    started = loop.time()
    hurried = asyncio.create_task(speak_by(cache, 0.2))
    patient = asyncio.create_task(speak_by(cache, 3.0))
    with pytest.raises(WavesRateLimited):
        await hurried
    assert 0.15 <= loop.time() - started < 0.5
    await asyncio.sleep(0.2)
    assert not patient.done()
    assert busy.gate is not None
    for _ in range(2):
        busy.gate.release()  # the holder's chunk, then the shared prompt's
    assert await holder == b"zz"
    assert await patient == b"zz"
    assert busy.requests == ["x", "hi"] and guard.in_flight == 0


async def test_a_deadline_bounds_admission_only_not_a_slow_first_chunk() -> None:
    waves = FakeWaves([b"ab"], gated=True)
    cache = PromptCache(WavesGuard(waves, queue_timeout=5.0), max_bytes=1000)
    reader = asyncio.create_task(speak_by(cache, 0.1))
    await asyncio.sleep(0.3)  # admitted at once; Waves is slow to start (its own timeout)
    assert waves.gate is not None
    waves.gate.release()
    assert await reader == b"ab"


async def test_the_last_caller_giving_up_stops_the_fill_and_frees_its_place() -> None:
    busy = FakeWaves([b"zz"], gated=True)
    guard = WavesGuard(busy, max_in_flight=1, queue_timeout=5.0)
    holder = asyncio.create_task(collect(guard.synthesize("x", sample_rate=8000, options=EMILY)))
    await asyncio.sleep(0.01)
    cache = PromptCache(guard, max_bytes=1000)
    with pytest.raises(WavesRateLimited):
        await asyncio.create_task(speak_by(cache, 0.1))
    await asyncio.sleep(0.01)
    assert not guard._waiting
    assert busy.gate is not None
    busy.gate.release()
    assert await holder == b"zz"
    assert busy.requests == ["x"] and guard.in_flight == 0
