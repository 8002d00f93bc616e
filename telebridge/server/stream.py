"""The stream endpoint every carrier's stream route ends in: check the stream's token, read the
carrier's opening message, then run the call's `CallSession` and record it in the call log
(with `CallWatch`: the flow's steps, and as notes what the web console's timeline shows).

`run_stream` works on a `StreamHost` (what it uses of the bridge), which `Bridge` implements.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import httpx
from starlette.websockets import WebSocket

from telebridge.call.events import ProtocolError, Started
from telebridge.call.ports import CallObserver, CarrierStream, TransportClosed
from telebridge.call.session import CallSession
from telebridge.calllog import CallLog, CallRecorder
from telebridge.carriers.host import ControlFor
from telebridge.flows.fetch import HttpFlowIO
from telebridge.flows.library import FlowLibrary, UnknownFlow
from telebridge.logs import current_call
from telebridge.server.transport import StarletteTransport
from telebridge.settings import Settings
from telebridge.tokens import STREAM_TOKEN, Keys, StreamGrant, TokenError, read_stream_token
from telebridge.tts import SpeechOptions, Synthesizer

logger = logging.getLogger(__name__)

# The carrier must say who it is (start / connected) this soon after the upgrade.
FIRST_MESSAGE_TIMEOUT = 10.0


# The call events kept as notes in the call log, with the fields kept of each: what the web
# console's timeline shows. Never per-frame events (play, first_audio).
TIMELINE_NOTES: dict[str, tuple[str, ...]] = {
    "prompt": ("text", "utterance"),
    "tts_first_byte": ("utterance", "ms"),
    "tts_error": ("error", "attempt"),
    "barge_in": (),
    "played": ("mark",),
    "mark_timeout": ("mark",),
    "transfer": ("to",),
    "transfer_result": ("ok",),
    "hangup": ("reason",),
    "apology": (),
    "api_interrupt": (),
    "agent_start": ("listen",),
    "agent_end": ("reason",),
}


class CallWatch:
    """One call's observer and its flow's recorder: every event goes to the bridge's observers
    (a step entered too, as `step`), and to the call log: steps as such, `TIMELINE_NOTES` as
    notes."""

    def __init__(self, call_id: str, notify: CallObserver) -> None:
        self.call_id = call_id
        self.recorder: CallRecorder | None = None  # set once the call log has the call
        self._notify = notify

    def __call__(self, call_id: str, kind: str, fields: dict[str, Any]) -> None:
        self._notify(call_id, kind, fields)
        kept = TIMELINE_NOTES.get(kind)
        if kept is not None and self.recorder is not None:
            self.recorder.note(kind, **{name: fields[name] for name in kept if name in fields})

    def step_entered(self, step: str) -> None:
        self._notify(self.call_id, "step", {"step": step})
        if self.recorder is not None:
            self.recorder.step_entered(step)

    def digits_collected(self, step: str, digits: str) -> None:
        if self.recorder is not None:
            self.recorder.digits_collected(step, digits)

    def vars_set(self, values: dict[str, str]) -> None:
        if self.recorder is not None:
            self.recorder.vars_set(values)

    def webhook_result(self, step: str, ok: bool, detail: str) -> None:
        if self.recorder is not None:
            self.recorder.webhook_result(step, ok, detail)


def call_variables(grant: StreamGrant, call_id: str) -> dict[str, str]:
    """The variables a call's flow starts with: the grant's own, then who and where."""
    return {
        **grant.variables,
        "caller": grant.caller,
        "callee": grant.callee,
        "call_id": call_id,
        "carrier": grant.carrier,
    }


class StreamHost(Protocol):
    """What the stream endpoint uses of the running bridge."""

    @property
    def settings(self) -> Settings: ...
    @property
    def keys(self) -> Keys: ...
    @property
    def flows(self) -> FlowLibrary: ...
    @property
    def tts(self) -> Synthesizer | None: ...
    @property
    def http(self) -> httpx.AsyncClient | None: ...
    @property
    def calllog(self) -> CallLog | None: ...

    def speech(self) -> SpeechOptions:
        """The bridge's default voice and its settings."""
        ...

    def notify(self, call_id: str, kind: str, fields: dict[str, Any]) -> None:
        """Tell every observer what happened to a call."""
        ...

    def add_call(self, call_id: str, session: CallSession, grant: StreamGrant) -> None:
        """A call's stream started: it is live, no longer pending."""
        ...

    def remove_call(self, call_id: str) -> None:
        """A call is over."""
        ...


async def run_stream(
    host: StreamHost,
    ws: WebSocket,
    *,
    carrier: str,
    stream: CarrierStream,
    control_for: ControlFor,
) -> None:
    """Authorise, start and run one call's stream; returns when the call is over.

    `control_for` is also given the stream's close, for a carrier that ends a call by closing
    it: that close is bounded like every send, so a carrier that stopped reading cannot hold
    the call open.
    """
    try:
        grant = read_stream_token(
            host.keys.key(STREAM_TOKEN, carrier),
            ws.query_params.get("token", ""),
            carrier=carrier,
        )
    except TokenError as exc:
        logger.warning("%s stream refused: %s", carrier, exc)
        await ws.close(code=1008)  # before accept: the upgrade is answered 403
        return
    await ws.accept()
    transport = StarletteTransport(ws)
    started = await _first_event(transport, stream, grant)
    if started is None:
        await transport.close(1008)
        return
    transport.ignore(stream.ignorable)
    if host.tts is None:
        raise RuntimeError("the bridge has no synthesizer (lifespan not run)")
    call_id = started.call_id
    current_call.set(call_id)
    settings = host.settings
    watch = CallWatch(call_id, host.notify)
    session = CallSession(
        call_id=call_id,
        stream=stream,
        transport=transport,
        control=control_for(grant, started, transport.close),
        tts=host.tts,
        speech=host.speech(),
        max_lead=settings.telebridge_max_lead_ms / 1000,
        mark_timeout=settings.telebridge_mark_timeout,
        observer=watch,
    )
    variables = call_variables(grant, call_id)
    host.add_call(call_id, session, grant)
    host.notify(call_id, "started", {"carrier": carrier, "flow": grant.flow})
    recorder = None
    if host.calllog is not None:
        recorder = watch.recorder = host.calllog.start_call(
            carrier=carrier,
            call_id=call_id,
            direction=grant.variables.get("direction", "inbound"),
            from_number=grant.caller,
            to_number=grant.callee,
            flow=grant.flow,
            variables=dict(grant.variables),
        )
    outcome = "error"
    secret = settings.telebridge_agent_secret
    io = HttpFlowIO(host.http, agent_secret=secret.get_secret_value() if secret else None)
    try:
        flow = host.flows.get(grant.flow)
        outcome = await session.run(flow, variables, recorder=watch, io=io)
        logger.info("%s call %s ended: %s", carrier, call_id, outcome)
    except UnknownFlow:
        logger.error("%s call %s: flow %r is gone", carrier, call_id, grant.flow)
        outcome = "error:unknown flow"
        await transport.close(1011)
    finally:
        host.remove_call(call_id)
        if recorder is not None:
            if session.ended_by:
                recorder.note("ended_by", **session.ended_by)
            recorder.finish(outcome)
        await io.aclose()


async def _first_event(
    transport: StarletteTransport, stream: CarrierStream, grant: StreamGrant
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
