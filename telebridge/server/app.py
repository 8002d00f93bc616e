"""The ASGI app of one bridge: the ops routes and every carrier's routes, and the lifespan that
assembles what calls speak with (Waves or the embedded stand-in, the guard, the prompt cache), the
flows' HTTP client and the call log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from telebridge.api.auth import ApiKeys, RateLimiter
from telebridge.api.routes import api_routes
from telebridge.calllog import CallLog
from telebridge.carriers import plivo_http, vonage_http
from telebridge.server.bridge import Bridge
from telebridge.server.desk import BridgeDesk
from telebridge.server.ops import ops_routes
from telebridge.settings import Settings
from telebridge.tts import WavesClient
from telebridge.tts.cache import PromptCache
from telebridge.tts.errors import TTSError
from telebridge.tts.guard import WavesGuard
from telebridge.tts.standin import StandinServer

logger = logging.getLogger(__name__)


def create_app(bridge: Bridge) -> Starlette:
    """The ASGI app for `bridge`, with the routes of every enabled carrier."""
    settings = bridge.settings
    routes: list[BaseRoute] = ops_routes(bridge)
    routes += plivo_http.routes(bridge)
    routes += vonage_http.routes(bridge)
    routes += _call_api(bridge, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            await _assemble_speech(bridge, settings, stack)
            bridge.http = await stack.enter_async_context(httpx.AsyncClient())
            if bridge.calllog is None:
                calllog = CallLog.from_settings(settings)
                bridge.calllog = calllog
                stack.push_async_callback(asyncio.to_thread, calllog.close)
            yield

    return Starlette(routes=routes, lifespan=lifespan)


def _call_api(bridge: Bridge, settings: Settings) -> list[BaseRoute]:
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
    return api_routes(BridgeDesk(bridge), keys, limiter)


async def _assemble_speech(
    bridge: Bridge, settings: Settings, stack: contextlib.AsyncExitStack
) -> None:
    """`bridge.tts`: Waves (or the stand-in without a key) behind the guard and the prompt cache."""
    if bridge.tts is not None:
        pass  # given by the embedding program (tests, benchmarks)
    elif settings.waves_api_key is None:
        standin = StandinServer(api_key="sk_" + secrets.token_hex(16))
        await standin.start()
        stack.push_async_callback(standin.stop)
        logger.warning(
            "WAVES_API_KEY is not set: speaking with the embedded offline synthesizer "
            "(espeak-ng), not Waves"
        )
        bridge.tts = await stack.enter_async_context(
            WavesClient(
                standin.url,
                standin.api_key,
                first_chunk_timeout=settings.waves_first_chunk_timeout,
            )
        )
    else:
        bridge.tts = await stack.enter_async_context(
            WavesClient(
                settings.waves_url,
                settings.waves_api_key.get_secret_value(),
                first_chunk_timeout=settings.waves_first_chunk_timeout,
            )
        )
        logger.info("speaking with Waves at %s", settings.waves_url)
    if bridge.tts is not None and not isinstance(bridge.tts, WavesGuard | PromptCache):
        client = bridge.tts
        bridge.guard = bridge.tts = WavesGuard(
            client,
            max_in_flight=settings.waves_max_in_flight,
            queue_timeout=settings.waves_queue_timeout,
        )
        bridge.metrics.watch_guard(bridge.guard)
        if isinstance(client, WavesClient):
            try:
                await client.prewarm(2)  # no call pays a TLS handshake on its first prompt
            except TTSError as exc:
                bridge.guard.observe_failure(exc)  # a refused key is said loudly, at once
                if bridge.guard.state == "ok":
                    logger.warning("could not pre-connect to Waves: %s", exc)
    cache_dir = settings.telebridge_cache_dir
    if (settings.telebridge_cache_mb or cache_dir is not None) and bridge.tts is not None:
        cache = PromptCache(
            bridge.tts,
            max_bytes=settings.telebridge_cache_mb * 2**20,
            directory=cache_dir,
            disk_max_bytes=settings.telebridge_cache_disk_mb * 2**20,
        )
        # Runs before the Waves client closes: fills stop, disk writes finish.
        stack.push_async_callback(cache.aclose)
        bridge.tts = cache
        bridge.metrics.watch_cache(cache)
