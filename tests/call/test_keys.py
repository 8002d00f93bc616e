"""Tests for telebridge.call.keys: keys kept in order, and when a key cuts a prompt off."""

from __future__ import annotations

import asyncio

from telebridge.call.keys import KeyBuffer


def test_keys_are_kept_in_order_and_taken_once() -> None:
    keys = KeyBuffer()
    assert not keys.pending
    keys.press("1", prompt_playing=True)
    keys.press("#", prompt_playing=False)
    assert keys.pending
    assert keys.take() == "1#"
    assert keys.take() == ""
    assert not keys.pending


def test_only_the_first_key_of_a_barge_in_prompt_cuts_it_off() -> None:
    keys = KeyBuffer()
    keys.start_prompt(barge_in=True)
    assert keys.press("1", prompt_playing=True) is True
    assert keys.interrupted and not keys.interruptible
    assert keys.press("2", prompt_playing=True) is False
    keys.start_prompt(barge_in=True)  # the next prompt starts uninterrupted
    assert not keys.interrupted and keys.interruptible


def test_no_cut_without_barge_in_or_once_the_prompt_has_played() -> None:
    keys = KeyBuffer()
    keys.start_prompt(barge_in=False)
    assert keys.press("1", prompt_playing=True) is False
    keys.start_prompt(barge_in=True)
    assert keys.press("2", prompt_playing=False) is False
    assert not keys.interrupted


async def test_next_digit_waits_for_a_key_or_times_out() -> None:
    keys = KeyBuffer()
    assert await keys.next_digit(0.05) is None
    keys.press("5", prompt_playing=False)
    keys.press("6", prompt_playing=False)
    assert await keys.next_digit(0.05) == "5"
    waiting = asyncio.create_task(keys.next_digit(1.0))
    assert await waiting == "6"
    waiting = asyncio.create_task(keys.next_digit(1.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    keys.press("7", prompt_playing=False)
    assert await asyncio.wait_for(waiting, 1) == "7"
