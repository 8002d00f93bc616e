"""A local stand-in for Plivo's REST API: answers like Plivo and records every request.

Covers what telebridge uses: hang up (`DELETE .../Call/{uuid}/`), transfer
(`POST .../Call/{uuid}/`), outbound calls (`POST .../Call/`), cancelling one not answered yet
(`DELETE .../Request/{request_uuid}/`), the account (`GET .../`),
applications (list, create, get, update) and numbers (get, attach to an application), with Basic
auth checked as Plivo does. It can also fail as a carrier does: an error status, a body that is
not JSON (a proxy's page), or no answer in time, for every request or only some.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def hold(request: Request, delay: float) -> None:
    """Wait `delay` seconds before answering `request` (its body already read), or less if the
    client gives up first: a client that timed out must not hold the server's shutdown."""
    if delay <= 0:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            while (await request.receive())["type"] != "http.disconnect":
                pass


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
    # Answer with this status every request, or those fail_only finds.
    fail_status: int | None = None
    # With fail_status: this body (text/html) instead of Plivo's JSON error, e.g. a proxy's page.
    fail_body: str | None = None
    # Only requests whose "METHOD /path" this regular expression finds fail or are held.
    fail_only: str | None = None
    # Seconds to hold each request before answering it (a carrier that answers too late).
    delay: float = 0.0
    # Called (in a task, after the answer) for every call created, with its request and uuid.
    on_create: Callable[[RecordedRequest, str], Coroutine[Any, Any, None]] | None = None
    # Statuses to answer the next creates with instead of 201, first first (e.g. [429]).
    create_statuses: list[int] = field(default_factory=list)
    # Applications by app_id and numbers (digits) as Plivo shows them.
    applications: dict[str, dict[str, Any]] = field(default_factory=dict)
    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def app(self) -> Starlette:
        account = "/v1/Account/{auth_id}"
        base = account + "/Call"
        return Starlette(
            routes=[
                Route(account + "/", self._account, methods=["GET"]),
                Route(base + "/", self._create, methods=["POST"]),
                Route(base + "/{call_uuid}/", self._call, methods=["POST", "DELETE"]),
                Route(account + "/Request/{request_uuid}/", self._cancel, methods=["DELETE"]),
                Route(account + "/Application/", self._applications, methods=["GET", "POST"]),
                Route(
                    account + "/Application/{app_id}/", self._application, methods=["GET", "POST"]
                ),
                Route(account + "/Number/{number}/", self._number, methods=["GET", "POST"]),
            ]
        )

    def calls_to(self, path_end: str) -> list[RecordedRequest]:
        """Recorded requests whose path ends with `path_end` (e.g. "/Call/")."""
        return [r for r in self.requests if r.path.endswith(path_end)]

    def add_application(self, name: str, **fields: Any) -> str:
        """An existing application, with Plivo's defaults for fields not given."""
        app_id = str(len(self.applications) + 1).rjust(17, "2")
        self.applications[app_id] = {
            "app_id": app_id, "app_name": name, "answer_url": "", "answer_method": "POST",
            "hangup_url": "", "hangup_method": "POST", "fallback_answer_url": "",
            "fallback_method": "POST", "message_url": "", "message_method": "POST",
            "default_app": False, "default_endpoint_app": False, "enabled": True,
            "log_incoming_messages": True, "public_uri": False,
            "sip_uri": f"sip:{app_id}@app.plivo.com", "resource_uri": self._app_uri(app_id),
            **fields,
        }  # fmt: skip
        return app_id

    def add_number(self, number: str, app_id: str | None = None) -> None:
        self.numbers[number.lstrip("+")] = {
            "number": number.lstrip("+"), "alias": None, "voice_enabled": True,
            "application": self._app_uri(app_id) if app_id else None,
        }  # fmt: skip

    def _app_uri(self, app_id: str) -> str:
        return f"/v1/Account/{self.auth_id}/Application/{app_id}/"

    def _authorised(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.auth_id}:{self.auth_token}".encode()).decode()
        return request.headers.get("authorization") == f"Basic {expected}" and (
            request.path_params["auth_id"] == self.auth_id
        )

    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else dict(request.query_params)
        except ValueError:
            body = {"_raw": raw.decode(errors="replace")}
        entry = RecordedRequest(request.method, request.url.path, body, time.monotonic())
        self.requests.append(entry)
        if self._chosen(request):
            await hold(request, self.delay)
        return entry

    def _chosen(self, request: Request) -> bool:
        """Whether `request` is one that fails (or is held)."""
        wanted = self.fail_only
        return (
            wanted is None or re.search(wanted, f"{request.method} {request.url.path}") is not None
        )

    def _refusal(self, request: Request) -> Response | None:
        if not self._authorised(request):
            return JSONResponse(
                {"api_id": str(uuid.uuid4()), "error": "authentication failed"}, 401
            )
        if self.fail_status is None:
            return None
        if not self._chosen(request):
            return None
        if self.fail_body is not None:
            return Response(self.fail_body, self.fail_status, media_type="text/html")
        return JSONResponse({"api_id": str(uuid.uuid4()), "error": "failure"}, self.fail_status)

    async def _create(self, request: Request) -> Response:
        entry = await self._record(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if self.create_statuses:
            status = self.create_statuses.pop(0)
            return JSONResponse({"api_id": str(uuid.uuid4()), "error": "refused"}, status)
        request_uuid = str(uuid.uuid4())
        if self.on_create is not None:
            self._spawn(self.on_create(entry, request_uuid))
        return JSONResponse(
            {"api_id": str(uuid.uuid4()), "message": "call fired", "request_uuid": request_uuid},
            201,
        )

    async def _cancel(self, request: Request) -> Response:
        """A queued call cancelled before it was answered: 204, or 404 once it is not queued."""
        await self._record(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if request.path_params["request_uuid"] in self.ended:
            return JSONResponse({"api_id": str(uuid.uuid4()), "error": "not found"}, 404)
        self.ended.add(request.path_params["request_uuid"])
        return Response(status_code=204)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _account(self, request: Request) -> Response:
        await self._record(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        return JSONResponse(
            {
                "api_id": str(uuid.uuid4()),
                "account_type": "standard",
                "auth_id": self.auth_id,
                "cash_credits": "10.00000",
                "name": "Simulated",
                "resource_uri": f"/v1/Account/{self.auth_id}/",
            }
        )

    async def _applications(self, request: Request) -> Response:
        entry = await self._record(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if request.method == "POST":
            body = dict(entry.body)
            name = str(body.pop("app_name", ""))
            if body.pop("default_number_app", None) is not None:
                pass  # Plivo shows it as default_app
            app_id = self.add_application(name, **body)
            return JSONResponse(
                {"api_id": str(uuid.uuid4()), "app_id": app_id, "message": "created"}, 201
            )
        apps = list(self.applications.values())
        if "app_name" in request.query_params:
            apps = [a for a in apps if a["app_name"] == request.query_params["app_name"]]
        limit = int(request.query_params.get("limit", 20))
        offset = int(request.query_params.get("offset", 0))
        page = apps[offset : offset + limit]
        more = offset + limit < len(apps)
        meta = {"limit": limit, "offset": offset, "total_count": len(apps),
                "next": "more" if more else None, "previous": None}  # fmt: skip
        return JSONResponse({"api_id": str(uuid.uuid4()), "meta": meta, "objects": page})

    async def _application(self, request: Request) -> Response:
        entry = await self._record(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        app = self.applications.get(request.path_params["app_id"])
        if app is None:
            return JSONResponse({"api_id": str(uuid.uuid4()), "error": "not found"}, 404)
        if request.method == "GET":
            return JSONResponse({"api_id": str(uuid.uuid4()), **app})
        body = dict(entry.body)
        if "default_number_app" in body:
            body["default_app"] = body.pop("default_number_app")
        app.update({k: v for k, v in body.items() if k in app})
        return JSONResponse({"api_id": str(uuid.uuid4()), "message": "changed"}, 202)

    async def _number(self, request: Request) -> Response:
        entry = await self._record(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        number = self.numbers.get(request.path_params["number"].lstrip("+"))
        if number is None:
            return JSONResponse({"api_id": str(uuid.uuid4()), "error": "not found"}, 404)
        if request.method == "GET":
            return JSONResponse({"api_id": str(uuid.uuid4()), **number})
        app_id = entry.body.get("app_id")
        if app_id is not None and str(app_id) not in self.applications:
            return JSONResponse({"api_id": str(uuid.uuid4()), "error": "no such app"}, 400)
        number["application"] = self._app_uri(str(app_id)) if app_id else None
        return JSONResponse({"api_id": str(uuid.uuid4()), "message": "changed"}, 202)

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
