"""`Idempotency-Key`: a retry with the same key and body gets the first answer and runs the work
once, even while the first is still running; a different body is refused; "try again later"
answers, failures and expired keys let the work run again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from telebridge.api.bodies import ApiError
from telebridge.api.idempotency import MAX_KEY_CHARS, Answer, IdempotencyStore

T = TypeVar("T")
BODY = {"carrier": "plivo", "to": "+14155550123", "from": "+14155550199"}


class FakeClock:
    def __init__(self, now: float = 500.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Work:
    """Counts its runs; each run answers 201 with its run number, or what `answers` says."""

    def __init__(self, *answers: Answer | BaseException) -> None:
        self.runs = 0
        self._answers = list(answers)

    async def __call__(self) -> Answer:
        self.runs += 1
        if self._answers:
            answer = self._answers.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            return answer
        return Answer(201, {"run": self.runs}, {"Location": f"/v1/calls/{self.runs}"})


async def entering(entered: asyncio.Event, run: Awaitable[T]) -> T:
    """`run`, awaited after `entered` is set: `run` then reaches its first wait in the same step."""
    entered.set()
    return await run


async def test_a_replay_gets_the_same_answer_and_runs_no_work() -> None:
    store, work = IdempotencyStore(), Work()
    first, replayed = await store.run("key:0", "k1", BODY, work)
    assert (first, replayed) == (Answer(201, {"run": 1}, {"Location": "/v1/calls/1"}), False)
    # The same body, its fields in another order.
    again, replayed = await store.run("key:0", "k1", dict(reversed(BODY.items())), work)
    assert again is first
    assert replayed is True
    assert work.runs == 1


async def test_keys_are_per_client_and_per_key() -> None:
    store, work = IdempotencyStore(), Work()
    assert (await store.run("key:0", "k1", BODY, work))[0].body == {"run": 1}
    assert (await store.run("key:1", "k1", BODY, work))[0].body == {"run": 2}
    assert (await store.run("key:0", "k2", BODY, work))[0].body == {"run": 3}
    answer, replayed = await store.run("key:1", "k1", BODY, work)
    assert (answer.body, replayed) == ({"run": 2}, True)
    assert work.runs == 3


async def test_concurrent_requests_run_the_work_once() -> None:
    store, started, retried, release = IdempotencyStore(), *(asyncio.Event() for _ in range(3))
    calls = 0

    async def work() -> Answer:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return Answer(201, {"request_uuid": "r-1"}, {})

    async def release_while_both_run() -> None:
        await started.wait()
        await retried.wait()  # the retry now waits on the first's answer
        release.set()

    first, second, _ = await asyncio.gather(
        store.run("key:0", "k", BODY, work),
        entering(retried, store.run("key:0", "k", BODY, work)),
        release_while_both_run(),
    )
    assert calls == 1
    assert first == (Answer(201, {"request_uuid": "r-1"}, {}), False)
    assert second[0] is first[0]
    assert second[1] is True


async def test_a_different_body_with_the_same_key_is_a_422() -> None:
    store, work = IdempotencyStore(), Work()
    await store.run("key:0", "k", BODY, work)
    with pytest.raises(ApiError) as caught:
        await store.run("key:0", "k", {**BODY, "to": "+14155550124"}, work)
    assert caught.value.status == 422
    assert caught.value.message == "Idempotency-Key was already used with a different request"
    assert work.runs == 1


async def test_an_api_error_in_the_work_is_the_answer_replayed() -> None:
    refusal = ApiError(409, "the call is over", headers={"X-Why": "ended"}, call_id="c-1")
    store, work = IdempotencyStore(), Work(refusal)
    expected = Answer(409, {"error": "the call is over", "call_id": "c-1"}, {"X-Why": "ended"})
    assert await store.run("key:0", "k", BODY, work) == (expected, False)
    assert await store.run("key:0", "k", BODY, work) == (expected, True)
    assert work.runs == 1


@pytest.mark.parametrize(
    "busy",
    [
        Answer(503, {"error": "no carrier"}, {"Retry-After": "5"}),
        Answer(429, {"error": "slow down"}, {"Retry-After": "1"}),
        ApiError(503, "the carrier is down", headers={"Retry-After": "5"}),
        ApiError(429, "too many calls"),
    ],
)
async def test_try_again_later_answers_are_not_kept(busy: Answer | ApiError) -> None:
    store, work = IdempotencyStore(), Work(busy)
    answer, replayed = await store.run("key:0", "k", BODY, work)
    assert answer.status == busy.status
    assert replayed is False
    retry, replayed = await store.run("key:0", "k", BODY, work)
    assert (retry.status, retry.body, replayed) == (201, {"run": 2}, False)
    assert work.runs == 2
    assert (await store.run("key:0", "k", BODY, work))[1] is True


async def test_a_failure_keeps_no_answer_and_fails_those_waiting() -> None:
    store, started, retried, release = IdempotencyStore(), *(asyncio.Event() for _ in range(3))

    async def crash() -> Answer:
        started.set()
        await release.wait()
        raise RuntimeError("carrier timed out")

    first = asyncio.create_task(store.run("key:0", "k", BODY, crash))
    await started.wait()
    waiting = asyncio.create_task(entering(retried, store.run("key:0", "k", BODY, crash)))
    await retried.wait()
    release.set()
    with pytest.raises(RuntimeError, match="carrier timed out"):
        await first
    with pytest.raises(ApiError) as caught:
        await waiting
    assert (caught.value.status, caught.value.message) == (
        500, "the first request with this key failed"
    )  # fmt: skip
    work = Work()
    assert (await store.run("key:0", "k", BODY, work))[1] is False
    assert work.runs == 1


async def test_answers_are_forgotten_after_the_ttl() -> None:
    clock = FakeClock()
    store, work = IdempotencyStore(ttl=60.0, clock=clock), Work()
    await store.run("key:0", "k", BODY, work)
    clock.now += 60.0
    assert (await store.run("key:0", "k", BODY, work))[1] is True
    clock.now += 0.001
    answer, replayed = await store.run("key:0", "k", {**BODY, "flow": "other"}, work)
    assert (answer.body, replayed) == ({"run": 2}, False)  # forgotten: no 422 either
    assert work.runs == 2


async def test_the_oldest_keys_are_forgotten_beyond_max_keys() -> None:
    store, work = IdempotencyStore(max_keys=2, clock=FakeClock()), Work()
    for key in ("k1", "k2", "k3"):
        await store.run("key:0", key, BODY, work)
    assert await store.run("key:0", "k1", BODY, work) == (
        Answer(201, {"run": 4}, {"Location": "/v1/calls/4"}), False
    )  # fmt: skip
    assert (await store.run("key:0", "k3", BODY, work))[1] is True
    assert work.runs == 4


async def test_a_running_request_is_never_forgotten_under_its_retry() -> None:
    clock, started, retried, release = FakeClock(), *(asyncio.Event() for _ in range(3))
    store, retry_work = IdempotencyStore(ttl=1.0, clock=clock), Work()

    async def slow() -> Answer:
        started.set()
        await release.wait()
        return Answer(201, {"slow": True}, {})

    first = asyncio.create_task(store.run("key:0", "k", BODY, slow))
    await started.wait()
    clock.now += 10.0  # far past the ttl
    retry = asyncio.create_task(entering(retried, store.run("key:0", "k", BODY, retry_work)))
    await retried.wait()
    release.set()
    assert await first == (Answer(201, {"slow": True}, {}), False)
    assert await retry == (Answer(201, {"slow": True}, {}), True)
    assert retry_work.runs == 0


@pytest.mark.parametrize("key", ["", "k" * 256, "clé", "a\x00b", "a\nb", "\t", "a\x7f", "\u2028"])
def test_bad_keys_are_a_400(key: str) -> None:
    with pytest.raises(ApiError) as caught:
        IdempotencyStore.check_key(key)
    assert (caught.value.status, caught.value.message) == (
        400, f"Idempotency-Key: 1 to {MAX_KEY_CHARS} printable ASCII characters"
    )  # fmt: skip


@pytest.mark.parametrize("key", ["k", "k" * MAX_KEY_CHARS, "a b", "8f14e45f-ceea-467f-a0e6-5d4a"])
def test_good_keys_pass(key: str) -> None:
    IdempotencyStore.check_key(key)
