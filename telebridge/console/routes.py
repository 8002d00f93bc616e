"""The web console's routes: its pages and static files, the JSON views (live calls, their event
stream, history, one call's timeline, flows) and the actions on a live call (say, hang up,
through the call API's desk). Everything but the login form passes the gate first; errors are
`{"error": ...}` as in the call API. A call's timeline is the call log's (CallLog.timeline)
in the console's kinds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from telebridge import e164
from telebridge.api import bodies
from telebridge.api.bodies import ApiError
from telebridge.api.desk import CallDesk
from telebridge.api.routes import Gate as ApiGate
from telebridge.calllog import CallLog
from telebridge.console.feed import LiveFeed
from telebridge.console.gate import STATIC, ConsoleGate, page_headers
from telebridge.console.graph import flow_graphs
from telebridge.flows.library import FlowLibrary
from telebridge.settings import Settings

__all__ = ["ConsoleHost", "console_routes"]

logger = logging.getLogger(__name__)

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
_STATIC_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.[a-z]+")
_ID = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
MAX_HISTORY = 1000
# The event stream: a change is sent this long after it (a burst of changes is one message),
# and the calls at least every second; a stream ends after STREAM_SECONDS, so the browser
# reconnects through the gate (an expired session stops there).
DEBOUNCE = 0.1
PING_EVERY = 15.0
STREAM_SECONDS = 300.0


class ConsoleHost(Protocol):
    """What the console uses of the running bridge."""

    @property
    def settings(self) -> Settings: ...
    @property
    def flows(self) -> FlowLibrary: ...
    @property
    def calllog(self) -> CallLog | None: ...
    @property
    def draining(self) -> bool: ...


Endpoint = Callable[[Request], Awaitable[Response]]


def console_routes(
    host: ConsoleHost, desk: CallDesk, gate: ConsoleGate, feed: LiveFeed
) -> list[BaseRoute]:
    """The routes under /console (but the browser phone's, which its carrier module has)."""

    def gated(handler: Endpoint) -> Endpoint:
        async def serve(request: Request) -> Response:
            refusal = await gate.check(request)
            if refusal is not None:
                return refusal
            try:
                return await handler(request)
            except ApiError as exc:
                return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
            except Exception:
                logger.exception("console %s %s failed", request.method, request.url.path)
                return JSONResponse({"error": "internal error: see the bridge's log"}, 500)

        return serve

    def page(name: str) -> Endpoint:
        async def serve(request: Request) -> Response:
            return _file(STATIC / name)

        return serve

    async def static(request: Request) -> Response:
        name = str(request.path_params["name"])
        path = STATIC / name
        if not _STATIC_NAME.fullmatch(name) or path.suffix not in _TYPES or not path.is_file():
            return Response("no such file", 404, media_type="text/plain")
        return _file(path)

    async def live(request: Request) -> Response:
        return JSONResponse(feed.snapshot(await desk.live_calls()))

    async def events(request: Request) -> Response:
        return StreamingResponse(
            _event_stream(host, desk, feed),
            media_type="text/event-stream",
            headers={**page_headers(), "X-Accel-Buffering": "no"},
        )

    async def history(request: Request) -> Response:
        query = _history_query(request)
        log = host.calllog
        if log is None:
            return JSONResponse({"calls": []})
        records = await asyncio.to_thread(log.list_calls, **query)
        calls = []
        for record in reversed(records):
            found = e164.numbers_of(record.to_json())
            del found["notes"], found["webhooks"]
            calls.append(found)
        return JSONResponse({"calls": calls})

    async def one_call(request: Request) -> Response:
        carrier, call_id = _ids(request, "carrier"), _ids(request, "call_id")
        log = host.calllog
        record = timeline = None
        if log is not None:
            record = await asyncio.to_thread(log.get, carrier, call_id)
            timeline = await asyncio.to_thread(log.timeline, carrier, call_id)
        if record is None or timeline is None:
            raise ApiError(404, "no such call in the call log")
        shown = {"call": e164.numbers_of(record.to_json()), "timeline": console_timeline(timeline)}
        return JSONResponse(shown)

    async def flows(request: Request) -> Response:
        settings = host.settings
        graphs = await asyncio.to_thread(
            flow_graphs, host.flows, settings.telebridge_flows_dir,
            agent_secret=settings.telebridge_agent_secret is not None,
        )  # fmt: skip
        return JSONResponse({"flows": graphs})

    async def say(request: Request) -> Response:
        call_id = _ids(request, "call_id")
        asked = bodies.say(await _json_body(request))
        await desk.say(call_id, asked)
        return JSONResponse({"call_id": call_id, "status": "queued"}, 202)

    async def hangup(request: Request) -> Response:
        call_id = _ids(request, "call_id")
        asked = bodies.hangup(await _json_body(request))
        await desk.hangup(call_id, asked)
        return JSONResponse({"call_id": call_id, "status": "ending"}, 202)

    async def unknown(request: Request) -> Response:
        raise ApiError(404, f"no route {request.method} {request.url.path}")

    async def no_page(request: Request) -> Response:
        return Response("no such page", 404, media_type="text/plain")

    every = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return [
        *gate.login_routes(),
        Route("/console", gated(page("console.html")), methods=["GET"]),
        Route("/console/phone", gated(page("phone.html")), methods=["GET"]),
        Route("/console/static/{name}", gated(static), methods=["GET"]),
        Route("/console/api/live", gated(live), methods=["GET"]),
        Route("/console/api/events", gated(events), methods=["GET"]),
        Route("/console/api/history", gated(history), methods=["GET"]),
        Route("/console/api/flows", gated(flows), methods=["GET"]),
        Route("/console/api/calls/{call_id}/say", gated(say), methods=["POST"]),
        Route("/console/api/calls/{call_id}/hangup", gated(hangup), methods=["POST"]),
        Route("/console/api/calls/{carrier}/{call_id}", gated(one_call), methods=["GET"]),
        Route("/console/api/{rest:path}", gated(unknown), methods=every),
        Route("/console/{rest:path}", gated(no_page), methods=["GET"]),
    ]


def _file(path: Path) -> Response:
    if not path.is_file():
        return Response("no such file", 404, media_type="text/plain")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=page_headers())


