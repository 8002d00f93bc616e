"""A local stand-in for Plivo's REST API: answers like Plivo and records every request.

Covers what the bridge uses: hang up (`DELETE .../Call/{uuid}/`), transfer (`POST .../Call/{uuid}/`)
and outbound calls (`POST .../Call/`), with Basic auth checked as Plivo does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class RecordedRequest:
    method: str
    path: str
    body: dict[str, Any]
    at: float


@dataclass
class FakePlivoApi:
    auth_id: str
    auth_token: str
    requests: list[RecordedRequest] = field(default_factory=list)
    ended: set[str] = field(default_factory=set)
    on_hangup: Callable[[str], Coroutine[Any, Any, None]] | None = None
    on_transfer: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
    fail_status: int | None = None  # answer every request with this status
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def app(self) -> Starlette:
        base = "/v1/Account/{auth_id}/Call"
        return Starlette(
            routes=[
                Route(base + "/", self._create, methods=["POST"]),
                Route(base + "/{call_uuid}/", self._call, methods=["POST", "DELETE"]),
            ]
        )

    def _authorised(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.auth_id}:{self.auth_token}".encode()).decode()
        return request.headers.get("authorization") == f"Basic {expected}" and (
            request.path_params["auth_id"] == self.auth_id
        )

    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_raw": raw.decode(errors="replace")}
        entry = RecordedRequest(request.method, request.url.path, body, time.monotonic())
        self.requests.append(entry)
        return entry

    def _refusal(self, request: Request) -> Response | None:
        if not self._authorised(request):
            return JSONResponse(
                {"api_id": str(uuid.uuid4()), "error": "authentication failed"}, 401
            )
        if self.fail_status is not None:
            return JSONResponse({"api_id": str(uuid.uuid4()), "error": "failure"}, self.fail_status)
        return None

    async def _create(self, request: Request) -> Response:
        await self._record(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        return JSONResponse(
            {
                "api_id": str(uuid.uuid4()),
                "message": "call fired",
                "request_uuid": str(uuid.uuid4()),
            },
            201,
        )

    async def _call(self, request: Request) -> Response:
        entry = await self._record(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        call_uuid = request.path_params["call_uuid"]
        if request.method == "DELETE":
            if call_uuid in self.ended:
                return JSONResponse({"api_id": str(uuid.uuid4()), "error": "not found"}, 404)
            self.ended.add(call_uuid)
            if self.on_hangup is not None:
                # Plivo ends the call after answering, not before.
                task = asyncio.create_task(self.on_hangup(call_uuid))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return Response(status_code=204)
        if self.on_transfer is not None:
            await self.on_transfer(call_uuid, entry.body)
        return JSONResponse({"api_id": str(uuid.uuid4()), "message": "call transferred"}, 202)
