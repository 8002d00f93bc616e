"""The call registry on a real Redis: processes see each other's calls, and a process that stops
heartbeating (closed without releasing, or killed with SIGKILL) loses its calls after the ttl."""

from __future__ import annotations

import asyncio
import signal
import time

from telebridge.cluster import Registry, Semaphore
from tests.cluster.conftest import Connect
from tests.cluster.support import start_holder, wait_until
from tests.servers.redis import RedisServer


async def test_two_processes_see_each_others_calls(connect: Connect) -> None:
    a, b = Registry(await connect("a")), Registry(await connect("b"))
    assert await a.claim("call-1", {"carrier": "plivo", "to": "+15550001"})
    assert await b.claim("call-2", {"carrier": "vonage"})

    for registry in (a, b):
        calls = sorted(await registry.calls(), key=lambda c: c["call_id"])
        assert calls == [
            {"call_id": "call-1", "process_id": "a", "carrier": "plivo", "to": "+15550001"},
            {"call_id": "call-2", "process_id": "b", "carrier": "vonage"},
        ]
    assert await b.owner("call-1") == "a"
    assert await a.owner("call-2") == "b"
    assert await a.owner("call-3") is None

    await a.update("call-1", state="streaming", seconds=1.5)
    (seen,) = [c for c in await b.calls() if c["call_id"] == "call-1"]
    assert seen["state"] == "streaming" and seen["seconds"] == 1.5 and seen["carrier"] == "plivo"

    await a.release("call-1")
    assert await b.owner("call-1") is None
    assert [c["call_id"] for c in await b.calls()] == ["call-2"]


async def test_a_call_held_elsewhere_cannot_be_claimed(connect: Connect) -> None:
    a, b = Registry(await connect("a")), Registry(await connect("b"))
    assert await a.claim("call-1", {})
    assert not await b.claim("call-1", {"stolen": True})
    assert await b.owner("call-1") == "a"
    await b.release("call-1")  # not b's: nothing happens
    assert await a.owner("call-1") == "a"


async def test_entries_outlive_the_ttl_while_heartbeating(connect: Connect) -> None:
    registry = Registry(await connect("a", heartbeat=0.1, ttl=0.5))
    await registry.claim("call-1", {})
    # Watched over three ttls: the heartbeat keeps it every time.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert await registry.owner("call-1") == "a"
        assert [c["call_id"] for c in await registry.calls()] == ["call-1"]
        await asyncio.sleep(0.05)


async def test_a_closed_process_loses_its_calls_after_the_ttl(connect: Connect) -> None:
    a = await connect("a", ttl=2.0)
    b = Registry(await connect("b"))
    await Registry(a).claim("call-1", {"carrier": "plivo"})
    await a.close()
    assert await b.owner("call-1") == "a"  # not released: it stays until the ttl runs out
    took = await wait_until(lambda: _gone(b, "call-1"), 5, "call-1 expired")
    assert took > 0.5
    assert await b.calls() == []


async def _gone(registry: Registry, call_id: str) -> bool:
    return await registry.owner(call_id) is None


async def test_a_killed_process_loses_its_calls_and_slots(
    connect: Connect, redis_server: RedisServer, prefix: str
) -> None:
    b = await connect("b")
    registry, semaphore = Registry(b), Semaphore(b, "waves", 1)
    holder = await start_holder(redis_server.url, prefix, "call-9", "waves")
    try:
        assert await registry.owner("call-9") == "holder"
        assert await semaphore.in_use() == 1
        assert [c["process_id"] for c in await registry.calls()] == ["holder"]
    finally:
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
    await wait_until(lambda: _gone(registry, "call-9"), 5, "call-9 expired")
    token = await semaphore.acquire(timeout=5)
    assert await semaphore.in_use() == 1
    await semaphore.release(token)
