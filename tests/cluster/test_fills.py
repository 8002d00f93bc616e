"""Fills on a real Redis: one maker per key, its entries followed in order from the first to its
end, an `error` or a claim gone without an end is `FillLost`, a maker whose claim was taken over
adds nothing more, and a fill cannot grow past its bound."""

from __future__ import annotations

import asyncio

import pytest

from telebridge.cluster.fills import Fill, FillLost, Fills
from tests.cluster.conftest import Connect


async def entries(fills: Fills, key: str, fill_id: str) -> list[tuple[str, bytes]]:
    return [entry async for entry in fills.follow(key, fill_id, timeout=5)]


async def test_one_maker_per_key_and_its_entries_are_followed_in_order(connect: Connect) -> None:
    a, b = Fills(await connect("a"), "p"), Fills(await connect("b"), "p")
    mine = await a.claim("k")
    assert isinstance(mine, Fill)
    assert await b.claim("k") == mine.fill_id  # b is told whom to follow
    assert isinstance(await b.claim("other"), Fill)  # another key is free
    assert await mine.add([("chunk", b"1"), ("wait", b"0.5")])
    follower = asyncio.create_task(entries(b, "k", mine.fill_id))
    assert await mine.add([("chunk", b"\x00\xff")])
    assert await mine.close()
    assert await follower == [("chunk", b"1"), ("wait", b"0.5"), ("chunk", b"\x00\xff")]
    assert isinstance(await b.claim("k"), Fill)  # the end freed the key
    assert not await mine.add([("chunk", b"late")])


async def test_an_error_entry_is_fill_lost(connect: Connect) -> None:
    a, b = Fills(await connect("a"), "p"), Fills(await connect("b"), "p")
    mine = await a.claim("k")
    assert isinstance(mine, Fill)
    await mine.add([("chunk", b"1")])
    await mine.close("error", b"waves failed")
    with pytest.raises(FillLost, match="waves failed"):
        await entries(b, "k", mine.fill_id)


async def test_a_claim_gone_without_an_end_is_fill_lost_and_the_old_maker_is_shut_out(
    connect: Connect,
) -> None:
    a = Fills(await connect("a"), "p", claim_ttl=0.3, stream_ttl=5)
    b = Fills(await connect("b"), "p", claim_ttl=0.3, stream_ttl=5)
    old = await a.claim("k")
    assert isinstance(old, Fill)
    assert await old.add([("chunk", b"1")])
    # The maker stops renewing (it died): its claim expires, and the follower gives up.
    with pytest.raises(FillLost, match="without its end"):
        await entries(b, "k", old.fill_id)
    new = await b.claim("k")
    assert isinstance(new, Fill)
    assert not await old.add([("chunk", b"2")])  # taken over: nothing of the old one is added
    assert await new.add([("chunk", b"3")]) and await new.close()
    assert await entries(a, "k", new.fill_id) == [("chunk", b"3")]


async def test_a_fill_cannot_grow_past_its_bound(connect: Connect) -> None:
    a = Fills(await connect("a"), "p", max_entries=3)
    mine = await a.claim("k")
    assert isinstance(mine, Fill)
    assert await mine.add([("chunk", b"1"), ("chunk", b"2")])
    assert not await mine.add([("chunk", b"3")])
    assert mine.closed
    with pytest.raises(FillLost, match="too many"):
        await entries(a, "k", mine.fill_id)
    full = await a.claim("full")  # as many as fit, and its end
    assert isinstance(full, Fill)
    assert await full.add([("chunk", b"1"), ("chunk", b"2")]) and await full.close()
    assert await entries(a, "full", full.fill_id) == [("chunk", b"1"), ("chunk", b"2")]


async def test_a_follower_gives_up_after_its_timeout(connect: Connect) -> None:
    a = Fills(await connect("a"), "p")
    mine = await a.claim("k")
    assert isinstance(mine, Fill)

    async def renewing() -> None:
        while True:
            await mine.renew()
            await asyncio.sleep(0.1)

    renewer = asyncio.create_task(renewing())
    try:
        with pytest.raises(FillLost, match="did not end within"):
            _ = [e async for e in a.follow("k", mine.fill_id, timeout=0.5)]
    finally:
        renewer.cancel()
