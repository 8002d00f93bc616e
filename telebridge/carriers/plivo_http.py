"""Plivo's I/O edge: the answer, hangup, stream-status and transfer webhooks and the stream route.

Every webhook is checked against `X-Plivo-Signature-V3` computed over the public URL
(`TELEBRIDGE_PUBLIC_URL` + path + query), never the Host header a proxy forwarded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from telebridge.call.events import Started
from telebridge.carriers import paths, plivo
from telebridge.carriers.host import CallHost
from telebridge.carriers.plivo_rest import PlivoRest
from telebridge.carriers.webhooks import BUSY_TEXT, webhook_body
from telebridge.flows.library import UnknownFlow
from telebridge.tokens import PLIVO_TRANSFER, StreamGrant, TokenError, sign_claims, verify_claims

# Plivo fetches a transfer's XML at once; a token older than this is not honoured.
TRANSFER_TTL = 3600.0

logger = logging.getLogger(__name__)

XML = "application/xml"


class PlivoCallControl:
    """Hang up and transfer one Plivo call through the REST API."""

    def __init__(self, host: CallHost, rest: PlivoRest, call_uuid: str) -> None:
        self._host = host
        self._rest = rest
        self._uuid = call_uuid

    async def hangup(self) -> None:
        ended = await self._rest.hangup(self._uuid)
        logger.info("plivo call %s: %s", self._uuid, "hung up" if ended else "had already ended")

    async def transfer(self, to: str, timeout: float) -> bool:  # noqa: ASYNC109
        claims = {"to": to, "id": self._uuid, "t": int(timeout), "exp": time.time() + TRANSFER_TTL}
        token = sign_claims(self._host.keys.key(PLIVO_TRANSFER, "plivo"), claims)
        await self._rest.transfer(
            self._uuid, self._host.public_url(f"{paths.PLIVO_TRANSFER}?t={token}")
        )
        return True

    async def send_digits(self, digits: str) -> bool:
        return False  # Plivo's stream carries tones itself (`PlivoStream.send_digits`)

    async def end_with_message(self, text: str) -> bool:
        """Speak `text` with Plivo's own TTS and hang up (the A leg moves to `<Speak>` XML)."""
        claims = {"say": text, "id": self._uuid, "exp": time.time() + TRANSFER_TTL}
        token = sign_claims(self._host.keys.key(PLIVO_TRANSFER, "plivo"), claims)
        try:
            await self._rest.transfer(
                self._uuid, self._host.public_url(f"{paths.PLIVO_TRANSFER}?t={token}")
            )
        except Exception as exc:
            logger.error("plivo call %s: could not speak the apology: %s", self._uuid, exc)
            return False
        return True


