"""The cluster semaphore on a real Redis: never more holders than its limit across processes,
waiters served in arrival order, timeouts that leave the queue, and a dead holder's slot freed
after the ttl."""

from __future__ import annotations

import asyncio
import time

import pytest

from telebridge.cluster import Semaphore, SemaphoreTimeout
from tests.cluster.conftest import Connect
from tests.cluster.support import wait_until


async def test_never_more_holders_than_the_limit_across_two_processes(connect: Connect) -> None:
    a, b = await connect("a"), await connect("b")
    semaphores = [Semaphore(a, "waves", 3), Semaphore(b, "waves", 3)]
    holding = 0
    most = 0
    in_use_seen: list[int] = []

    async def worker(n: int) -> None:
        nonlocal holding, most
        semaphore = semaphores[n % 2]
        for _ in range(3):
            async with semaphore.slot(timeout=20):
                holding += 1
                most = max(most, holding)
                in_use_seen.append(await semaphore.in_use())
                await asyncio.sleep(0.02)
                holding -= 1

    await asyncio.gather(*(worker(n) for n in range(10)))
    assert most == 3  # the cap is reached (so the test could see it broken) and never passed
    assert max(in_use_seen) <= 3
    assert await semaphores[0].in_use() == 0
    assert await semaphores[1].queued() == 0


async def test_waiters_are_served_in_arrival_order(connect: Connect) -> None:
    a, b = await connect("a"), await connect("b")
    semaphores = [Semaphore(a, "waves", 1), Semaphore(b, "waves", 1)]
    first = await semaphores[0].acquire(timeout=1)
    served: list[int] = []

    async def waiter(n: int) -> None:
        semaphore = semaphores[n % 2]
        token = await semaphore.acquire(timeout=20)
        served.append(n)
        await semaphore.release(token)

    tasks = []
    for n in range(6):
        tasks.append(asyncio.create_task(waiter(n)))

        async def queued(count: int = n + 1) -> bool:
            return await semaphores[0].queued() == count

        await wait_until(queued, 5, f"waiter {n} queued")
    await semaphores[0].release(first)
    await asyncio.gather(*tasks)
    assert served == list(range(6))


async def test_a_timeout_says_which_cap_and_leaves_the_queue(connect: Connect) -> None:
    semaphore = Semaphore(await connect("a"), "waves", 1)
    token = await semaphore.acquire(timeout=1)
    start = time.monotonic()
    with pytest.raises(SemaphoreTimeout, match=r"no slot of 'waves' \(limit 1\) free within 0.2s"):
        await semaphore.acquire(timeout=0.2)
    assert time.monotonic() - start < 2

    async def empty() -> bool:
        return await semaphore.queued() == 0

    await wait_until(empty, 2, "the queue empty again")
    await semaphore.release(token)
    await semaphore.release(await semaphore.acquire(timeout=5))


async def test_a_cancelled_waiter_leaves_the_queue(connect: Connect) -> None:
    semaphore = Semaphore(await connect("a"), "waves", 1)
    token = await semaphore.acquire(timeout=1)
    waiting = asyncio.create_task(semaphore.acquire(timeout=20))

    async def queued() -> bool:
        return await semaphore.queued() == 1

    await wait_until(queued, 5, "the waiter queued")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    async def empty() -> bool:
        return await semaphore.queued() == 0

    await wait_until(empty, 2, "the queue empty again")
    await semaphore.release(token)


async def test_a_closed_holders_slot_frees_after_the_ttl(connect: Connect) -> None:
    a, b = await connect("a"), await connect("b")
    await Semaphore(a, "waves", 1).acquire(timeout=1)
    await a.close()  # no release: only the lease's expiry frees the slot
    other = Semaphore(b, "waves", 1)
    with pytest.raises(SemaphoreTimeout):
        await other.acquire(timeout=0.1)
    token = await other.acquire(timeout=5)
    assert await other.in_use() == 1
    await other.release(token)
    assert await other.in_use() == 0


async def test_a_held_slot_outlives_the_ttl_while_heartbeating(connect: Connect) -> None:
    a, b = await connect("a", heartbeat=0.1, ttl=0.5), await connect("b")
    token = await Semaphore(a, "waves", 1).acquire(timeout=1)
    other = Semaphore(b, "waves", 1)
    with pytest.raises(SemaphoreTimeout):
        await other.acquire(timeout=1.5)  # three ttls
    await Semaphore(a, "waves", 1).release(token)
    await other.release(await other.acquire(timeout=5))


async def test_a_slot_given_back_wakes_this_process_waiters_at_once(connect: Connect) -> None:
    sem = Semaphore(await connect("a"), "waves", 1)
    sem._poll = 30.0  # no polling within the test: only the wake-up can serve the waiter
    token = await sem.acquire(1)
    waiter = asyncio.create_task(sem.acquire(60))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await sem.release(token)
    await sem.release(await asyncio.wait_for(waiter, 5))
