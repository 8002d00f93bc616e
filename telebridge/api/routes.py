"""The `/v1/` routes. Every request passes the same gate, in this order: the API is enabled
(403), the key (401), the key's rate (429), the method (405), the body's size (413) and shape
(400); then the `CallDesk` acts. Every answer is JSON; an unexpected failure is logged with its
traceback and answered 500 without one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from telebridge.api import bodies
from telebridge.api.auth import ApiKeys, RateLimiter, retry_after
from telebridge.api.bodies import MAX_BODY_BYTES, ApiError
from telebridge.api.desk import CallDesk
from telebridge.api.idempotency import Answer, IdempotencyStore, SharedAnswers
from telebridge.api.openapi import openapi

__all__ = ["api_routes"]

logger = logging.getLogger(__name__)

DISABLED = (
    "the call API is off: set TELEBRIDGE_API_KEY (one key, or several separated by commas) "
    "and restart the bridge, then send Authorization: Bearer <key>"
)
_CALL_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}")

Handler = Callable[["Call"], Awaitable[Response]]


class Call:
    """One API request past the gate: who sent it and its body as a JSON object."""

    def __init__(self, request: Request, client: str, body: dict[str, Any]) -> None:
        self.request = request
        self.client = client
        self.body = body

    @property
    def call_id(self) -> str:
        call_id = str(self.request.path_params.get("call_id", ""))
        if not _CALL_ID.fullmatch(call_id):
            raise ApiError(404, "no such call")
        return call_id


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


class Gate:
    """Enabled, authorised, within the rate, within the size: or the answer that says which."""

    def __init__(self, keys: ApiKeys | None, limiter: RateLimiter) -> None:
        self._keys = keys
        self._limiter = limiter

    def client(self, request: Request) -> str:
        if self._keys is None:
            raise ApiError(403, DISABLED)
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        index = None
        if scheme.lower() == "bearer" and presented.strip():
            index = self._keys.match(presented.strip())
        if index is None:
            # Guessing keys costs as much rate as using one.
            address = request.client.host if request.client else "?"
            self._check_rate(f"addr:{address}")
            raise ApiError(
                401,
                "a valid API key is needed: send Authorization: Bearer <TELEBRIDGE_API_KEY>",
                headers={"WWW-Authenticate": 'Bearer realm="telebridge"'},
            )
        client = f"key:{index}"
        self._check_rate(client)
        return client

    def _check_rate(self, client: str) -> None:
        wait = self._limiter.take(client)
        if wait > 0:
            raise ApiError(
                429, "too many requests: slow down", headers={"Retry-After": retry_after(wait)}
            )

    @staticmethod
    async def body(request: Request) -> dict[str, Any]:
        if request.method in ("GET", "HEAD"):
            return {}
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            raise ApiError(413, f"the body is over {MAX_BODY_BYTES // 1024} KB")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("", "application/json"):
            raise ApiError(415, "send the body as Content-Type: application/json")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                raise ApiError(413, f"the body is over {MAX_BODY_BYTES // 1024} KB")
        return bodies.read_object(bytes(raw))


def api_routes(
    desk: CallDesk,
    keys: ApiKeys | None,
    limiter: RateLimiter,
    shared: Callable[[], SharedAnswers | None] | None = None,
) -> list[BaseRoute]:
    """The `/v1/` routes on `desk`; without `keys` every one answers 403. `shared` gives the
    cluster's memory of Idempotency-Key answers (None: this process's alone)."""
    gate = Gate(keys, limiter)
    store = IdempotencyStore(shared=shared)

    def endpoint(handlers: dict[str, Handler]) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            try:
                client = gate.client(request)
                handler = handlers.get(request.method)
                if handler is None:
                    allowed = ", ".join(handlers)
                    raise ApiError(405, f"use {allowed}", headers={"Allow": allowed})
                response = await handler(Call(request, client, await gate.body(request)))
            except ApiError as exc:
                if exc.status >= 500:
                    logger.warning("api %s %s: %s", request.method, request.url.path, exc)
                return _json(exc.status, exc.body(), exc.headers)
            except Exception:
                logger.exception("api %s %s failed", request.method, request.url.path)
                return _json(500, {"error": "internal error: see the bridge's log"})
            logger.info("api %s %s by %s: %d", request.method, request.url.path, client,
                        response.status_code)  # fmt: skip
            return response

        return serve

    async def place(call: Call) -> Response:
        request = bodies.place_call(call.body)

        async def work() -> Answer:
            return Answer(201, await desk.place(request), {})

        key = call.request.headers.get("idempotency-key")
        if key is None:
            answer = await work()
            return _json(answer.status, answer.body)
        store.check_key(key)
        answer, replayed = await store.run(call.client, key, call.body, work)
        headers = dict(answer.headers)
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return _json(answer.status, answer.body, headers)

    async def list_calls(call: Call) -> Response:
        return _json(200, {"calls": await desk.live_calls()})

    async def one_call(call: Call) -> Response:
        found = await desk.find(call.call_id)
        if found is None:
            raise ApiError(404, "no such call")
        return _json(200, found)

    async def say(call: Call) -> Response:
        request = bodies.say(call.body)
        await desk.say(call.call_id, request)
        return _json(202, {"call_id": call.call_id, "status": "queued"})

    async def hangup(call: Call) -> Response:
        request = bodies.hangup(call.body)
        await desk.hangup(call.call_id, request)
        return _json(202, {"call_id": call.call_id, "status": "ending"})

    async def transfer(call: Call) -> Response:
        request = bodies.transfer(call.body)
        await desk.transfer(call.call_id, request)
        return _json(202, {"call_id": call.call_id, "status": "transferring", "to": request.to})

    async def description(request: Request) -> Response:
        if keys is None:
            return _json(403, {"error": DISABLED})
        return _json(200, openapi())

    async def unknown(call: Call) -> Response:
        raise ApiError(404, f"no route {call.request.url.path}: see /v1/openapi.json")

    every = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return [
        Route("/v1/openapi.json", description, methods=["GET"]),
        Route("/v1/calls", endpoint({"GET": list_calls, "POST": place}), methods=every),
        Route("/v1/calls/{call_id}", endpoint({"GET": one_call}), methods=every),
        Route("/v1/calls/{call_id}/say", endpoint({"POST": say}), methods=every),
        Route("/v1/calls/{call_id}/hangup", endpoint({"POST": hangup}), methods=every),
        Route("/v1/calls/{call_id}/transfer", endpoint({"POST": transfer}), methods=every),
        Route("/v1/{rest:path}", endpoint({m: unknown for m in every}), methods=every),
    ]