def routes(host: CallHost) -> list[BaseRoute]:
    settings = host.settings
    if not settings.plivo_enabled:
        logger.warning(
            "Plivo is disabled: set PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN to take Plivo calls"
        )
        return [
            Route(path, _disabled, methods=["GET", "POST"])
            for path in (
                paths.PLIVO_ANSWER,
                paths.PLIVO_HANGUP,
                paths.PLIVO_STREAM_STATUS,
                paths.PLIVO_TRANSFER,
            )
        ] + [WebSocketRoute(paths.PLIVO_STREAM, _disabled_ws)]
    assert settings.plivo_auth_id and settings.plivo_auth_token
    auth_token = settings.plivo_auth_token.get_secret_value()
    rest = PlivoRest(settings.plivo_auth_id, auth_token, settings.plivo_api_url)

    def signed(
        handler: Callable[[Request, dict[str, str]], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            body = await webhook_body(request)
            if isinstance(body, Response):
                return body
            params: dict[str, str] = {}
            if request.method == "POST":
                try:
                    pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=200)
                except (UnicodeDecodeError, ValueError):
                    return PlainTextResponse("bad form body", status_code=400)
                params = dict(pairs)
            url = host.public_url(request.url.path)
            if request.url.query:
                url += "?" + request.url.query
            ok = plivo.signature_valid(
                method=request.method,
                url=url,
                params=params,
                signature=request.headers.get("x-plivo-signature-v3"),
                nonce=request.headers.get("x-plivo-signature-v3-nonce"),
                auth_token=auth_token,
            )
            if not ok:
                logger.warning(
                    "plivo %s: refused a request without a valid signature", request.url.path
                )
                return PlainTextResponse("invalid signature", status_code=403)
            if request.method == "GET":
                params = dict(request.query_params)
            return await handler(request, params)

        return endpoint

    async def answer(request: Request, params: dict[str, str]) -> Response:
        call_uuid = params.get("CallUUID", "")
        if params.get("CallStatus") == "completed":
            logger.info("plivo call %s: completed (answer URL used as hangup URL)", call_uuid)
            return Response(plivo.empty_xml(), media_type=XML)
        if not call_uuid:
            return PlainTextResponse("CallUUID missing", status_code=400)
        variables = host.answer_variables("plivo", request.query_params.get("vars"), call_uuid)
        if variables is None:
            return PlainTextResponse("bad call variables", status_code=403)
        if host.busy("plivo"):
            return Response(plivo.refusal_xml(BUSY_TEXT, "busy"), media_type=XML)
        caller, callee = params.get("From", ""), params.get("To", "")
        try:
            flow = host.choose_flow(request.query_params.get("flow"), callee)
        except UnknownFlow as exc:
            logger.error("plivo call %s: no flow named %s", call_uuid, exc)
            return Response(plivo.refusal_xml("Sorry, this number is not set up."), media_type=XML)
        grant = StreamGrant(
            carrier="plivo",
            call_id=call_uuid,
            flow=flow,
            caller=caller,
            callee=callee,
            variables=variables,
        )
        logger.info(
            "plivo call %s: answering from %s to %s with flow %s", call_uuid, caller, callee, flow
        )
        xml = plivo.answer_xml(
            host.stream_url(paths.PLIVO_STREAM, grant),
            host.public_url(paths.PLIVO_STREAM_STATUS),
        )
        host.prefetch(grant, plivo.PlivoStream.sample_rate)
        return Response(xml, media_type=XML)

    async def hangup(request: Request, params: dict[str, str]) -> Response:
        cause = params.get("HangupCauseName") or params.get("HangupCause") or ""
        logger.info(
            "plivo call %s: hangup (%s, %s s)",
            params.get("CallUUID"),
            cause,
            params.get("Duration"),
        )
        duration = params.get("Duration", "")
        host.record_hangup(
            "plivo",
            params.get("CallUUID", ""),
            cause,
            float(duration) if duration.isdigit() else None,
            from_number=params.get("From", ""),
            to_number=params.get("To", ""),
            variables=host.traced_variables(
                "plivo", request.query_params.get("vars"), params.get("CallUUID", "")
            ),
        )
        return PlainTextResponse("ok")

    async def stream_status(request: Request, params: dict[str, str]) -> Response:
        logger.info("plivo stream status: %s", {k: params[k] for k in sorted(params)[:12]})
        return PlainTextResponse("ok")

    async def transfer(request: Request, params: dict[str, str]) -> Response:
        try:
            key = host.keys.key(PLIVO_TRANSFER, "plivo")
            claims = verify_claims(key, request.query_params.get("t", ""))
            if float(claims.get("exp", 0)) < time.time():
                raise TokenError("expired")
        except (TokenError, TypeError, ValueError):
            return PlainTextResponse("bad transfer token", status_code=403)
        if "say" in claims:
            return Response(plivo.refusal_xml(str(claims["say"]), "error"), media_type=XML)
        if "to" not in claims:
            return PlainTextResponse("bad transfer token", status_code=403)
        ring = claims.get("t")
        timeout = int(ring) if isinstance(ring, int) and ring > 0 else None
        return Response(plivo.dial_xml(str(claims["to"]), timeout), media_type=XML)

    async def stream(ws: WebSocket) -> None:
        def control(
            grant: StreamGrant, started: Started, _close: Callable[[], Awaitable[None]]
        ) -> PlivoCallControl:
            return PlivoCallControl(host, rest, started.call_id)  # ends calls through REST

        await host.serve_stream(
            ws, carrier="plivo", stream=plivo.PlivoStream(), control_for=control
        )

    return [
        Route(paths.PLIVO_ANSWER, signed(answer), methods=["GET", "POST"]),
        Route(paths.PLIVO_HANGUP, signed(hangup), methods=["POST"]),
        Route(paths.PLIVO_STREAM_STATUS, signed(stream_status), methods=["POST"]),
        Route(paths.PLIVO_TRANSFER, signed(transfer), methods=["GET", "POST"]),
        WebSocketRoute(paths.PLIVO_STREAM, stream),
    ]


async def _disabled(request: Request) -> Response:
    return PlainTextResponse(
        "Plivo is not configured on this bridge (PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN)", status_code=503
    )


async def _disabled_ws(ws: WebSocket) -> None:
    await ws.close(code=1008)
