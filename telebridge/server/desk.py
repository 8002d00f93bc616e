"""The call API's `CallDesk` over one running bridge: placing calls through the carriers' REST
APIs (in a worker thread: their SDKs block), the live calls and the call log, and the live calls'
sessions for say, hangup and transfer. In a cluster the live calls are the cluster's, and say,
hangup and transfer for a call another process holds are forwarded to it (`answer_remote` serves
them there); the calls the API placed are the cluster's too (their request ids work on every
process), this process's own `PlacedCalls` standing in while Redis is lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from typing import Any

from telebridge import e164
from telebridge.api.bodies import ApiError, HangupCall, PlaceCall, Say, TransferCall
from telebridge.call.session import CallNotLive, CallSession
from telebridge.calllog import CallRecord
from telebridge.carriers.plivo_rest import PlivoRest, PlivoRestError
from telebridge.carriers.vonage_rest import VonageRest, VonageRestError
from telebridge.flows import SpeechOverrides
from telebridge.flows.library import UnknownFlow
from telebridge.outbound.placers import CallPlacer
from telebridge.outbound.placing import PlacementError, placer_for
from telebridge.outbound.request import CARRIERS, OutboundError, callback_urls
from telebridge.outbound.verdicts import find_call
from telebridge.server.bridge import Bridge, LiveCall
from telebridge.server.placed import API_ATTEMPT, PlacedCall, State, further
from telebridge.settings import ConfigError
from telebridge.tokens import CALL_VARS

__all__ = ["BridgeDesk"]

logger = logging.getLogger(__name__)

# The carriers' credentials errors are the bridge's, not the client's: named, as a 502.
_CREDENTIALS = {
    "plivo": "PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN",
    "vonage": "VONAGE_APPLICATION_ID / VONAGE_PRIVATE_KEY",
}


class BridgeDesk:
    """What the `/v1/` routes act through, on `bridge`."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge
        self._placers: dict[str, CallPlacer] = {}
        self._plivo: PlivoRest | None = None  # for cancelling calls still ringing
        self._vonage: VonageRest | None = None
        # In a cluster, what this process learns of placed calls and of its calls' states.
        bridge.placed.listen(self._placed_changed)
        bridge.observers.append(self._watch_state)

    # --- placing --------------------------------------------------------------------

    def _placer(self, carrier: str) -> CallPlacer:
        placer = self._placers.get(carrier)
        if placer is None:
            try:
                placer = self._placers[carrier] = placer_for(self._bridge.settings, carrier)
            except ConfigError as exc:
                message = f"carrier: {carrier} calls are off on this bridge: {exc}"
                raise ApiError(400, message) from None
        return placer

    async def place(self, call: PlaceCall) -> dict[str, Any]:
        bridge = self._bridge
        if bridge.draining:
            raise ApiError(503, "the bridge is shutting down", headers={"Retry-After": "30"})
        placer = self._placer(call.carrier)
        try:
            flow = bridge.flows.choose(call.flow, call.to).name
        except UnknownFlow:
            have = ", ".join(bridge.flows.names) or "none"
            raise ApiError(400, f"flow: no flow named {call.flow!r} (have: {have})") from None
        if bridge.busy(call.carrier):
            raise ApiError(503, "the bridge is at TELEBRIDGE_MAX_CALLS",
                           headers={"Retry-After": "5"})  # fmt: skip
        attempt = API_ATTEMPT + secrets.token_hex(8)
        variables = {**call.variables, "direction": "outbound", "attempt": attempt}
        key = bridge.keys.key(CALL_VARS, call.carrier)
        try:
            urls = callback_urls(bridge.settings, key, call.carrier, flow, variables)
        except (OutboundError, ConfigError) as exc:
            raise ApiError(400, str(exc)) from None
        try:
            request_id = await asyncio.to_thread(
                placer.place, to=call.to, from_=call.from_, urls=urls
            )
        except PlacementError as exc:
            raise _carrier_failure(call.carrier, exc) from None
        placed = bridge.placed.add(request_id, attempt, call.carrier, call.to, call.from_, flow)
        if bridge.cluster is not None:
            await bridge.cluster.placed(placed)  # then any process finds it by its request id
        for live in list(bridge.live.values()):
            if live.grant.variables.get("attempt") == attempt:  # answered before the carrier
                bridge.placed.streaming(attempt, live.session.call_id)  # confirmed it to us
        logger.info("api: %s call to %s placed: %s", call.carrier, call.to, request_id)
        return {"call_id": request_id, "carrier": call.carrier, "to": call.to,
                "from": call.from_, "flow": flow, "status": "queued"}  # fmt: skip

    # --- looking --------------------------------------------------------------------

    async def live_calls(self) -> list[dict[str, Any]]:
        bridge = self._bridge
        calls = [self._live(call) for call in bridge.live.values()]
        queued = bridge.placed.queued()
        if bridge.cluster is not None:
            here = {call["call_id"] for call in calls}
            # The registry first: a call that starts streaming meanwhile is then missed once
            # rather than shown twice (its placed record leaves the queue before its claim).
            calls += [c for c in await bridge.cluster.calls() if c["call_id"] not in here]
            queued = await bridge.cluster.placed_queued(queued, time.monotonic())
        calls += [p.as_api() for p in queued]
        return [e164.numbers_of(call) for call in calls]

    async def find(self, call_id: str) -> dict[str, Any] | None:
        found = await self._find(call_id)
        return e164.numbers_of(found) if found is not None else None

    async def _find(self, call_id: str) -> dict[str, Any] | None:
        placed = await self._placed(call_id)
        live = self._live_call(call_id, placed)
        if live is not None:
            record = await self._record(live.grant.carrier, live.session.call_id)
            shown = {**(record.to_json() if record else {}), **self._live(live)}
            return {**shown, "request_id": placed.request_id} if placed else shown
        if placed is not None and placed.state == "queued":
            return placed.as_api()
        if placed is not None and placed.state == "live" and placed.call_id:
            remote = await self._remote(placed.call_id)  # streaming on another process
            if remote is None:  # its claim not written yet (or its process lost)
                remote = {**placed.as_api(), "state": "streaming"}
            return {**remote, "request_id": placed.request_id}
        if placed is not None:
            record = await self._record(placed.carrier, placed.call_id, attempt=placed.attempt)
            extra = {"request_id": placed.request_id, "state": "ended"}
            return {**record.to_json(), **extra} if record else placed.as_api()
        remote = await self._remote(call_id)
        if remote is not None:
            return remote
        for carrier in CARRIERS:
            record = await self._record(carrier, call_id)
            if record is not None:
                return {**record.to_json(), "state": "ended"}
        return None

    async def _record(
        self, carrier: str, call_id: str | None, *, attempt: str | None = None
    ) -> CallRecord | None:
        log = self._bridge.calllog
        if log is None:
            return None
        if call_id:
            record = await asyncio.to_thread(log.get, carrier, call_id)
            if record is not None or attempt is None:
                return record
        if attempt is not None:
            return await asyncio.to_thread(find_call, log, carrier, attempt, None)
        return None

    async def _remote(self, call_id: str) -> dict[str, Any] | None:
        """`call_id` live on another process (not ended, whatever the log says), or None."""
        if self._bridge.cluster is None:
            return None
        for remote in await self._bridge.cluster.calls():
            if remote["call_id"] == call_id:
                record = await self._record(str(remote.get("carrier")), call_id)
                return {**(record.to_json() if record else {}), **remote}
        return None

    async def _placed(self, call_id: str) -> PlacedCall | None:
        """The call the API placed as `call_id`: this process's record and, in a cluster, the
        cluster's, whichever is further along (this process's alone while Redis is lost)."""
        bridge = self._bridge
        local = bridge.placed.get(call_id)
        if bridge.cluster is None or call_id in bridge.live:
            return local
        return further(local, await bridge.cluster.placed_call(call_id, time.monotonic()))

    def _live_call(self, call_id: str, placed: PlacedCall | None = None) -> LiveCall | None:
        live = self._bridge.live.get(call_id)
        if live is None:
            placed = placed or self._bridge.placed.get(call_id)
            if placed is not None and placed.call_id:
                live = self._bridge.live.get(placed.call_id)
        return live

    def _session(self, call_id: str, placed: PlacedCall | None = None) -> CallSession:
        live = self._live_call(call_id, placed)
        if live is not None:
            return live.session
        placed = placed or self._bridge.placed.get(call_id)
        if placed is not None and placed.state == "queued":
            raise ApiError(409, "the call has not been answered yet")
        if placed is not None and placed.state == "live":
            raise ApiError(409, "the call is not live on this bridge")
        if placed is not None:
            raise ApiError(409, "the call has ended")
        raise ApiError(404, "no such call live on this bridge")

    def _live(self, call: LiveCall) -> dict[str, Any]:
        grant = call.grant
        placed = self._bridge.placed.by_attempt(grant.variables.get("attempt"))
        shown = call.as_api()
        if placed is not None:
            shown = {"call_id": shown["call_id"], "request_id": placed.request_id, **shown}
        return shown

    # --- acting ---------------------------------------------------------------------

    async def say(self, call_id: str, request: Say) -> None:
        placed = await self._placed(call_id)
        if not await self._forwarded(call_id, "say", request, placed):
            self._say_here(call_id, request, placed)

    def _say_here(self, call_id: str, request: Say, placed: PlacedCall | None = None) -> None:
        session = self._session(call_id, placed)
        overrides = SpeechOverrides(request.voice, request.speed, request.language)
        try:
            session.announce(request.text, overrides, interrupt=request.interrupt)
        except CallNotLive as exc:
            raise ApiError(409, str(exc)) from None

    async def hangup(self, call_id: str, request: HangupCall) -> None:
        placed = await self._placed(call_id)
        ringing = placed is not None and placed.state == "queued"
        if placed is not None and ringing and self._live_call(call_id, placed) is None:
            # Any process can cancel it: they all have the carrier's credentials.
            if await self._cancel(placed):
                return  # it never rang through: nothing was said, nothing to wait for
            placed = await self._placed(call_id)  # answered meanwhile, here or elsewhere?
            gone = placed is None or placed.state != "live"
            if gone and self._live_call(call_id, placed) is None:
                raise ApiError(409, "the call is no longer ringing: it was answered or has ended")
        if not await self._forwarded(call_id, "hangup", request, placed):
            await self._hangup_here(call_id, request, placed)

    async def _hangup_here(
        self, call_id: str, request: HangupCall, placed: PlacedCall | None = None
    ) -> None:
        session = self._session(call_id, placed)
        try:
            await session.end_from_outside(request.reason or "requested")
        except CallNotLive as exc:
            raise ApiError(409, str(exc)) from None

    async def _cancel(self, placed: PlacedCall) -> bool:
        """Have the carrier drop a placed call that is still ringing; False when it no longer
        holds it as ringing (answered meanwhile, or over)."""
        try:
            if placed.carrier == "plivo":
                if self._plivo is None:
                    s = self._bridge.settings
                    if not (s.plivo_auth_id and s.plivo_auth_token):
                        raise ApiError(502, "PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN are not set on "
                                       "this bridge: it cannot cancel the call")  # fmt: skip
                    token = s.plivo_auth_token.get_secret_value()
                    self._plivo = PlivoRest(s.plivo_auth_id, token, s.plivo_api_url)
                cancelled = await self._plivo.cancel(placed.request_id)
            else:
                if self._vonage is None:
                    s = self._bridge.settings
                    if not (s.vonage_application_id and s.vonage_private_key):
                        raise ApiError(502, "VONAGE_APPLICATION_ID / VONAGE_PRIVATE_KEY are not "
                                       "set on this bridge: it cannot cancel the call")  # fmt: skip
                    key = s.vonage_private_key.get_secret_value()
                    self._vonage = VonageRest(s.vonage_application_id, key, s.vonage_api_host)
                cancelled = await self._vonage.hangup(placed.request_id)
        except (PlivoRestError, VonageRestError) as exc:
            raise ApiError(502, str(exc), carrier=placed.carrier) from None
        if cancelled:
            logger.info("api: %s call %s cancelled before it was answered", placed.carrier,
                        placed.request_id)  # fmt: skip
            placed.state = "ended"
            self._bridge.placed.ended(placed.attempt)
        return cancelled

    async def transfer(self, call_id: str, request: TransferCall) -> None:
        placed = await self._placed(call_id)
        if not await self._forwarded(call_id, "transfer", request, placed):
            await self._transfer_here(call_id, request, placed)

    async def _transfer_here(
        self, call_id: str, request: TransferCall, placed: PlacedCall | None = None
    ) -> None:
        session = self._session(call_id, placed)
        try:
            await session.transfer_from_outside(request.to)
        except CallNotLive as exc:
            raise ApiError(409, str(exc)) from None

    # --- the cluster: calls other processes hold -------------------------------------

    async def _forwarded(
        self,
        call_id: str,
        op: str,
        request: Say | HangupCall | TransferCall,
        placed: PlacedCall | None,
    ) -> bool:
        """Done by the process of the cluster holding `call_id` (a placed call's: the carrier's
        call id, once it streams), if another one does; its refusal raised as its `ApiError`.
        False: act here (409 for a placed call not streaming, 404 when nobody holds the call)."""
        bridge = self._bridge
        if bridge.cluster is None or self._live_call(call_id, placed) is not None:
            return False
        if placed is not None:
            if placed.state != "live" or not placed.call_id:
                return False  # queued or ended: the same answer on every process
            call_id = placed.call_id
        body = {"call_id": call_id, "request": dataclasses.asdict(request)}
        reply = await bridge.cluster.forward(call_id, op, body)
        if reply is None:
            return False
        status = int(reply.get("status", 502))
        if status >= 300:
            raise ApiError(status, str(reply.get("error", "the holding process failed")))
        return True

    def _placed_changed(self, attempt: str, state: State, call_id: str | None) -> None:
        # A placed call streamed or ended here: the cluster's record follows.
        if self._bridge.cluster is not None:
            self._bridge.cluster.placed_changed(attempt, state, call_id)

    def _watch_state(self, call_id: str, kind: str, fields: dict[str, Any]) -> None:
        # A call observer: the registry shows the state `_live` shows here.
        live = self._bridge.live.get(call_id)
        if live is not None and self._bridge.cluster is not None:
            self._bridge.cluster.state_changed(call_id, live.session.state.value)

    async def answer_remote(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        """Serve another process's forwarded `op` on a call of this one: `{"status", "error"?}`."""
        call_id = str(body.get("call_id", ""))
        try:
            if self._live_call(call_id) is None:
                raise ApiError(404, "no such call live on this bridge")
            fields = body.get("request") or {}
            if op == "say":
                self._say_here(call_id, Say(**fields))
            elif op == "hangup":
                await self._hangup_here(call_id, HangupCall(**fields))
            elif op == "transfer":
                await self._transfer_here(call_id, TransferCall(**fields))
            else:
                raise ApiError(400, f"no operation {op!r}")
        except ApiError as exc:
            return {"status": exc.status, "error": exc.message}
        except TypeError:
            return {"status": 400, "error": f"a malformed {op} request"}
        return {"status": 202}


def _carrier_failure(carrier: str, exc: PlacementError) -> ApiError:
    """The carrier's answer to a call it did not confirm, as the API answers it."""
    extra: dict[str, Any] = {"carrier": carrier, "placed": exc.placed}
    if exc.status is not None:
        extra["carrier_status"] = exc.status
    if exc.rate_limited:
        wait = str(max(1, round(exc.retry_after or 1)))
        return ApiError(503, str(exc), headers={"Retry-After": wait}, **extra)
    if exc.status in (401, 403):
        return ApiError(502, f"{exc}: check {_CREDENTIALS[carrier]}", **extra)
    if exc.placed == "no" and exc.status is not None and exc.status < 500:
        return ApiError(422, str(exc), **extra)
    if exc.placed == "maybe":
        return ApiError(502, f"{exc}; the call may have been placed: look before placing it "
                        "again", **extra)  # fmt: skip
    return ApiError(502, str(exc), **extra)
