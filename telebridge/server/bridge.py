"""What every call of one running server shares: settings, flows, keys, the synthesizer, the live
and answered calls; admission (busy), readiness, drain, and the answer-time work of the carriers'
webhooks (`CallHost`).

A carrier's stream route hands its WebSocket to `Bridge.serve_stream`, the stream endpoint
(server/stream.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from starlette.websockets import WebSocket

from telebridge.call.ports import CallObserver, CarrierStream
from telebridge.call.session import STOP_SPEECH_WAIT, CallSession, speech_for
from telebridge.calllog import CallLog
from telebridge.carriers.host import ControlFor
from telebridge.flows.library import FlowLibrary, UnknownFlow
from telebridge.flows.runner import opening_prompt
from telebridge.server.metrics import Metrics
from telebridge.server.placed import PlacedCalls
from telebridge.server.stream import call_variables, run_stream
from telebridge.settings import ConfigError, Settings
from telebridge.tokens import (
    CALL_VARS,
    STREAM_TOKEN,
    Keys,
    StreamGrant,
    TokenError,
    mint_stream_token,
    read_call_variables,
)
from telebridge.tts import SpeechOptions, Synthesizer
from telebridge.tts.cache import PromptCache
from telebridge.tts.cache_folder import folder_for, open_folder
from telebridge.tts.guard import WavesGuard

if TYPE_CHECKING:
    # redis-py is the `cluster` extra: the link is imported only by a process that joins one.
    from telebridge.server.cluster_link import ClusterLink

logger = logging.getLogger(__name__)

# Waves failures in a row, with no audio between them, after which the bridge is not ready.
UNREADY_AFTER_WAVES_ERRORS = 3
# How long an answered call whose stream has not started here counts against TELEBRIDGE_MAX_CALLS.
PENDING_HOLD_S = 15.0


@dataclass(frozen=True, slots=True)
class LiveCall:
    """A call whose stream runs here: its session and what its answer granted."""

    session: CallSession
    grant: StreamGrant
    started_at: str  # ISO-8601 UTC

    def as_api(self) -> dict[str, Any]:
        """The call as `GET /v1/calls` shows it (and the cluster's registry holds it)."""
        grant = self.grant
        return {
            "call_id": self.session.call_id,
            "carrier": grant.carrier,
            "direction": grant.variables.get("direction", "inbound"),
            "from": grant.caller,
            "to": grant.callee,
            "flow": grant.flow,
            "step": self.session.step,
            "started_at": self.started_at,
            "state": self.session.state.value,
        }


@dataclass
class Bridge:
    """What every call of one running server shares."""

    settings: Settings
    flows: FlowLibrary
    keys: Keys
    tts: Synthesizer | None = None
    observers: list[CallObserver] = field(default_factory=list)
    calls: dict[str, CallSession] = field(default_factory=dict)
    live: dict[str, LiveCall] = field(default_factory=dict)
    # Calls placed through the call API, by the id it gave (server/placed.py).
    placed: PlacedCalls = field(default_factory=PlacedCalls)
    http: httpx.AsyncClient | None = None
    calllog: CallLog | None = None
    metrics: Metrics = field(default_factory=Metrics)
    draining: bool = False
    guard: WavesGuard | None = None
    # This process's part in a cluster (TELEBRIDGE_REDIS_URL), joined by the app's lifespan.
    cluster: ClusterLink | None = None
    # `telebridge serve`: once started, the heap built so far (modules, flows, clients) is frozen
    # out of the cyclic garbage collector's reach, so its full collections, which pause every
    # call, walk only what calls made (see `create_app`).
    freeze_heap: bool = False
    # Calls answered whose stream has not started yet: call id -> until when it counts against
    # TELEBRIDGE_MAX_CALLS (PENDING_HOLD_S at most: behind a load balancer the stream may start on
    # another process of the cluster, and a carrier opens it within seconds or not at all).
    pending: dict[str, float] = field(default_factory=dict)
    # Waves failures since the last audio a call heard (health, not a metric).
    waves_errors_in_a_row: int = 0
    _no_calls: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.observers.append(self.metrics.observe)
        self.observers.append(self._watch_waves)

    @classmethod
    def from_settings(cls, settings: Settings) -> Bridge:
        keys = Keys.from_settings(settings)
        flows = FlowLibrary.from_settings(settings)
        if settings.telebridge_cache_dir is not None:
            # Checked here, before serving, so a bad folder is one line and exit 2.
            try:
                open_folder(
                    folder_for(settings.telebridge_cache_dir, standin=settings.uses_standin)
                )
            except OSError as exc:
                raise ConfigError(
                    f"TELEBRIDGE_CACHE_DIR: cannot use {settings.telebridge_cache_dir} for the "
                    f"prompt cache: {exc.strerror or exc}"
                ) from None
        return cls(settings=settings, flows=flows, keys=keys)

    # --- answering (the carriers' webhooks, through CallHost) --------------------------

    def stream_url(self, path: str, grant: StreamGrant) -> str:
        ttl = self.settings.telebridge_token_ttl
        token = mint_stream_token(self.keys.key(STREAM_TOKEN, grant.carrier), grant, ttl)
        self.pending[grant.call_id] = time.monotonic() + min(ttl, PENDING_HOLD_S)
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

    def public_url(self, path: str) -> str:
        return self.settings.require_public_url() + path

    def flow_names(self) -> list[str]:
        return self.flows.names

    def choose_flow(self, requested: str | None, callee: str) -> str:
        """The flow's name for a new call; raises UnknownFlow."""
        return self.flows.choose(requested, callee).name

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
        from_number: str | None = None,
        to_number: str | None = None,
    ) -> None:
        """A carrier's hangup/completed callback: the call log keeps its cause and duration."""
        if variables and call_id not in self.calls:
            self.placed.ended(variables.get("attempt"), call_id)
        if self.calllog is None or not call_id:
            return
        self.calllog.record_hangup(
            carrier,
            call_id,
            cause,
            duration,
            from_number=from_number,
            to_number=to_number,
            variables=variables,
        )

    # --- streams (server/stream.py, through StreamHost) --------------------------------

    async def serve_stream(
        self, ws: WebSocket, *, carrier: str, stream: CarrierStream, control_for: ControlFor
    ) -> None:
        """Authorise, start and run one call's stream; returns when the call is over."""
        await run_stream(self, ws, carrier=carrier, stream=stream, control_for=control_for)

    def speech(self) -> SpeechOptions:
        return SpeechOptions.from_settings(self.settings)

    def notify(self, call_id: str, kind: str, fields: dict[str, Any]) -> None:
        for observer in self.observers:
            observer(call_id, kind, fields)

    def add_call(self, call_id: str, session: CallSession, grant: StreamGrant) -> None:
        self.pending.pop(call_id, None)
        self.calls[call_id] = session
        started = datetime.now(UTC).isoformat(timespec="milliseconds")
        live = self.live[call_id] = LiveCall(session, grant, started)
        self.placed.streaming(grant.variables.get("attempt"), call_id)
        if self.cluster is not None:
            self.cluster.claim(call_id, live.as_api())

    def remove_call(self, call_id: str) -> None:
        self.calls.pop(call_id, None)
        live = self.live.pop(call_id, None)
        if live is not None:
            self.placed.ended(live.grant.variables.get("attempt"))
        if self.cluster is not None:
            self.cluster.release(call_id)
        if not self.calls:
            self._no_calls.set()

    # --- health and shutdown -----------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Able to take calls: not draining, the key not refused, Waves not failing repeatedly."""
        if self.guard is not None and self.guard.state == "refused":
            return False
        return not self.draining and self.waves_errors_in_a_row < UNREADY_AFTER_WAVES_ERRORS

    def _watch_waves(self, call_id: str, kind: str, fields: dict[str, Any]) -> None:
        if kind == "first_audio":
            self.waves_errors_in_a_row = 0
        elif kind == "tts_error":
            self.waves_errors_in_a_row += 1

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
