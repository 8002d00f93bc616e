"""The running bridge: shared state, the starlette app, and the stream endpoint every carrier uses.

`Bridge` holds what calls share (settings, flows, the Waves client, the signing keys, the set of
live calls). `create_app` builds the ASGI app with each enabled carrier's routes. A carrier's
stream route hands its WebSocket to `Bridge.serve_stream` with its own protocol and call control.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.websockets import WebSocket, WebSocketState
from uvicorn.protocols.utils import ClientDisconnected

from telebridge.call.events import ProtocolError, Started, WireMessage
from telebridge.call.ports import CallControl, CallObserver, CarrierStream, TransportClosed
from telebridge.call.session import STOP_SPEECH_WAIT, CallSession, speech_for
from telebridge.calllog import CallLog
from telebridge.flows.fetch import HttpFlowIO
from telebridge.flows.library import FlowLibrary, UnknownFlow
from telebridge.flows.runner import opening_prompt
from telebridge.logs import current_call
from telebridge.server.metrics import Metrics
from telebridge.server.ws_protocol import ABORT, IGNORE, SEND_MANY, MessageFilter
from telebridge.settings import ConfigError, Settings
from telebridge.tokens import (
    CALL_VARS,
    STREAM_TOKEN,
    Keys,
    StreamGrant,
    TokenError,
    mint_stream_token,
    read_call_variables,
    read_stream_token,
)
from telebridge.tts import SpeechOptions, Synthesizer, WavesClient
from telebridge.tts.cache import PromptCache
from telebridge.tts.cache_folder import open_folder
from telebridge.tts.errors import TTSError
from telebridge.tts.guard import WavesGuard
from telebridge.tts.standin import StandinServer

logger = logging.getLogger(__name__)

# The carrier must say who it is (start / connected) this soon after the upgrade.
FIRST_MESSAGE_TIMEOUT = 10.0
# A carrier that stops reading for this long is treated as gone (its socket buffer is full).
SEND_TIMEOUT = 5.0


def call_variables(grant: StreamGrant, call_id: str) -> dict[str, str]:
    """The variables a call's flow starts with: the grant's own, then who and where."""
    return {
        **grant.variables,
        "caller": grant.caller,
        "callee": grant.callee,
        "call_id": call_id,
        "carrier": grant.carrier,
    }


class StarletteTransport:
    """A starlette WebSocket as the session's `Transport`."""

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self._stalled = False
        # Offered by our uvicorn protocol (ws_protocol.py); absent under another server.
        extensions = ws.scope.get("extensions") or {}
        self._abort: Callable[[], None] | None = extensions.get(ABORT)
        self._send_many: Callable[[Sequence[WireMessage]], Awaitable[None]] | None = extensions.get(
            SEND_MANY
        )
        self._set_filter: Callable[[MessageFilter], None] | None = extensions.get(IGNORE)

    def ignore(self, ignorable: MessageFilter) -> None:
        """Let the server drop, unseen, the messages `ignorable` names (when it can)."""
        if self._set_filter is not None:
            self._set_filter(ignorable)

    async def receive(self) -> str | bytes:
        try:
            message = await self._ws.receive()
        except RuntimeError as exc:  # receive after disconnect
            raise TransportClosed(str(exc)) from None
        if message["type"] == "websocket.disconnect":
            raise TransportClosed(f"closed with code {message.get('code')}")
        text = message.get("text")
        if text is not None:
            return str(text)
        return bytes(message.get("bytes") or b"")

    async def send_many(self, messages: Sequence[WireMessage]) -> None:
        """Send `messages` in order, in one write to the socket when the server allows it."""
        if self._stalled or self._ws.application_state is not WebSocketState.CONNECTED:
            raise TransportClosed("socket closed")
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                if self._send_many is not None:
                    await self._send_many(messages)
                    return
                for message in messages:
                    if isinstance(message, str):
                        await self._ws.send_text(message)
                    else:
                        await self._ws.send_bytes(message)
        except TimeoutError:
            logger.warning("carrier read nothing for %g s: dropping its connection", SEND_TIMEOUT)
            self._drop()
            raise TransportClosed(f"carrier did not read for {SEND_TIMEOUT} s") from None
        except ClientDisconnected:
            raise TransportClosed("carrier went away") from None

    async def close(self, code: int = 1000) -> None:
        if self._stalled or self._ws.application_state is not WebSocketState.CONNECTED:
            return
        try:
            # The close frame needs room in the send buffer too: never wait for it unbounded.
            async with asyncio.timeout(SEND_TIMEOUT):
                await self._ws.close(code)
        except TimeoutError:
            logger.warning("carrier took no close frame for %g s: dropping it", SEND_TIMEOUT)
            self._drop()
        except Exception:  # already gone: nothing left to close
            pass

    def _drop(self) -> None:
        self._stalled = True
        if self._abort is not None:
            self._abort()


