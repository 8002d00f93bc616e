"""The cluster's placed calls on a real Redis: a call placed by one process is found by another
by its request id, follows its stream and end wherever they land (even before the placing
process wrote it), and leaves the queued list once it streamed or ended."""

from __future__ import annotations

from telebridge.cluster.placed import SharedPlaced
from tests.cluster.conftest import Connect
from tests.cluster.support import wait_until


def call(attempt: str, state: str = "queued") -> dict[str, str | None]:
    return {"carrier": "plivo", "to": "+15550001", "from": "+15550002", "flow": "hold",
            "attempt": attempt, "placed_at": "2026-12-04T18:00:00.000+00:00", "state": state,
            "call_id": None}  # fmt: skip


async def shared(connect: Connect, name: str) -> SharedPlaced:
    return SharedPlaced(await connect(name), keep=60, queued_for=30)


async def test_a_placed_call_is_found_and_followed_by_every_process(connect: Connect) -> None:
    a, b = await shared(connect, "a"), await shared(connect, "b")
    await a.add("req-1", call("api-1"))
    await a.add("req-2", call("api-2"))
    found = await b.get("req-1")
    assert found == {**call("api-1"), "request_id": "req-1"}
    assert sorted(q["request_id"] for q in await b.queued()) == ["req-1", "req-2"]

    await b.streaming("api-1", "carrier-1")
    found = await a.get("req-1")
    assert found is not None and (found["state"], found["call_id"]) == ("live", "carrier-1")
    assert [q["request_id"] for q in await a.queued()] == ["req-2"]
    assert await a.states(["req-1", "req-2", "req-9"]) == {
        "req-1": "live", "req-2": "queued", "req-9": None}  # fmt: skip

    await a.ended("api-1")  # the end keeps the call id the stream gave
    await b.streaming("api-1", "carrier-other")  # an ended call never comes back
    found = await b.get("req-1")
    assert found is not None and (found["state"], found["call_id"]) == ("ended", "carrier-1")

    await b.ended("api-2", "carrier-2")  # rang out: the callback alone names the call
    found = await a.get("req-2")
    assert found is not None and (found["state"], found["call_id"]) == ("ended", "carrier-2")
    assert await a.queued() == []
    assert await a.get("req-9") is None


async def test_a_stream_that_starts_before_the_record_is_written_is_kept(
    connect: Connect,
) -> None:
    a, b = await shared(connect, "a"), await shared(connect, "b")
    await b.streaming("api-early", "carrier-early")  # the carrier answered before it confirmed
    await a.add("req-early", call("api-early"))
    found = await b.get("req-early")
    assert found is not None and (found["state"], found["call_id"]) == ("live", "carrier-early")
    assert await b.queued() == []


async def test_queued_calls_leave_the_list_after_queued_for(connect: Connect) -> None:
    a = SharedPlaced(await connect("a"), keep=60, queued_for=0.001)
    await a.add("req-old", call("api-old"))

    async def left() -> bool:
        return await a.queued() == []

    await wait_until(left, 2, "req-old left the queued list")
    found = await a.get("req-old")  # still found by its id
    assert found is not None and found["state"] == "queued"
