"""Fixtures of the cluster tests: the session's real redis-server (`tests/servers/redis.py`), a
key prefix per test so tests keep apart on it, and `connect`, which joins a cluster as a process
with a fast heartbeat and closes it after the test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from telebridge.cluster import Cluster
from tests.servers.redis import RedisServer, private_redis, redis_server

__all__ = ["private_redis", "redis_server"]

Connect = Callable[..., Awaitable[Cluster]]


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def connect(redis_server: RedisServer, prefix: str) -> AsyncIterator[Connect]:
    made: list[Cluster] = []

    async def make(
        process_id: str, url: str | None = None, heartbeat: float = 0.2, ttl: float = 1.0
    ) -> Cluster:
        cluster = await Cluster.connect(
            url or redis_server.url,
            process_id=process_id,
            prefix=prefix,
            heartbeat=heartbeat,
            ttl=ttl,
        )
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        await cluster.close()
