"""What calls speak with, assembled at start: the Waves client of `WAVES_TRANSPORT` (the
WebSocket, HTTP streaming, or `auto`: the WebSocket with SSE while it cannot be opened), or the
embedded stand-in without a key, behind the admission guard (its cap shared by the cluster's
processes when there is one) and the prompt cache (with a layer shared by the cluster's processes
when there is one)."""

from __future__ import annotations

import contextlib
import logging
import secrets

from telebridge.server.bridge import Bridge
from telebridge.settings import Settings
from telebridge.tts import Synthesizer, WavesClient
from telebridge.tts.cache import PromptCache
from telebridge.tts.cache_folder import folder_for
from telebridge.tts.errors import TTSError, WavesConnectionError
from telebridge.tts.guard import WavesGuard
from telebridge.tts.sse import WavesSSEClient
from telebridge.tts.standin import StandinServer
from telebridge.tts.switch import TransportSwitch

__all__ = ["assemble_speech"]

logger = logging.getLogger("telebridge.server.app")


async def assemble_speech(
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
        bridge.tts = await _waves(bridge, settings, standin.url, standin.api_key, stack)
    else:
        key = settings.waves_api_key.get_secret_value()
        bridge.tts = await _waves(bridge, settings, settings.waves_url, key, stack)
        logger.info(
            "speaking with Waves at %s (WAVES_TRANSPORT=%s)",
            settings.waves_url,
            settings.waves_transport,
        )
    if bridge.tts is not None and not isinstance(bridge.tts, WavesGuard | PromptCache):
        client = bridge.tts
        limit = settings.waves_max_in_flight
        shared = bridge.cluster.slots(limit) if bridge.cluster is not None and limit else None
        bridge.guard = bridge.tts = WavesGuard(
            client,
            max_in_flight=limit,
            queue_timeout=settings.waves_queue_timeout,
            shared=shared,
        )
        bridge.metrics.watch_guard(bridge.guard)
        await _prewarm(bridge.guard, client)
    cache_dir = settings.telebridge_cache_dir
    if (settings.telebridge_cache_mb or cache_dir is not None) and bridge.tts is not None:
        prompts = None
        if bridge.cluster is not None and settings.telebridge_shared_cache_mb:
            # Audio of the stand-in and of Waves kept apart, as on disk.
            namespace = "standin" if settings.uses_standin else "waves"
            megabytes = settings.telebridge_shared_cache_mb
            prompts = bridge.cluster.prompts(megabytes * 2**20, namespace)
            bridge.metrics.watch_shared_prompts(prompts)
        cache = PromptCache(
            bridge.tts,
            max_bytes=settings.telebridge_cache_mb * 2**20,
            directory=folder_for(cache_dir, standin=settings.uses_standin) if cache_dir else None,
            disk_max_bytes=settings.telebridge_cache_disk_mb * 2**20,
            shared=prompts,
        )
        # Runs before the Waves client closes: fills stop, disk writes finish, publishing ends.
        stack.push_async_callback(cache.aclose)
        bridge.tts = cache
        bridge.metrics.watch_cache(cache)


async def _waves(
    bridge: Bridge, settings: Settings, url: str, key: str, stack: contextlib.AsyncExitStack
) -> Synthesizer:
    """The client of WAVES_TRANSPORT for Waves at `url` (closed with `stack`)."""
    transport = settings.waves_transport
    wait = settings.waves_first_chunk_timeout
    websocket = sse = None
    if transport != "sse":
        websocket = await stack.enter_async_context(WavesClient(url, key, first_chunk_timeout=wait))
    if transport != "websocket":
        sse = await stack.enter_async_context(WavesSSEClient(url, key, first_chunk_timeout=wait))
    if websocket is not None and sse is not None:
        switch = TransportSwitch(websocket, sse, on_switch=bridge.metrics.switched)
        stack.push_async_callback(switch.aclose)
        bridge.metrics.watch_transport(lambda: switch.transport)
        return switch
    bridge.metrics.watch_transport(lambda: transport)
    client = websocket or sse
    assert client is not None
    return client


async def _prewarm(guard: WavesGuard, client: Synthesizer) -> None:
    """Open connections before the first call, so none pays a TLS handshake on its first prompt;
    a refused key is said loudly at once, and in `auto` a WebSocket that cannot be opened moves
    prompts to SSE before any call needs them."""
    try:
        if isinstance(client, TransportSwitch | WavesClient | WavesSSEClient):
            await client.prewarm(2)
    except WavesConnectionError as exc:
        if isinstance(client, TransportSwitch):
            client.websocket_failed(exc)
        else:
            logger.warning("could not pre-connect to Waves: %s", exc)
    except TTSError as exc:
        guard.observe_failure(exc)
        if guard.state == "ok":
            logger.warning("could not pre-connect to Waves: %s", exc)