@dataclass
class Bridge:
    """What every call of one running server shares."""

    settings: Settings
    flows: FlowLibrary
    keys: Keys
    tts: Synthesizer | None = None
    observers: list[CallObserver] = field(default_factory=list)
    calls: dict[str, CallSession] = field(default_factory=dict)
    http: httpx.AsyncClient | None = None
    calllog: CallLog | None = None
    metrics: Metrics = field(default_factory=Metrics)
    draining: bool = False
    guard: WavesGuard | None = None
    # Calls answered whose stream has not started yet: call id -> token expiry.
    pending: dict[str, float] = field(default_factory=dict)
    _no_calls: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.observers.append(self.metrics.observe)

    @classmethod
    def from_settings(cls, settings: Settings) -> Bridge:
        keys = Keys.from_settings(settings)
        flows = FlowLibrary.from_settings(settings)
        if settings.telebridge_cache_dir is not None:
            # Checked here, before serving, so a bad folder is one line and exit 2.
            try:
                open_folder(settings.telebridge_cache_dir)
            except OSError as exc:
                raise ConfigError(
                    f"TELEBRIDGE_CACHE_DIR: cannot use {settings.telebridge_cache_dir} for the "
                    f"prompt cache: {exc.strerror or exc}"
                ) from None
        return cls(settings=settings, flows=flows, keys=keys)

    # --- tokens -----------------------------------------------------------------------

    def stream_url(self, path: str, grant: StreamGrant) -> str:
        ttl = self.settings.telebridge_token_ttl
        token = mint_stream_token(self.keys.key(STREAM_TOKEN, grant.carrier), grant, ttl)
        self.pending[grant.call_id] = time.monotonic() + ttl
        return f"{self.settings.public_ws_url(path)}?token={token}"

    def prefetch(self, grant: StreamGrant, sample_rate: int) -> None:
        """Start the flow's first prompt while the carrier opens the stream (start early)."""
        try:
            self._prefetch(grant, sample_rate)
        except Exception:  # an optimisation: it must never fail the answer
            logger.exception("call %s: could not start the first prompt early", grant.call_id)

    def _prefetch(self, grant: StreamGrant, sample_rate: int) -> None:
        if not isinstance(self.tts, PromptCache):
            return
        try:
            flow = self.flows.get(grant.flow)
        except UnknownFlow:
            return
        opening = opening_prompt(flow, call_variables(grant, grant.call_id))
        if opening is None:
            return  # what it says is only known once the call runs
        text, overrides = opening
        options = speech_for(self.speech(), overrides)
        self.tts.prefetch(text, sample_rate=sample_rate, options=options)

    def busy(self, carrier: str) -> bool:
        """True when a new call must be answered busy: draining, or at TELEBRIDGE_MAX_CALLS."""
        now = time.monotonic()
        for call_id, expiry in list(self.pending.items()):
            if expiry < now:
                del self.pending[call_id]
        reason = None
        if self.draining:
            reason = "draining"
        elif len(self.calls) + len(self.pending) >= self.settings.telebridge_max_calls:
            reason = "capacity"
        if reason is not None:
            logger.warning("%s: answering a new call busy (%s)", carrier, reason)
            self.metrics.refused.labels(carrier, reason).inc()
        return reason is not None

    @property
    def ready(self) -> bool:
        """Able to take calls: not draining, the key not refused, Waves not failing repeatedly."""
        if self.guard is not None and self.guard.state == "refused":
            return False
        return not self.draining and self.metrics.consecutive_waves_errors < 3

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109
        """Stop taking calls, let active ones finish for `timeout` s, then end the rest politely."""
        self.draining = True
        logger.info("draining: %d active call(s), up to %.0f s", len(self.calls), timeout)
        if await self._all_ended(timeout):
            return
        logger.warning("drain timeout: ending %d call(s)", len(self.calls))
        sessions = list(self.calls.values())
        for session in sessions:
            await session.stop("shutdown")
        # A stopped call still speaks the prompt under way to its end: first its synthesis
        # finishes (bounded by the session), then what it queued plays out.
        if await self._all_ended(STOP_SPEECH_WAIT):
            return
        playing = max((s.audio_ahead() for s in sessions), default=0.0)
        if not await self._all_ended(playing + self.settings.telebridge_mark_timeout + 5):
            logger.error("%d call(s) did not end in time", len(self.calls))

    async def _all_ended(self, limit: float) -> bool:
        if not self.calls:
            return True
        self._no_calls.clear()
        try:
            async with asyncio.timeout(limit):
                await self._no_calls.wait()
        except TimeoutError:
            return False
        return True

    def public_url(self, path: str) -> str:
        return self.settings.require_public_url() + path

    def choose_flow(self, requested: str | None, callee: str) -> str:
        """The flow's name for a new call; raises UnknownFlow."""
        return self.flows.choose(requested, callee).name

    # --- streams ----------------------------------------------------------------------

    def speech(self) -> SpeechOptions:
        s = self.settings
        return SpeechOptions(
            voice_id=s.waves_voice,
            model=s.waves_model,
            language=s.waves_language,
            speed=s.waves_speed,
        )

    def _notify(self, call_id: str, kind: str, fields: dict[str, Any]) -> None:
        for observer in self.observers:
            observer(call_id, kind, fields)

    async def serve_stream(
        self,
        ws: WebSocket,
        *,
        carrier: str,
        stream: CarrierStream,
        control_for: Callable[[StreamGrant, Started, Callable[[], Awaitable[None]]], CallControl],
    ) -> None:
        """Authorise, start and run one call's stream; returns when the call is over.

        `control_for` is also given the stream's close, for a carrier that ends a call by closing
        it: that close is bounded like every send, so a carrier that stopped reading cannot hold
        the call open.
        """
        try:
            grant = read_stream_token(
                self.keys.key(STREAM_TOKEN, carrier),
                ws.query_params.get("token", ""),
                carrier=carrier,
            )
        except TokenError as exc:
            logger.warning("%s stream refused: %s", carrier, exc)
            await ws.close(code=1008)  # before accept: the upgrade is answered 403
            return
        await ws.accept()
        transport = StarletteTransport(ws)
        started = await self._first_event(transport, stream, grant)
        if started is None:
            await transport.close(1008)
            return
        transport.ignore(stream.ignorable)
        if self.tts is None:
            raise RuntimeError("the bridge has no synthesizer (lifespan not run)")
        call_id = started.call_id
        self.pending.pop(call_id, None)
        current_call.set(call_id)
        session = CallSession(
            call_id=call_id,
            stream=stream,
            transport=transport,
            control=control_for(grant, started, transport.close),
            tts=self.tts,
            speech=self.speech(),
            max_lead=self.settings.telebridge_max_lead_ms / 1000,
            mark_timeout=self.settings.telebridge_mark_timeout,
            observer=self._notify,
        )
        variables = call_variables(grant, call_id)
        self.calls[call_id] = session
        self._notify(call_id, "started", {"carrier": carrier, "flow": grant.flow})
        recorder = None
        if self.calllog is not None:
            recorder = self.calllog.start_call(
                carrier=carrier,
                call_id=call_id,
                direction=grant.variables.get("direction", "inbound"),
                from_number=grant.caller,
                to_number=grant.callee,
                flow=grant.flow,
                variables=dict(grant.variables),
            )
        outcome = "error"
        io = HttpFlowIO(self.http)
        try:
            flow = self.flows.get(grant.flow)
            outcome = await session.run(flow, variables, recorder=recorder, io=io)
            logger.info("%s call %s ended: %s", carrier, call_id, outcome)
        except UnknownFlow:
            logger.error("%s call %s: flow %r is gone", carrier, call_id, grant.flow)
            outcome = "error:unknown flow"
            await transport.close(1011)
        finally:
            self.calls.pop(call_id, None)
            if not self.calls:
                self._no_calls.set()
            if recorder is not None:
                if session.hangup_reason:
                    recorder.note("hangup", reason=session.hangup_reason)
                recorder.finish(outcome)
            await io.aclose()

    def answer_variables(
        self, carrier: str, token: str | None, call_id: str
    ) -> dict[str, str] | None:
        """The variables a `vars` query parameter gives the call's flow; None: refuse the call.

        A call whose variables do not verify (forged, for another bridge, expired) must not run
        its flow with them missing: its callee would hear a half-filled script.
        """
        if not token:
            return {}
        try:
            return read_call_variables(self.keys.key(CALL_VARS, carrier), token)
        except TokenError as exc:
            logger.warning("%s call %s: refused: bad call variables (%s)", carrier, call_id, exc)
            return None

    def traced_variables(self, carrier: str, token: str | None, call_id: str) -> dict[str, str]:
        """The variables a status callback carries, to trace the call; bad ones are dropped.

        The callback itself is always taken: the carrier's word that a call ended must not be
        lost. A call that streamed has its variables in the call log already, so those that
        expired during a long call are no loss.
        """
        if not token:
            return {}
        try:
            return read_call_variables(self.keys.key(CALL_VARS, carrier), token)
        except TokenError as exc:
            logger.warning("%s call %s: ignoring bad call variables (%s)", carrier, call_id, exc)
            return {}

    def record_hangup(
        self,
        carrier: str,
        call_id: str,
        cause: str,
        duration: float | None,
        *,
        variables: dict[str, str] | None = None,
        **numbers: str,
    ) -> None:
        """A carrier's hangup/completed callback: the call log keeps its cause and duration."""
        if self.calllog is None or not call_id:
            return
        self.calllog.record_hangup(
            carrier,
            call_id,
            cause,
            duration,
            from_number=numbers.get("from_number"),
            to_number=numbers.get("to_number"),
            variables=variables,
        )

    async def _first_event(
        self, transport: StarletteTransport, stream: CarrierStream, grant: StreamGrant
    ) -> Started | None:
        """The carrier's opening message, which must name the call the token was minted for."""
        try:
            async with asyncio.timeout(FIRST_MESSAGE_TIMEOUT):
                message = await transport.receive()
            events = stream.receive(message)
        except TimeoutError:
            logger.warning("%s stream: no start within %ss", grant.carrier, FIRST_MESSAGE_TIMEOUT)
            return None
        except TransportClosed:
            return None
        except ProtocolError as exc:
            logger.warning("%s stream: bad opening message: %s", grant.carrier, exc)
            return None
        started = next((e for e in events if isinstance(e, Started)), None)
        if started is None:
            logger.warning("%s stream: first message is not a start", grant.carrier)
            return None
        if started.call_id != grant.call_id:
            logger.warning(
                "%s stream refused: token is for call %s, stream is for %s",
                grant.carrier,
                grant.call_id,
                started.call_id,
            )
            return None
        return started


