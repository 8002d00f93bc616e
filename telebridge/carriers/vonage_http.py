"""Vonage's I/O edge: the answer and event webhooks and the audio WebSocket route.

With `VONAGE_SIGNATURE_SECRET` set, every webhook must carry a valid signed-webhook JWT;
without it Vonage runs only when `VONAGE_ALLOW_UNSIGNED` says so. Calls are hung up through
the REST API on the call's regional host when `VONAGE_APPLICATION_ID` and `VONAGE_PRIVATE_KEY`
are set, and otherwise by closing the WebSocket (the NCCO ends with `connect`, so that ends
the call).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from telebridge.call.events import Started
from telebridge.carriers import paths, vonage
from telebridge.carriers.host import CallHost
from telebridge.carriers.vonage_rest import VonageRest, VonageRestError
from telebridge.carriers.webhooks import BUSY_TEXT, webhook_body
from telebridge.flows.library import UnknownFlow
from telebridge.tokens import StreamGrant

logger = logging.getLogger(__name__)

# Region hosts remembered from answer webhooks until the call's stream starts.
MAX_REMEMBERED_CALLS = 10_000
# Event statuses after which a call leg is over and its region is no longer needed.
FINAL_STATUSES = frozenset(
    {"completed", "busy", "cancelled", "unanswered", "rejected", "failed", "timeout"}
)
DISABLED_TEXT = (
    "Vonage is not configured on this bridge: set VONAGE_SIGNATURE_SECRET "
    "(or VONAGE_ALLOW_UNSIGNED=true to accept unsigned webhooks)"
)
REFUSAL_TEXT = "Sorry, this number is not set up."


class VonageCallControl:
    """Hang up and transfer one Vonage call leg: REST when possible, else close the socket."""

    def __init__(
        self,
        rest: VonageRest | None,
        call_uuid: str,
        *,
        region_host: str | None,
        caller_id: str,
        close: Callable[[], Awaitable[None]],  # the stream's own close, bounded like its sends
    ) -> None:
        self._rest = rest
        self._uuid = call_uuid
        self._host = region_host
        self._caller_id = caller_id
        self._close = close

    async def hangup(self) -> None:
        if self._rest is not None:
            try:
                ended = await self._rest.hangup(self._uuid, self._host)
            except VonageRestError as exc:
                logger.warning("vonage call %s: %s; closing the socket instead", self._uuid, exc)
            else:
                logger.info("vonage call %s: %s", self._uuid, "hung up" if ended else "had ended")
                return
        await self._close()

    async def transfer(self, to: str, timeout: float) -> bool:  # noqa: ASYNC109
        if self._rest is None:
            logger.error(
                "vonage call %s: cannot transfer without VONAGE_APPLICATION_ID and "
                "VONAGE_PRIVATE_KEY",
                self._uuid,
            )
            return False
        try:
            ncco = vonage.transfer_ncco(to, self._caller_id, timeout)
        except ValueError as exc:
            logger.error("vonage call %s: %s", self._uuid, exc)
            return False
        await self._rest.transfer_ncco(self._uuid, ncco, self._host)
        return True

    async def send_digits(self, digits: str) -> bool:
        if self._rest is None:
            logger.error(
                "vonage call %s: cannot send DTMF without VONAGE_APPLICATION_ID", self._uuid
            )
            return False
        try:
            await self._rest.send_digits(self._uuid, digits, self._host)
        except VonageRestError as exc:
            logger.error("vonage call %s: %s", self._uuid, exc)
            return False
        return True

    async def end_with_message(self, text: str) -> bool:
        """Speak `text` with Vonage's own TTS and end the call (a transfer to a talk NCCO)."""
        if self._rest is None:
            return False
        try:
            await self._rest.transfer_ncco(self._uuid, vonage.talk_ncco(text), self._host)
        except VonageRestError as exc:
            logger.error("vonage call %s: could not speak the apology: %s", self._uuid, exc)
            return False
        return True


