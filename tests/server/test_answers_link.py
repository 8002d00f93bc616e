"""`Idempotency-Key` across the cluster: two processes' call-API stores over one real Redis run a
request once whichever process each try reaches; when Redis is lost each process goes on alone."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from telebridge.api.bodies import ApiError
from telebridge.api.idempotency import Answer, IdempotencyStore
from telebridge.cluster import Cluster
from telebridge.server.answers_link import ClusterAnswers
from telebridge.server.cluster_link import ClusterLink
from tests.servers.redis import RedisServer, private_redis, redis_server

__all__ = ["private_redis", "redis_server"]

BODY = {"carrier": "plivo", "to": "+14155550123", "from": "+14155550199"}
Stores = Callable[..., Awaitable[tuple[IdempotencyStore, IdempotencyStore]]]


class Work:
    """Counts its runs, across both stores; waits for `go` when given one."""

    def __init__(self, go: asyncio.Event | None = None) -> None:
        self.runs = 0
        self.go = go

    async def __call__(self) -> Answer:
        self.runs += 1
        if self.go is not None:
            await self.go.wait()
        return Answer(201, {"call_id": f"r-{self.runs}"}, {})


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[Stores]:
    made: list[Cluster] = []
    prefix = f"t{uuid.uuid4().hex[:12]}"

    async def make(
        url: str | None = None, lease: float = 60.0
    ) -> tuple[IdempotencyStore, IdempotencyStore]:
        pair = []
        for name in ("a", "b"):
            cluster = await Cluster.connect(
                url or redis_server.url, process_id=name, prefix=prefix, heartbeat=0.2, ttl=1.0
            )
            made.append(cluster)
            shared = ClusterAnswers(ClusterLink(cluster), lease=lease)
            pair.append(IdempotencyStore(shared=lambda s=shared: s))  # type: ignore[misc]
        return pair[0], pair[1]

    yield make
    for cluster in made:
        await cluster.close()


async def test_a_retry_on_another_process_is_answered_the_same(stores: Stores) -> None:
    a, b = await stores()
    work = Work()
    first, replayed = await a.run("key:0", "k1", BODY, work)
    assert (first.status, replayed) == (201, False)
    again, replayed = await b.run("key:0", "k1", dict(reversed(BODY.items())), work)
    assert (again, replayed) == (first, True)
    assert work.runs == 1


async def test_a_retry_while_the_first_runs_elsewhere_waits_for_it(stores: Stores) -> None:
    a, b = await stores()
    work = Work(asyncio.Event())
    first = asyncio.create_task(a.run("key:0", "k1", BODY, work))
    await asyncio.sleep(0.1)
    retry = asyncio.create_task(b.run("key:0", "k1", BODY, work))
    await asyncio.sleep(0.2)
    assert not retry.done()
    assert work.go is not None
    work.go.set()
    (one, _), (two, replayed) = await asyncio.wait_for(asyncio.gather(first, retry), 5)
    assert (two, replayed, work.runs) == (one, True, 1)


async def test_the_key_with_another_body_elsewhere_is_a_422(stores: Stores) -> None:
    a, b = await stores()
    await a.run("key:0", "k1", BODY, Work())
    with pytest.raises(ApiError) as refused:
        await b.run("key:0", "k1", {**BODY, "to": "+14155550124"}, Work())
    assert refused.value.status == 422


async def test_try_again_later_elsewhere_lets_the_retry_run(stores: Stores) -> None:
    a, b = await stores()

    async def busy() -> Answer:
        return Answer(429, {"error": "slow down"}, {"Retry-After": "1"})

    assert (await a.run("key:0", "k1", BODY, busy))[0].status == 429
    work = Work()
    answer, replayed = await b.run("key:0", "k1", BODY, work)
    assert (answer.status, replayed, work.runs) == (201, False, 1)


async def test_a_failure_elsewhere_fails_the_waiting_retry(stores: Stores) -> None:
    a, b = await stores()
    go = asyncio.Event()

    async def breaks() -> Answer:
        await go.wait()
        raise RuntimeError("the carrier's REST API broke the connection")

    first = asyncio.create_task(a.run("key:0", "k1", BODY, breaks))
    await asyncio.sleep(0.1)
    retry = asyncio.create_task(b.run("key:0", "k1", BODY, Work()))
    await asyncio.sleep(0.2)
    go.set()
    with pytest.raises(RuntimeError):
        await first
    with pytest.raises(ApiError) as failed:
        await asyncio.wait_for(retry, 5)
    assert failed.value.status == 500
    work = Work()
    assert (await b.run("key:0", "k1", BODY, work))[0].status == 201  # a later retry runs
    assert work.runs == 1


async def test_a_request_running_past_the_lease_elsewhere_is_a_409(stores: Stores) -> None:
    a, b = await stores(lease=2.0)
    stuck = asyncio.create_task(a.run("key:0", "k1", BODY, Work(asyncio.Event())))
    await asyncio.sleep(0.1)
    with pytest.raises(ApiError) as running:
        await b.run("key:0", "k1", BODY, Work())
    assert running.value.status == 409
    stuck.cancel()  # and wait for it to give its key up, before the fixture disconnects
    with contextlib.suppress(asyncio.CancelledError):
        await stuck


async def test_without_redis_each_process_goes_on_alone(
    stores: Stores, private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await stores(url=private_redis.url)
    private_redis.stop()
    work = Work()
    assert (await a.run("key:0", "k1", BODY, work))[1] is False
    assert (await b.run("key:0", "k1", BODY, work))[1] is False  # b cannot know of a's answer
    assert (await a.run("key:0", "k1", BODY, work))[1] is True  # a still knows its own
    assert work.runs == 2
    assert "cluster unavailable" in caplog.text
