"""WavesGuard: a refused key said once and shed, a shared back-off, a queue with a deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from telebridge.tts import SpeechOptions
from telebridge.tts.errors import TTSError, WavesAuthError, WavesRateLimited, WavesServerError
from telebridge.tts.guard import WavesGuard, speech_deadline

EMILY = SpeechOptions(voice_id="emily")
AUDIO = b"\x01\x02" * 80


class ScriptedWaves:
    """Answers each request by the next entry of `script`: an error to raise, or audio."""

    def __init__(self, *script: TTSError | None, hold: asyncio.Event | None = None) -> None:
        self.script = list(script)
        self.requests = 0
        self.running = 0
        self.most_running = 0
        self.hold = hold  # when given, every request waits on it before answering

    def synthesize(
        self,
        text: str,
        *,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None = None,
    ) -> AsyncIterator[bytes]:
        return self._answer()

    async def _answer(self) -> AsyncIterator[bytes]:
        self.requests += 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            outcome = self.script.pop(0) if self.script else None
            if self.hold is not None:
                await self.hold.wait()
            if outcome is not None:
                raise outcome
            yield AUDIO
        finally:
            self.running -= 1


async def speak(guard: WavesGuard) -> bytes:
    out = b""
    async for chunk in guard.synthesize("hi", sample_rate=8000, options=EMILY):
        out += chunk
    return out


async def test_a_refused_key_is_logged_once_and_later_requests_skip_waves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = ScriptedWaves(WavesAuthError("Waves refused the API key (HTTP 401)"))
    guard = WavesGuard(inner, recheck_after=60)
    with caplog.at_level(logging.WARNING, logger="telebridge.tts.guard"):
        for _ in range(5):
            with pytest.raises(WavesAuthError):
                await speak(guard)
    assert inner.requests == 1  # the other four never reached Waves
    assert guard.state == "refused" and guard.shed == 4
    loud = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(loud) == 1 and "refused the API key" in loud[0].getMessage()


async def test_a_refused_key_is_checked_again_and_recovery_is_said() -> None:
    now = [0.0]
    inner = ScriptedWaves(WavesAuthError("refused"))
    guard = WavesGuard(inner, recheck_after=30, clock=lambda: now[0])
    with pytest.raises(WavesAuthError):
        await speak(guard)
    now[0] = 29.0
    with pytest.raises(WavesAuthError):
        await speak(guard)
    assert inner.requests == 1
    now[0] = 31.0  # the re-check is due: one request goes to Waves, which now accepts the key
    assert await speak(guard) == AUDIO
    assert inner.requests == 2 and guard.state == "ok"


async def test_while_one_request_rechecks_the_key_others_are_shed() -> None:
    now = [0.0]
    hold = asyncio.Event()
    inner = ScriptedWaves(WavesAuthError("refused"), WavesAuthError("still refused"), hold=hold)
    guard = WavesGuard(inner, recheck_after=30, clock=lambda: now[0])
    hold.set()
    with pytest.raises(WavesAuthError):
        await speak(guard)
    hold.clear()
    now[0] = 31.0
    probe = asyncio.create_task(speak(guard))
    await asyncio.sleep(0.01)
    with pytest.raises(WavesAuthError):
        await speak(guard)  # the probe is under way: this one does not ask too
    hold.set()
    with pytest.raises(WavesAuthError):
        await probe
    assert inner.requests == 2 and guard.state == "refused"


async def test_a_rate_limit_makes_later_requests_wait_out_the_back_off() -> None:
    inner = ScriptedWaves(WavesRateLimited("429", retry_after=0.2))
    guard = WavesGuard(inner, queue_timeout=1.0)
    with pytest.raises(WavesRateLimited):
        await speak(guard)
    assert guard.state == "backing-off"
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await speak(guard) == AUDIO
    waited = loop.time() - started
    assert 0.4 <= waited < 0.9  # the back-off starts at 0.5 s, longer than Retry-After here
    assert guard.waits == 1
    assert guard.state == "ok"  # type: ignore[comparison-overlap]  # changed by the call


async def test_a_back_off_beyond_the_deadline_fails_at_once() -> None:
    inner = ScriptedWaves(WavesRateLimited("429", retry_after=5.0))
    guard = WavesGuard(inner, queue_timeout=1.0)
    with pytest.raises(WavesRateLimited):
        await speak(guard)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(WavesRateLimited, match="backing off"):
        await speak(guard)
    assert loop.time() - started < 0.1  # no dead air spent waiting for a hopeless slot
    assert inner.requests == 1 and guard.shed == 1


async def test_back_off_doubles_while_limited_and_resets_on_success() -> None:
    now = [0.0]
    limited = [WavesRateLimited("429") for _ in range(3)]
    inner = ScriptedWaves(*limited)
    guard = WavesGuard(inner, queue_timeout=100, clock=lambda: now[0])
    blocked = []
    for _ in range(3):
        with pytest.raises(WavesRateLimited):
            await speak(guard)
        blocked.append(guard._blocked_until - now[0])
        now[0] += 100  # past the back-off without waiting for it
    assert blocked == [0.5, 1.0, 2.0]
    assert await speak(guard) == AUDIO
    inner.script = [WavesRateLimited("429")]
    with pytest.raises(WavesRateLimited):
        await speak(guard)
    assert guard._blocked_until - now[0] == 0.5


async def test_the_speech_deadline_bounds_the_wait() -> None:
    inner = ScriptedWaves(WavesRateLimited("429", retry_after=0.6))
    guard = WavesGuard(inner, queue_timeout=5.0)
    with pytest.raises(WavesRateLimited):
        await speak(guard)

    async def with_deadline() -> bytes:
        speech_deadline.set(time.monotonic() + 0.2)
        return await speak(guard)

    with pytest.raises(WavesRateLimited):
        await asyncio.create_task(with_deadline())
    assert inner.requests == 1


async def test_in_flight_cap_queues_in_order_and_times_out() -> None:
    hold = asyncio.Event()
    inner = ScriptedWaves(hold=hold)
    guard = WavesGuard(inner, max_in_flight=2, queue_timeout=0.3)
    first = [asyncio.create_task(speak(guard)) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert guard.in_flight == 2
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(WavesRateLimited, match="no Waves slot"):
        await speak(guard)
    assert 0.25 <= loop.time() - started < 0.6
    queued = asyncio.create_task(speak(guard))
    await asyncio.sleep(0.01)
    hold.set()
    assert await asyncio.gather(*first, queued) == [AUDIO] * 3
    assert inner.most_running == 2 and guard.in_flight == 0


async def test_a_cancelled_waiter_gives_its_place_up() -> None:
    hold = asyncio.Event()
    inner = ScriptedWaves(hold=hold)
    guard = WavesGuard(inner, max_in_flight=1, queue_timeout=5)
    running = asyncio.create_task(speak(guard))
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(speak(guard))
    after = asyncio.create_task(speak(guard))
    await asyncio.sleep(0.01)
    waiter.cancel()
    hold.set()
    assert await running == AUDIO and await after == AUDIO
    assert guard.in_flight == 0


async def test_other_errors_leave_the_state_alone() -> None:
    inner = ScriptedWaves(WavesServerError("boom"))
    guard = WavesGuard(inner)
    with pytest.raises(WavesServerError):
        await speak(guard)
    assert guard.state == "ok" and guard.in_flight == 0
    assert await speak(guard) == AUDIO


class OneSlotElsewhere:
    """`SharedSlots` of one slot shared with other processes; `reachable` False: as if they
    could not be reached (the guard then counts its own requests)."""

    def __init__(self) -> None:
        self.free = asyncio.Semaphore(1)
        self.reachable = True
        self.given: list[str] = []
        self.returned: list[str] = []

    async def acquire(self, timeout: float) -> str | None:  # noqa: ASYNC109
        if not self.reachable:
            return None
        async with asyncio.timeout(timeout):
            await self.free.acquire()
        token = f"t{len(self.given)}"
        self.given.append(token)
        return token

    def release(self, token: str) -> None:
        self.returned.append(token)
        self.free.release()


async def test_a_shared_cap_gives_each_request_a_slot_and_takes_it_back() -> None:
    hold = asyncio.Event()
    inner = ScriptedWaves(hold=hold)
    slots = OneSlotElsewhere()
    guard = WavesGuard(inner, max_in_flight=1, queue_timeout=0.3, shared=slots)
    first = asyncio.create_task(speak(guard))
    while inner.running == 0:
        await asyncio.sleep(0.01)
    assert guard.in_flight == 1
    with pytest.raises(WavesRateLimited, match="across the cluster"):
        await speak(guard)  # the one slot is held: no slot within the queue timeout
    hold.set()
    assert await first == AUDIO
    assert (slots.given, slots.returned, guard.in_flight, guard.shed) == (["t0"], ["t0"], 0, 1)


async def test_without_the_shared_cap_the_guard_counts_its_own_requests() -> None:
    hold = asyncio.Event()
    inner = ScriptedWaves(hold=hold)
    slots = OneSlotElsewhere()
    slots.reachable = False
    guard = WavesGuard(inner, max_in_flight=1, queue_timeout=0.3, shared=slots)
    first = asyncio.create_task(speak(guard))
    while inner.running == 0:
        await asyncio.sleep(0.01)
    with pytest.raises(WavesRateLimited, match=r"\(1 requests in flight\)"):
        await speak(guard)  # the local cap of 1 still holds
    hold.set()
    assert await first == AUDIO
    assert (slots.given, inner.most_running, guard.in_flight) == ([], 1, 0)
