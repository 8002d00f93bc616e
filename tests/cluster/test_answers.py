"""Idempotency answers on a real Redis: one claim wins, the others see its answer, a different
request is told apart, a dropped claim can be taken again, and a waiter learns of a failure."""

from __future__ import annotations

import asyncio

import pytest

from telebridge.cluster.answers import Answers
from tests.cluster.conftest import Connect

ANSWER = {"status": 201, "body": {"call_id": "r-1"}, "headers": {}}


async def test_one_claim_wins_and_the_others_see_its_answer(connect: Connect) -> None:
    a, b = Answers(await connect("a")), Answers(await connect("b"))
    assert (await a.claim("key:0", "k1", "fp")).mine
    waiting = asyncio.create_task(b.claim("key:0", "k1", "fp"))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # the first request still runs: b waits for its answer
    await a.settle("key:0", "k1", "fp", ANSWER)
    found = await asyncio.wait_for(waiting, 5)
    assert (found.mine, found.fingerprint, found.answer) == (False, "fp", ANSWER)
    # Another client's key of the same name is its own.
    assert (await b.claim("key:1", "k1", "fp")).mine


async def test_another_request_under_the_key_is_told_apart(connect: Connect) -> None:
    a, b = Answers(await connect("a")), Answers(await connect("b"))
    assert (await a.claim("key:0", "k1", "fp-a")).mine
    found = await b.claim("key:0", "k1", "fp-b")  # at once, running or not
    assert (found.mine, found.fingerprint, found.answer) == (False, "fp-a", None)


async def test_a_dropped_claim_is_taken_again(connect: Connect) -> None:
    a, b = Answers(await connect("a")), Answers(await connect("b"))
    assert (await a.claim("key:0", "k1", "fp")).mine
    await b.drop("key:0", "k1")  # not b's: nothing happens
    assert not (await b.claim("key:0", "k1", "other")).mine
    await a.drop("key:0", "k1")
    assert (await b.claim("key:0", "k1", "fp")).mine


async def test_a_waiter_learns_the_first_request_failed(connect: Connect) -> None:
    a, b = Answers(await connect("a")), Answers(await connect("b"))
    assert (await a.claim("key:0", "k1", "fp")).mine
    waiting = asyncio.create_task(b.claim("key:0", "k1", "fp"))
    await asyncio.sleep(0.2)
    await a.drop("key:0", "k1")
    with pytest.raises(LookupError):
        await asyncio.wait_for(waiting, 5)


async def test_a_claim_left_by_a_dead_process_ends_with_its_lease(connect: Connect) -> None:
    a = Answers(await connect("a"), lease=2.0)
    b = Answers(await connect("b"), lease=2.0)
    assert (await a.claim("key:0", "k1", "fp")).mine  # and a dies: no answer, no drop
    with pytest.raises(TimeoutError):  # most of the lease, then: still running
        await b.claim("key:0", "k1", "fp")
    await asyncio.sleep(0.6)
    assert (await b.claim("key:0", "k1", "fp")).mine  # the lease is over: b runs it
