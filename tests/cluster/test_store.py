"""The shared byte store on a real Redis: what one process puts another gets, and the total
size stays bounded by evicting the least recently used."""

from __future__ import annotations

from telebridge.cluster import Store
from tests.cluster.conftest import Connect


async def test_what_one_process_puts_another_gets(connect: Connect) -> None:
    a, b = (
        Store(await connect("a"), "prompts", 10_000),
        Store(await connect("b"), "prompts", 10_000),
    )
    audio = bytes(range(256)) * 4
    assert await a.put("welcome/plivo", audio)
    assert await b.get("welcome/plivo") == audio
    assert await b.get("missing") is None
    assert await a.put("welcome/plivo", b"shorter")
    assert await b.get("welcome/plivo") == b"shorter"
    assert await b.size() == len(b"shorter")


async def test_the_size_stays_bounded_and_the_least_recently_used_go(connect: Connect) -> None:
    a, b = Store(await connect("a"), "prompts", 1000), Store(await connect("b"), "prompts", 1000)
    for n in range(3):
        assert await (a, b)[n % 2].put(f"k{n}", bytes([n]) * 300)
    assert await a.size() == 900
    assert await b.get("k0") == bytes([0]) * 300  # k0 is now the most recently used
    assert await a.put("k3", bytes([3]) * 300)
    assert await a.size() == 900
    assert await b.get("k1") is None  # the least recently used went
    assert [await a.get(k) is not None for k in ("k0", "k2", "k3")] == [True, True, True]

    for n in range(4, 20):
        assert await b.put(f"k{n}", bytes([n]) * (100 + 37 * n))
        assert await a.size() <= 1000
    assert await a.get("k19") == bytes([19]) * (100 + 37 * 19)


async def test_data_larger_than_the_bound_is_refused_and_evicts_nothing(connect: Connect) -> None:
    store = Store(await connect("a"), "prompts", 1000)
    assert await store.put("small", b"x" * 500)
    assert not await store.put("huge", b"y" * 1001)
    assert await store.get("huge") is None
    assert await store.get("small") == b"x" * 500
    assert await store.size() == 500