# Carrier messages are small JSON or 20 ms frames; anything near this is hostile.
WS_MAX_MESSAGE = 256 * 1024


class DrainingServer(uvicorn.Server):
    """uvicorn that, on the first SIGTERM/SIGINT, drains calls before it stops."""

    def __init__(self, config: uvicorn.Config, bridge: Bridge) -> None:
        super().__init__(config)
        self.bridge = bridge
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is not None or not self.started:
            super().handle_exit(sig, frame)  # a second signal: stop now
            return
        loop = asyncio.get_event_loop()
        self._draining = loop.create_task(self._drain())

    async def _drain(self) -> None:
        await self.bridge.drain(self.bridge.settings.telebridge_drain_timeout)
        self.should_exit = True


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _ops_routes(bridge: Bridge) -> list[BaseRoute]:
    async def readyz(request: Request) -> Response:
        if bridge.ready:
            return JSONResponse({"status": "ready", "calls": len(bridge.calls)})
        if bridge.draining:
            reason = "draining"
        elif bridge.guard is not None and bridge.guard.state == "refused":
            reason = "waves refuses the key"
        else:
            reason = "waves failing"
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)

    async def metrics(request: Request) -> Response:
        return Response(bridge.metrics.render(), media_type="text/plain; version=0.0.4")

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


def create_app(bridge: Bridge) -> Starlette:
    """The ASGI app for `bridge`, with the routes of every enabled carrier."""
    from telebridge.carriers import plivo_http, vonage_http

    settings = bridge.settings
    routes: list[BaseRoute] = _ops_routes(bridge)
    routes += plivo_http.routes(bridge)
    routes += vonage_http.routes(bridge)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
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
            bridge.http = await stack.enter_async_context(httpx.AsyncClient())
            if bridge.calllog is None:
                calllog = CallLog.from_settings(settings)
                bridge.calllog = calllog
                stack.push_async_callback(asyncio.to_thread, calllog.close)
            yield

    return Starlette(routes=routes, lifespan=lifespan)
