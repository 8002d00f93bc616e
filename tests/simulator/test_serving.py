"""`ServedApp`: a failed start-up gives its socket back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette

from telebridge.simulator.serving import ServedApp


@contextlib.asynccontextmanager
async def failing_lifespan(app: Starlette) -> AsyncIterator[None]:
    raise RuntimeError("the lifespan refused to start")
    yield  # pragma: no cover


async def test_a_failed_start_closes_the_socket() -> None:
    served = ServedApp(Starlette(lifespan=failing_lifespan))
    with pytest.raises(RuntimeError, match="did not start"):
        await served.start()
    assert served.sock.fileno() == -1
    await served.stop()  # nothing left to stop: harmless


async def test_a_started_app_serves_and_stops() -> None:
    served = ServedApp(Starlette())
    await served.start()
    assert served.sock.fileno() != -1
    await served.stop()
    assert served.sock.fileno() == -1
