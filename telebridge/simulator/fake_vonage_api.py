"""A local stand-in for Vonage's Voice REST API, over TLS, that records every request.

The SDK only speaks https to `https://{api_host}`, so the fake serves TLS with a throw-away CA
from `trustme`; point `REQUESTS_CA_BUNDLE` at `ca_path` and the SDK's host at `host`.
It answers `PUT /v1/calls/{uuid}` (hangup, transfer: 204, or 404 for uuids in `ended`),
`PUT /v1/calls/{uuid}/dtmf` (200, as Vonage answers it),
`POST /v1/calls` (201 with a new uuid), `GET /v1/calls` (an empty page), and
`GET`/`PUT /v2/applications/{id}` with Basic auth (`api_key`, `api_secret`): a PUT replaces the
stored application, as Vonage's does.

It needs `trustme`, a development dependency: tests run it; the bridge itself never does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import tempfile
import uuid as uuidlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from telebridge.simulator.fake_plivo_api import hold
from telebridge.simulator.serving import ServedApp

# No keep-alive: a pooled TLS connection left open by the SDK would hold the server's
# shutdown for asyncio's 30 s TLS close timeout.
CLOSE = {"Connection": "close"}


if TYPE_CHECKING:
    import trustme


def _new_ca() -> trustme.CA:
    import trustme  # only when a fake is made: the installed bridge does not need it

    return trustme.CA()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


@dataclass
class VonageApiFake:
    """`async with VonageApiFake() as api:` serves on 127.0.0.1 at a free port."""

    requests: list[Recorded] = field(default_factory=list)
    # Call uuids Vonage no longer knows: PUTs on them answer 404.
    ended: set[str] = field(default_factory=set)
    # Status for every PUT /v1/calls/{uuid} not in `ended` (e.g. 500 to test failures).
    update_status: int = 204
    created: list[str] = field(default_factory=list)
    # Applications by id, as Vonage shows them (without `id` and `_links`, added on GET).
    applications: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Answer with this status (before any other check) every request, or those fail_only finds:
    # with Vonage's JSON error, or with fail_body as text/html when that is set.
    fail_status: int | None = None
    fail_body: str | None = None
    # Only requests whose "METHOD /path" this regular expression finds fail or are held.
    fail_only: str | None = None
    # Seconds to hold each request before answering it (a carrier that answers too late).
    delay: float = 0.0
    api_key: str = "abcd1234"
    api_secret: str = "fake-api-secret"
    # Set on every request, for tests that wait for the bridge to call.
    received: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    # Called (in a task, after the answer) for every call created, with its request and uuid:
    # a test plays Vonage answering the call.
    on_create: Callable[[Recorded, str], Coroutine[Any, Any, None]] | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Share one CA between fakes so a single REQUESTS_CA_BUNDLE trusts them all.
    ca: trustme.CA = field(default_factory=_new_ca)
    _dir: tempfile.TemporaryDirectory[str] | None = None
    _served: ServedApp | None = None

    @property
    def host(self) -> str:
        """What to give the SDK as its api_host."""
        return f"127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> str:
        assert self._dir is not None, "not started"
        return str(Path(self._dir.name) / "ca.pem")

    def calls_to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    async def _record(self, request: Request) -> Any:
        body = await request.body()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = body.decode("utf-8", "replace")
        self.requests.append(
            Recorded(request.method, request.url.path, dict(request.headers), data)
        )
        self.received.set()
        if self._chosen(request):
            await hold(request, self.delay)
        return data

    def _chosen(self, request: Request) -> bool:
        """Whether `request` is one that fails (or is held)."""
        wanted = self.fail_only
        return (
            wanted is None or re.search(wanted, f"{request.method} {request.url.path}") is not None
        )

    def _failure(self, request: Request) -> Response | None:
        if self.fail_status is None:
            return None
        if not self._chosen(request):
            return None
        if self.fail_body is not None:
            return Response(self.fail_body, self.fail_status, media_type="text/html", headers=CLOSE)
        body = {"title": "Failed", "detail": "the fake was told to fail"}
        return JSONResponse(body, status_code=self.fail_status, headers=CLOSE)

    async def _update(self, request: Request) -> Response:
        await self._record(request)
        if (failure := self._failure(request)) is not None:
            return failure
        if request.path_params["uuid"] in self.ended:
            body = {"title": "Not Found", "detail": "call not found"}
            return JSONResponse(body, status_code=404, headers=CLOSE)
        if self.update_status == 204:
            return Response(status_code=204, headers=CLOSE)
        return JSONResponse({"title": "Failed"}, status_code=self.update_status, headers=CLOSE)

    async def _dtmf(self, request: Request) -> Response:
        await self._record(request)
        if (failure := self._failure(request)) is not None:
            return failure
        call_uuid = request.path_params["uuid"]
        if call_uuid in self.ended:
            return JSONResponse({"title": "Not Found"}, status_code=404, headers=CLOSE)
        return JSONResponse({"message": "DTMF sent", "uuid": call_uuid}, headers=CLOSE)

    async def _create(self, request: Request) -> Response:
        await self._record(request)
        if (failure := self._failure(request)) is not None:
            return failure
        call_uuid = str(uuidlib.uuid4())
        self.created.append(call_uuid)
        if self.on_create is not None:
            task = asyncio.create_task(self.on_create(self.requests[-1], call_uuid))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return JSONResponse(
            {
                "uuid": call_uuid,
                "status": "started",
                "direction": "outbound",
                "conversation_uuid": "CON-" + call_uuid,
            },
            status_code=201,
            headers=CLOSE,
        )

    async def _list(self, request: Request) -> Response:
        await self._record(request)
        if (failure := self._failure(request)) is not None:
            return failure
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return JSONResponse({"title": "Unauthorized"}, status_code=401, headers=CLOSE)
        body = {"count": 0, "page_size": 1, "record_index": 0, "_embedded": {"calls": []},
                "_links": {"self": {"href": "/v1/calls"}}}  # fmt: skip
        return JSONResponse(body, headers=CLOSE)

    async def _application(self, request: Request) -> Response:
        data = await self._record(request)
        if (failure := self._failure(request)) is not None:
            return failure
        expected = base64.b64encode(f"{self.api_key}:{self.api_secret}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse({"title": "Unauthorized"}, status_code=401, headers=CLOSE)
        app_id = request.path_params["id"]
        if app_id not in self.applications:
            return JSONResponse({"title": "Not found"}, status_code=404, headers=CLOSE)
        if request.method == "PUT":
            if not isinstance(data, dict) or not data.get("name"):
                return JSONResponse({"title": "Bad Request"}, status_code=400, headers=CLOSE)
            self.applications[app_id] = dict(data)
        links = {"self": {"href": f"/v2/applications/{app_id}"}}
        return JSONResponse(
            {"id": app_id, **self.applications[app_id], "_links": links}, headers=CLOSE
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/calls/{uuid}", self._update, methods=["PUT"]),
                Route("/v1/calls/{uuid}/dtmf", self._dtmf, methods=["PUT"]),
                Route("/v1/calls", self._create, methods=["POST"]),
                Route("/v1/calls", self._list, methods=["GET"]),
                Route("/v2/applications/{id}", self._application, methods=["GET", "PUT"]),
            ]
        )

    async def start(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="vonage-fake-")
        ca = self.ca
        ca.cert_pem.write_to_path(self.ca_path)
        cert_path = Path(self._dir.name) / "server.pem"
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
            str(cert_path)
        )
        self._served = ServedApp(self.app(), ssl_certfile=str(cert_path), lifespan="off")
        self.port = self._served.port
        await self._served.start()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._served is not None:
            await self._served.stop()
        if self._dir is not None:
            self._dir.cleanup()

    async def __aenter__(self) -> VonageApiFake:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