def _ids(request: Request, name: str) -> str:
    value = str(request.path_params.get(name, ""))
    if not _ID.fullmatch(value):
        raise ApiError(404, "no such call")
    return value


async def _json_body(request: Request) -> dict[str, Any]:
    """The body of a state-changing request, which must say it is JSON (a form from another
    site cannot)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, "send the body as Content-Type: application/json")
    return await ApiGate.body(request)


def _history_query(request: Request) -> dict[str, Any]:
    """The call log's filters from the query; ApiError 400 naming a bad one."""
    params = request.query_params
    query: dict[str, Any] = {}
    for name in ("carrier", "flow"):
        value = params.get(name, "").strip()
        if value and not _NAME.fullmatch(value):
            raise ApiError(400, f"{name}: letters, digits, '.', '_' or '-' (at most 128)")
        query[name] = value or None
    outcome = params.get("outcome", "").strip()
    if len(outcome) > 128 or not outcome.isprintable():
        raise ApiError(400, "outcome: at most 128 printable characters")
    query["outcome"] = outcome or None
    for name in ("since", "until"):
        query[name] = _time(name, params.get(name, "").strip())
    limit = params.get("limit", "").strip() or "100"
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_HISTORY:
        raise ApiError(400, f"limit: a whole number from 1 to {MAX_HISTORY}")
    query["limit"] = int(limit)
    return query


def _time(name: str, text: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"{name}: an ISO-8601 time, e.g. 2024-05-01T09:30:00Z") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def _event_stream(host: ConsoleHost, desk: CallDesk, feed: LiveFeed) -> AsyncIterator[str]:
    """`calls` events: at once, on every change (debounced) and at least every second."""
    began = pinged = time.monotonic()
    yield "retry: 2000\n\n"
    while not host.draining and time.monotonic() - began < STREAM_SECONDS:
        version = feed.version
        snapshot = json.dumps(feed.snapshot(await desk.live_calls()), separators=(",", ":"))
        yield f"event: calls\ndata: {snapshot}\n\n"
        await feed.wait_change(version, 1.0)
        if feed.version != version:
            await asyncio.sleep(DEBOUNCE)
        if time.monotonic() - pinged >= PING_EVERY:
            pinged = time.monotonic()
            yield ": ping\n\n"


# Notes of the call log (server/stream.py) the timeline shows as their own kinds.
_NOTE_KINDS = {"barge_in": "barge_in", "played": "mark", "transfer": "transfer",
               "hangup": "hangup", "ended_by": "ended_by"}  # fmt: skip


def console_timeline(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The call log's timeline of a call in the console's kinds: `started`, `step`, `prompt`
    (`text`, `ttfb_ms`), `digits`, `barge_in`, `webhook`, `mark`, `transfer`, `hangup`,
    `ended_by`, `ended`, and `note` (`note`: its own kind) for the rest."""
    shown: list[dict[str, Any]] = []
    prompts: dict[Any, dict[str, Any]] = {}  # by utterance, waiting for their first byte
    for event in events:
        kind, fixed = event["kind"], {"at": event["at"], "step": event["step"]}
        if kind != "note":
            details = {k: v for k, v in event.items() if k not in fixed and k != "kind"}
            if kind == "vars":
                shown.append({**details, **fixed, "kind": "note", "note": "vars"})
            else:
                shown.append({**details, **fixed, "kind": kind})
            continue
        note, data = event.get("note"), event.get("data") or {}
        if note == "prompt":
            entry = {**data, **fixed, "kind": "prompt", "ttfb_ms": None}
            prompts[data.get("utterance")] = entry
            shown.append(entry)
        elif note == "tts_first_byte":
            waiting = prompts.pop(data.get("utterance"), None)
            if waiting is not None:
                waiting["ttfb_ms"] = data.get("ms")
            else:  # streamed speech (an agent step): no text of its own
                shown.append({"utterance": data.get("utterance"), **fixed, "kind": "prompt",
                              "text": None, "ttfb_ms": data.get("ms")})  # fmt: skip
        elif note in _NOTE_KINDS:
            shown.append({**data, **fixed, "kind": _NOTE_KINDS[note]})
        else:
            shown.append({**data, **fixed, "kind": "note", "note": note})
    return shown
