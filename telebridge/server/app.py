"""The ASGI app of one bridge: the ops routes, every carrier's routes and the call API, and the
lifespan that joins the cluster (server/cluster_link.py, with TELEBRIDGE_REDIS_URL) and assembles
what calls speak with (server/speech.py), the flows' HTTP client and the call log."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from telebridge.api.auth import ApiKeys, RateLimiter
from telebridge.api.idempotency import SharedAnswers
from telebridge.api.routes import api_routes
from telebridge.calllog import CallLog
from telebridge.carriers import browser_http, plivo_http, vonage_http
from telebridge.console import ConsoleGate, LiveFeed, console_routes
from telebridge.flows.fetch import webhook_client
from telebridge.server.bridge import Bridge
from telebridge.server.desk import BridgeDesk
from telebridge.server.ops import ops_routes
from telebridge.server.speech import assemble_speech
from telebridge.settings import ConfigError, Settings

if TYPE_CHECKING:
    from telebridge.server.cluster_link import ClusterLink

logger = logging.getLogger(__name__)

NO_REDIS = (
    "TELEBRIDGE_REDIS_URL is set but redis-py is not installed: pip install 'telebridge[cluster]'"
)


def create_app(bridge: Bridge) -> Starlette:
    """The ASGI app for `bridge`, with the routes of every enabled carrier."""
    settings = bridge.settings
    routes: list[BaseRoute] = ops_routes(bridge)
    routes += plivo_http.routes(bridge)
    routes += vonage_http.routes(bridge)
    desk = BridgeDesk(bridge)
    answers: list[SharedAnswers] = []  # the cluster's, once joined

    def shared_answers() -> SharedAnswers | None:
        return answers[0] if answers and bridge.cluster is not None else None

    routes += _call_api(desk, settings, shared_answers)
    feed = LiveFeed()
    bridge.observers.append(feed)
    gate = ConsoleGate(settings, bridge.keys)
    routes += browser_http.routes(bridge, gate.check)
    routes += console_routes(bridge, desk, gate, feed)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if settings.telebridge_redis_url is not None and bridge.cluster is None:
                answers[:] = [await _join_cluster(bridge, desk, stack)]
            await assemble_speech(bridge, settings, stack)
            bridge.http = await stack.enter_async_context(webhook_client())
            if bridge.calllog is None:
                calllog = CallLog.from_settings(settings)
                bridge.calllog = calllog
                stack.push_async_callback(asyncio.to_thread, calllog.close)
            if bridge.freeze_heap:
                _freeze_heap()
            yield

    return Starlette(routes=routes, lifespan=lifespan)


def _freeze_heap() -> None:
    """Move every object alive now into the collector's permanent generation (`gc.freeze`).

    A full collection walks every tracked object and pauses the event loop, and so every call,
    meanwhile; with 200 calls on one process it took 120-140 ms, 60-70 ms of it in objects made
    at start-up that live as long as the process. Frozen, they are never walked again (they are
    still freed by reference counting). Collected first, so no garbage is frozen with them.
    """
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    took = (time.perf_counter() - started) * 1000
    frozen = gc.get_freeze_count()
    logger.info("froze %d start-up objects out of the garbage collector (%.0f ms)", frozen, took)


async def _join_cluster(
    bridge: Bridge, desk: BridgeDesk, stack: contextlib.AsyncExitStack
) -> SharedAnswers:
    """Join the cluster before anything speaks (the Waves cap is the cluster's) and serve the
    other processes' requests for this one's calls; closed last, after the calls. Returns the
    cluster's memory of the call API's Idempotency-Key answers."""
    try:  # redis-py is the `cluster` extra: imported only by a process that joins a cluster
        from telebridge.cluster import ClusterUnavailable
        from telebridge.server.answers_link import ClusterAnswers
        from telebridge.server.cluster_link import ClusterLink
    except ImportError:
        raise ConfigError(NO_REDIS) from None
    try:
        link = await ClusterLink.connect(bridge.settings)
    except ClusterUnavailable as exc:
        raise ConfigError(str(exc)) from None
    stack.push_async_callback(_leave_cluster, bridge, link)
    bridge.cluster = link
    bridge.observers.append(link.observe)
    await link.serve(desk.answer_remote)
    return ClusterAnswers(link)


async def _leave_cluster(bridge: Bridge, link: ClusterLink) -> None:
    bridge.cluster = None
    bridge.observers.remove(link.observe)
    await link.close()


def _call_api(
    desk: BridgeDesk, settings: Settings, shared: Callable[[], SharedAnswers | None]
) -> list[BaseRoute]:
    secret = settings.telebridge_api_key
    keys = ApiKeys.parse(secret.get_secret_value() if secret else None)
    if keys is None:
        logger.info("the call API (/v1/) is off: set TELEBRIDGE_API_KEY to turn it on")
    else:
        logger.info("the call API (/v1/) is on, with %d key(s)", len(keys))
        if keys.weak:
            logger.warning("TELEBRIDGE_API_KEY: a key is under 16 characters: use long random keys")
    rate = settings.telebridge_api_rate
    limiter = RateLimiter(rate, max(1, round(rate * 2)))
    return api_routes(desk, keys, limiter, shared)
