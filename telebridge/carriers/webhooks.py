"""What every carrier's webhooks share: the body-size limit and its guard, and the busy text."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

MAX_WEBHOOK_BYTES = 64 * 1024
BUSY_TEXT = "All our lines are busy. Please call again later."


async def webhook_body(request: Request) -> bytes | Response:
    """The webhook's body, or the 413 answer when it is, or says it is, over MAX_WEBHOOK_BYTES."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_WEBHOOK_BYTES):
        return _too_large()
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        return _too_large()
    return body


def _too_large() -> Response:
    return PlainTextResponse("request too large", status_code=413)