def routes(host: CallHost) -> list[BaseRoute]:
    settings = host.settings
    if not settings.vonage_enabled:
        logger.warning("Vonage is disabled: %s", DISABLED_TEXT.split(": ", 1)[1])
        return [
            Route(paths.VONAGE_ANSWER, _disabled, methods=["GET", "POST"]),
            Route(paths.VONAGE_EVENT, _disabled, methods=["GET", "POST"]),
            WebSocketRoute(paths.VONAGE_STREAM, _disabled_ws),
        ]
    secret = settings.vonage_signature_secret
    secret_text = secret.get_secret_value() if secret is not None else None
    if secret_text is None:
        logger.warning(
            "VONAGE_SIGNATURE_SECRET is not set and VONAGE_ALLOW_UNSIGNED is on: Vonage webhooks "
            "are accepted without checking who sent them"
        )
    elif len(secret_text.encode()) < 32:
        logger.warning("VONAGE_SIGNATURE_SECRET is shorter than 32 bytes: consider a longer one")
    rest: VonageRest | None = None
    if settings.vonage_application_id and settings.vonage_private_key:
        rest = VonageRest(
            settings.vonage_application_id,
            settings.vonage_private_key.get_secret_value(),
            settings.vonage_api_host,
        )
    else:
        logger.warning(
            "VONAGE_APPLICATION_ID / VONAGE_PRIVATE_KEY are not set: Vonage calls end by closing "
            "their WebSocket, and transfers and outbound calls are unavailable"
        )
    rate = settings.vonage_audio_rate
    regions: OrderedDict[str, str] = OrderedDict()

    def remember_region(call_uuid: str, region_url: str) -> None:
        if rest is None:
            return
        regions[call_uuid] = rest.region_host(region_url)
        regions.move_to_end(call_uuid)
        while len(regions) > MAX_REMEMBERED_CALLS:
            regions.popitem(last=False)

    def webhook(
        handler: Callable[[Request, bytes], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            body = await webhook_body(request)
            if isinstance(body, Response):
                return body
            if secret_text is not None:
                reason = vonage.verify_signed_webhook(
                    request.headers.get("authorization"),
                    body,
                    secret_text,
                    settings.vonage_signature_max_age,
                    query=request.query_params.multi_items(),
                )
                if reason is not None:
                    logger.warning("vonage %s: refused a webhook: %s", request.url.path, reason)
                    return PlainTextResponse("invalid signature", status_code=403)
            return await handler(request, body)

        return endpoint

    async def answer(request: Request, body: bytes) -> Response:
        params: Mapping[str, Any] = request.query_params
        if request.method == "POST":
            data = _json_object(body)
            if data is None:
                return PlainTextResponse("expected a JSON object", status_code=400)
            params = data
        call_uuid = _text(params.get("uuid"))
        if not call_uuid:
            return PlainTextResponse("uuid missing", status_code=400)
        variables = host.answer_variables("vonage", request.query_params.get("vars"), call_uuid)
        if variables is None:
            return PlainTextResponse("bad call variables", status_code=403)
        if host.busy("vonage"):
            return JSONResponse(vonage.talk_ncco(BUSY_TEXT))
        caller, callee = _text(params.get("from")), _text(params.get("to"))
        remember_region(call_uuid, _text(params.get("region_url")))
        try:
            flow = host.choose_flow(request.query_params.get("flow"), callee)
        except UnknownFlow as exc:
            logger.error("vonage call %s: no flow named %s", call_uuid, exc)
            return JSONResponse(vonage.talk_ncco(REFUSAL_TEXT))
        grant = StreamGrant(
            carrier="vonage",
            call_id=call_uuid,
            flow=flow,
            caller=caller,
            callee=callee,
            variables=variables,
        )
        logger.info(
            "vonage call %s: answering from %s to %s with flow %s (conversation %s)",
            call_uuid,
            caller,
            callee,
            flow,
            _text(params.get("conversation_uuid")) or "-",
        )
        ncco = vonage.answer_ncco(
            host.stream_url(paths.VONAGE_STREAM, grant), rate, {vonage.CALL_HEADER: call_uuid}
        )
        host.prefetch(grant, rate)
        return JSONResponse(ncco)

    async def event(request: Request, body: bytes) -> Response:
        data = _json_object(body)
        if data is None:
            return PlainTextResponse("expected a JSON object", status_code=400)
        status = _text(data.get("status"))
        call_uuid = _text(data.get("uuid") or data.get("call_uuid"))
        logger.info(
            "vonage call %s: event %s%s",
            call_uuid or "-",
            status[:40] or _text(data.get("type"))[:40] or "?",
            f" ({_text(data.get('duration'))} s)" if "duration" in data else "",
        )
        if status in FINAL_STATUSES:
            regions.pop(call_uuid, None)
            duration = _text(data.get("duration"))
            host.record_hangup(
                "vonage",
                call_uuid,
                status,
                float(duration) if duration.isdigit() else None,
                from_number=_text(data.get("from")),
                to_number=_text(data.get("to")),
                variables=host.traced_variables(
                    "vonage", request.query_params.get("vars"), call_uuid
                ),
            )
        return PlainTextResponse("ok")

    async def stream(ws: WebSocket) -> None:
        def control(
            grant: StreamGrant, started: Started, close: Callable[[], Awaitable[None]]
        ) -> VonageCallControl:
            # A transfer must come from a number of ours: the one dialled on an inbound call,
            # the one the bridge called from on a call it placed (signed "direction").
            outbound = grant.variables.get("direction") == "outbound"
            return VonageCallControl(
                rest,
                started.call_id,
                region_host=regions.get(started.call_id),
                caller_id=grant.caller if outbound else grant.callee,
                close=close,
            )

        await host.serve_stream(
            ws, carrier="vonage", stream=vonage.VonageStream(rate), control_for=control
        )

    return [
        Route(paths.VONAGE_ANSWER, webhook(answer), methods=["GET", "POST"]),
        Route(paths.VONAGE_EVENT, webhook(event), methods=["POST"]),
        WebSocketRoute(paths.VONAGE_STREAM, stream),
    ]


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _text(value: object) -> str:
    """A webhook field as text; absent and null fields are empty."""
    return "" if value is None else str(value)


async def _disabled(request: Request) -> Response:
    return PlainTextResponse(DISABLED_TEXT, status_code=503)


async def _disabled_ws(ws: WebSocket) -> None:
    await ws.close(code=1008)
