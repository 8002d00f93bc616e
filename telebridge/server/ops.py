"""The operators' routes: `/healthz` (the process answers), `/readyz` (it can take calls, and why
not) and `/metrics` (the bridge's Prometheus figures)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from telebridge.server.bridge import Bridge


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def ops_routes(bridge: Bridge) -> list[BaseRoute]:
    async def readyz(request: Request) -> Response:
        if bridge.ready:
            return JSONResponse({"status": "ready", "calls": len(bridge.calls)})
        if bridge.draining:
            reason = "draining"
        elif bridge.guard is not None and bridge.guard.state == "refused":
            reason = "waves refuses the key"
        else:
            reason = "waves failing"
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)

    async def metrics(request: Request) -> Response:
        return Response(bridge.metrics.render(), media_type="text/plain; version=0.0.4")

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
