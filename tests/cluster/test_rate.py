"""The cluster rate on a real Redis: two processes asking at once together keep to one rate
(counted over a window, with loose bounds), and the first `burst` go at once."""

from __future__ import annotations

import asyncio
import time

from telebridge.cluster import Rate
from tests.cluster.conftest import Connect


async def test_two_processes_share_one_rate(connect: Connect) -> None:
    a, b = await connect("a"), await connect("b")
    rates = [Rate(c, "campaign", per_second=20, burst=2) for c in (a, b)]
    passed: list[tuple[float, int]] = []
    stop = time.monotonic() + 1.5

    async def caller(n: int) -> None:
        while time.monotonic() < stop:
            await rates[n % 2].wait()
            passed.append((time.monotonic(), n % 2))

    await asyncio.gather(*(caller(n) for n in range(6)))
    times = sorted(t for t, _ in passed)
    span = times[-1] - times[0]
    # GCRA: over any span at most burst + span * rate; a process alone would do 3x20/s here.
    assert len(times) <= 2 + span * 20 + 2
    assert len(times) >= 0.6 * span * 20
    assert {who for _, who in passed} == {0, 1}


async def test_the_burst_goes_at_once_then_the_rate_holds(connect: Connect) -> None:
    rate = Rate(await connect("a"), "campaign", per_second=5, burst=3)
    start = time.monotonic()
    for _ in range(3):
        await rate.wait()
    burst_took = time.monotonic() - start
    await rate.wait()
    await rate.wait()
    after = time.monotonic() - start
    assert burst_took < 0.3  # no waiting for the burst (5/s would need 0.4s for three)
    assert after >= 0.3  # the fourth and fifth waited about 0.2s each
