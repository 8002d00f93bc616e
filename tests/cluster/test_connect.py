"""Joining the cluster and losing Redis, on real redis-servers: unreachable at connect is one
clear error; Redis stopped or hung while running makes operations fail fast and `degraded` true,
and everything comes back (calls, slots, the bus) after a restart; no message shows a password."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from telebridge.cluster import Bus, BusError, Cluster, ClusterUnavailable, Registry, Semaphore
from tests.cluster.conftest import Connect
from tests.cluster.support import wait_until
from tests.servers.redis import RedisServer, free_port

PASSWORD = "s3cret-PW-9"


async def test_unreachable_at_connect_is_one_line_and_quick() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    start = time.monotonic()
    with pytest.raises(ClusterUnavailable) as caught:
        await Cluster.connect(url, process_id="a")
    assert time.monotonic() - start < 3
    message = str(caught.value)
    assert message.startswith(f"Redis at {url}: ") and "\n" not in message


async def test_a_url_that_is_not_redis_is_one_line() -> None:
    with pytest.raises(ClusterUnavailable, match=r"is not a Redis URL"):
        await Cluster.connect(f"http://u:{PASSWORD}@127.0.0.1:1/0", process_id="a")


async def test_a_password_never_appears_in_messages(private_redis: RedisServer) -> None:
    with socket.create_connection(("127.0.0.1", private_redis.port)) as s:
        s.sendall(f"CONFIG SET requirepass {PASSWORD}\r\n".encode())
        assert s.recv(16).startswith(b"+OK")
    wrong = f"redis://default:{PASSWORD}x@127.0.0.1:{private_redis.port}/0"
    with pytest.raises(ClusterUnavailable) as caught:
        await Cluster.connect(wrong, process_id="a")
    assert PASSWORD not in str(caught.value) and "***" in str(caught.value)

    unreachable = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    with pytest.raises(ClusterUnavailable) as caught:
        await Cluster.connect(unreachable, process_id="a")
    assert PASSWORD not in str(caught.value)

    right = f"redis://:{PASSWORD}@127.0.0.1:{private_redis.port}/0"
    cluster = await Cluster.connect(right, process_id="a", heartbeat=0.1, ttl=0.5)
    try:
        assert PASSWORD not in cluster.url
        private_redis.stop()
        with pytest.raises(ClusterUnavailable) as caught:
            await Registry(cluster).owner("call-1")
        assert PASSWORD not in str(caught.value)
        assert cluster.reason is not None and PASSWORD not in cluster.reason
    finally:
        await cluster.close()


async def test_redis_stopped_degrades_fast_and_everything_comes_back(
    connect: Connect, private_redis: RedisServer
) -> None:
    a = await connect("a", url=private_redis.url)
    b = await connect("b", url=private_redis.url)
    registry, semaphore = Registry(a), Semaphore(a, "waves", 2)
    assert await registry.claim("call-1", {"carrier": "plivo"})
    await semaphore.acquire(timeout=1)

    async def handler(op: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"op": op}

    served, asking = Bus(a), Bus(b)
    await served.serve(handler)
    assert await asking.request("a", "ping", {}, timeout=5) == {"op": "ping"}
    assert not a.degraded and a.reason is None

    private_redis.stop()
    for operation in (
        lambda: registry.owner("call-1"),
        lambda: registry.claim("call-2", {"carrier": "vonage"}),
        lambda: semaphore.acquire(timeout=10),
        lambda: asking.request("a", "ping", {}, timeout=10),
    ):
        start = time.monotonic()
        with pytest.raises(ClusterUnavailable):
            await operation()
        assert time.monotonic() - start < 2
    assert a.degraded and a.reason is not None
    assert a.reason.startswith(f"Redis at {private_redis.url}: ")

    async def b_degraded() -> bool:
        return b.degraded

    await wait_until(b_degraded, 3, "b's heartbeat noticed")

    private_redis.start()  # empty: no persistence

    async def both_back() -> bool:
        return not a.degraded and not b.degraded

    await wait_until(both_back, 5, "both heartbeats back")

    async def calls_back() -> bool:
        return {c["call_id"] for c in await Registry(b).calls()} == {"call-1", "call-2"}

    await wait_until(calls_back, 5, "a's calls written again, the one claimed while away too")
    assert await semaphore.in_use() == 1

    async def bus_back() -> bool:
        try:
            return await asking.request("a", "ping", {}, timeout=1) == {"op": "ping"}
        except (ClusterUnavailable, BusError):
            return False

    await wait_until(bus_back, 5, "the bus answering again")
    await served.close()
    await asking.close()


async def test_redis_hung_makes_operations_fail_within_a_bound(
    connect: Connect, private_redis: RedisServer
) -> None:
    a = await connect("a", url=private_redis.url)
    registry = Registry(a)
    await registry.claim("call-1", {})
    private_redis.pause()
    try:
        start = time.monotonic()
        with pytest.raises(ClusterUnavailable, match=r"no answer within|Timeout"):
            await registry.owner("call-1")
        assert time.monotonic() - start < 2
        assert a.degraded
    finally:
        private_redis.resume()

    async def back() -> bool:
        return not a.degraded

    await wait_until(back, 5, "the heartbeat back")
    assert await registry.owner("call-1") == "a"


def test_a_ttl_shorter_than_two_heartbeats_is_refused() -> None:
    with pytest.raises(ValueError, match=r"ttl \(1.0s\) must be at least twice the heartbeat"):
        Cluster(None, process_id="a", prefix="p", heartbeat=0.8, ttl=1.0, url="redis://x")  # type: ignore[arg-type]


async def test_processes_are_those_still_heartbeating(connect: Connect) -> None:
    a, b = await connect("a"), await connect("b")
    assert await b.processes() == ["a", "b"]
    await a.close()

    async def only_b() -> bool:
        return await b.processes() == ["b"]

    await wait_until(only_b, 5, "a's liveness key expired")
