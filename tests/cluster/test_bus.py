"""The control bus on a real Redis: a request reaches the process it names and its reply comes
back; a handler's failure, nobody serving and no reply in time are each a clear error."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from telebridge.cluster import Bus, BusError, BusTimeout
from tests.cluster.conftest import Connect


async def test_request_reaches_the_named_process_and_its_reply_comes_back(
    connect: Connect,
) -> None:
    a, b = await connect("a"), await connect("b")
    seen: list[tuple[str, dict[str, Any]]] = []

    async def handler(op: str, body: dict[str, Any]) -> dict[str, Any]:
        seen.append((op, body))
        return {"done": op, "by": a.process_id, "n": body["n"] + 1}

    served, asking = Bus(a), Bus(b)
    await served.serve(handler)
    try:
        replies = await asyncio.gather(
            *(asking.request("a", "hangup", {"n": n}, timeout=5) for n in range(5))
        )
        assert replies == [{"done": "hangup", "by": "a", "n": n + 1} for n in range(5)]
        assert sorted(body["n"] for _, body in seen) == list(range(5))
    finally:
        await served.close()
        await asking.close()


async def test_a_failing_handler_is_a_bus_error_naming_it(connect: Connect) -> None:
    a, b = await connect("a"), await connect("b")

    async def handler(op: str, body: dict[str, Any]) -> dict[str, Any]:
        raise LookupError(f"no call {body['call_id']}")

    served, asking = Bus(a), Bus(b)
    await served.serve(handler)
    try:
        with pytest.raises(BusError, match=r"process a failed 'announce': LookupError: no call c7"):
            await asking.request("a", "announce", {"call_id": "c7"}, timeout=5)
    finally:
        await served.close()
        await asking.close()


async def test_no_reply_in_time_is_a_bus_timeout(connect: Connect) -> None:
    a, b = await connect("a"), await connect("b")
    release = asyncio.Event()

    async def handler(op: str, body: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {}

    served, asking = Bus(a), Bus(b)
    await served.serve(handler)
    try:
        start = time.monotonic()
        with pytest.raises(BusTimeout, match=r"no reply from process a to 'transfer' within 0.3s"):
            await asking.request("a", "transfer", {}, timeout=0.3)
        assert 0.25 < time.monotonic() - start < 3
    finally:
        release.set()
        await served.close()
        await asking.close()


async def test_a_process_nobody_serves_is_a_bus_error_at_once(connect: Connect) -> None:
    asking = Bus(await connect("b"))
    try:
        start = time.monotonic()
        with pytest.raises(BusError, match=r"process gone does not serve the bus"):
            await asking.request("gone", "hangup", {}, timeout=10)
        assert time.monotonic() - start < 2
    finally:
        await asking.close()
