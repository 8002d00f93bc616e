"""The operators' routes: `/healthz` (the process answers), `/readyz` (it can take calls, and why
not, and what works only in part: a call log whose database is away, a cluster whose Redis is)
and `/metrics` (the bridge's Prometheus figures)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from telebridge.server.bridge import Bridge


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def ops_routes(bridge: Bridge) -> list[BaseRoute]:
    def degraded() -> dict[str, list[str]]:
        # What works, but not fully: calls go on and the bridge stays ready.
        found = [
            bridge.calllog.degraded if bridge.calllog is not None else None,
            bridge.cluster.degraded if bridge.cluster is not None else None,
        ]
        why = [reason for reason in found if reason]
        return {"degraded": why} if why else {}

    async def readyz(request: Request) -> Response:
        if bridge.ready:
            return JSONResponse({"status": "ready", "calls": len(bridge.calls), **degraded()})
        if bridge.draining:
            reason = "draining"
        elif bridge.guard is not None and bridge.guard.state == "refused":
            reason = "waves refuses the key"
        else:
            reason = "waves failing"
        body = {"status": "unavailable", "reason": reason, **degraded()}
        return JSONResponse(body, status_code=503)

    async def metrics(request: Request) -> Response:
        return Response(bridge.metrics.render(), media_type="text/plain; version=0.0.4")

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
