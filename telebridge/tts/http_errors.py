"""Typed errors for Waves' HTTP transports (SSE and sync): an HTTP status with its body, the
messages of a JSON error body, and httpx failures. The API key never gets into a message: server
text is redacted of it, and httpx exceptions are named by type, never quoted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import httpx

from telebridge.logs import redact
from telebridge.tts.errors import TTSError, WavesConnectionError, WavesServerError
from telebridge.tts.wire import refusal_error

__all__ = [
    "MAX_ERROR_BODY",
    "connection_error",
    "describe_body",
    "error_messages",
    "read_error_body",
    "status_error",
]

# How much of an error body is read: enough for any JSON error, little for an HTML page.
MAX_ERROR_BODY = 64 * 1024
# How much server text goes into one message.
_MAX_DETAIL = 300
# Failures before the request was on a connection.
_CONNECTING = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
)


def status_error(status: int, headers: Mapping[str, str], body: bytes, *, secret: str) -> TTSError:
    """The typed error for an HTTP answer `status` (not 200) with (the start of) its `body`."""
    if status in (401, 403, 429):
        return refusal_error(status, headers)
    detail, code = _detail(body, secret)
    if status == 400:
        return WavesServerError(
            f"Waves rejected the request (HTTP 400): {detail or 'no reason given'}", code=code
        )
    return WavesServerError(
        f"Waves answered HTTP {status}" + (f": {detail}" if detail else ""), code=code
    )


def error_messages(obj: object) -> list[str]:
    """The messages of a Waves JSON error: `{"error": [{"message", "path"}, ...]}`,
    `{"error": {"message"}}`, `{"error": "text"}` or `{"message": "text"}`."""
    if not isinstance(obj, dict):
        return []
    error = obj.get("error")
    if isinstance(error, str) and error.strip():
        return [error.strip()]
    if isinstance(error, dict):
        return error_messages(error)
    if isinstance(error, list):
        found = []
        for item in error:
            if isinstance(item, str) and item.strip():
                found.append(item.strip())
            elif isinstance(item, dict):
                path = item.get("path")
                found.extend(_with_path(message, path) for message in error_messages(item))
        if found:
            return found
    message = obj.get("message")
    if isinstance(message, str) and message.strip():
        return [message.strip()]
    return []


def describe_body(body: bytes, *, secret: str) -> str:
    """What a body says, for a message: the messages of a JSON error, else a short excerpt."""
    return _detail(body, secret)[0]


def connection_error(exc: httpx.HTTPError, where: str) -> WavesConnectionError:
    """`exc`, raised before Waves answered, as a `WavesConnectionError` naming `where`: the
    exception's type, never its text (which may quote a URL or a header)."""
    reason = "timed out" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
    if isinstance(exc, httpx.PoolTimeout):
        return WavesConnectionError(f"cannot connect to {where}: no free connection in time")
    if isinstance(exc, _CONNECTING):
        return WavesConnectionError(f"cannot connect to {where}: {reason}")
    return WavesConnectionError(f"no answer from {where}: {reason}")


async def read_error_body(response: httpx.Response) -> bytes:
    """The first `MAX_ERROR_BODY` bytes of an error answer (less if the connection breaks)."""
    body = bytearray()
    try:
        async for piece in response.aiter_bytes():
            body += piece
            if len(body) >= MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass  # the status says enough; what came of the body is kept
    finally:
        await response.aclose()
    return bytes(body[:MAX_ERROR_BODY])


def _with_path(message: str, path: object) -> str:
    if isinstance(path, list) and path and all(isinstance(p, str | int) for p in path):
        return ".".join(str(p) for p in path) + ": " + message
    return message


def _detail(body: bytes, secret: str) -> tuple[str, str | None]:
    """The messages of a JSON body (or a short excerpt of any other) and its error code."""
    text = body[:MAX_ERROR_BODY].decode("utf-8", "replace")
    code = None
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    messages = error_messages(obj)
    if isinstance(obj, dict):
        nested = obj.get("error")
        for source in (obj, nested if isinstance(nested, dict) else {}):
            found = source.get("error_code", source.get("code"))
            if code is None and isinstance(found, str) and found:
                code = found
    detail = "; ".join(messages) if messages else text
    detail = redact(" ".join(detail.split()), secret)
    if len(detail) > _MAX_DETAIL:
        detail = detail[: _MAX_DETAIL - 3] + "..."
    return detail, None if code is None else _short(redact(code, secret))


def _short(text: str) -> str:
    return text if len(text) <= 64 else text[:61] + "..."
