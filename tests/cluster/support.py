"""Helpers of the cluster tests: waiting for a condition (never a sleep as an assertion) and a
holder process to kill."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def wait_until(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Poll `condition` until true; the seconds it took. Fails naming `what` after `within` s."""
    start = time.monotonic()
    while not await condition():
        if time.monotonic() - start > within:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def start_holder(
    url: str, prefix: str, call_id: str, semaphore: str
) -> asyncio.subprocess.Process:
    """A real process (`tests/cluster/holder.py`) that joins the cluster as `holder`, claims
    `call_id`, takes a slot of `semaphore` and then only heartbeats; returns once it said ready."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.cluster.holder",
        url,
        prefix,
        call_id,
        semaphore,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(20):
        line = await process.stdout.readline()
    assert line.strip() == b"ready", line
    return process
