"""Plivo's REST API through the official SDK, kept off the event loop.

The SDK hard-codes `https://api.plivo.com`; a requests transport adapter rebases its requests
onto `PLIVO_API_URL` so tests (and regional or proxy set-ups) reach another host unchanged. The
same adapter refuses a success whose body is not JSON (`requests.exceptions.InvalidJSONError`):
the SDK would read it as an empty answer and carry on with None.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import plivo
import requests
from plivo import exceptions as plivo_errors
from requests.adapters import HTTPAdapter

logger = logging.getLogger(__name__)

SDK_BASE = "https://api.plivo.com"

# The SDK's errors carry no status: each class stands for one (see its process_response).
_STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (plivo_errors.ValidationError, 400),
    (plivo_errors.AuthenticationError, 401),
    (plivo_errors.ForbiddenError, 403),
    (plivo_errors.GeoPermissionError, 403),  # a 403 on creating a call or a message
    (plivo_errors.ResourceNotFoundError, 404),
    (plivo_errors.InvalidRequestError, 422),  # or 405, 409: refusals all the same
    (plivo_errors.PlivoServerError, 500),
)
_STATUS_IN_TEXT = re.compile(r"\bstatus code (\d{3})\b")  # the SDK's words for other statuses


class PlivoRestError(Exception):
    """A Plivo REST request failed; the message says what and never holds credentials."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, when Plivo answered


def status_of(exc: Exception) -> int | None:
    """The HTTP status behind one of the SDK's errors, when it can be told."""
    for kind, status in _STATUS_OF:
        if isinstance(exc, kind):
            return status
    found = _STATUS_IN_TEXT.search(str(exc))
    return int(found[1]) if found else None


def failure_text(exc: Exception) -> str:
    """What went wrong with a request, in a few words: `HTTP 404: not found`, `ReadTimeout`."""
    if isinstance(exc, requests.RequestException):
        return type(exc).__name__  # never str(exc): it can hold the URL, auth id included
    status = status_of(exc)
    text = str(exc).strip()
    if status is None:
        return text or type(exc).__name__
    if not text or _STATUS_IN_TEXT.search(text):
        return f"HTTP {status}"
    return f"HTTP {status}: {text[:200]}"


class _PlivoTransport(HTTPAdapter):
    def __init__(self, base: str | None) -> None:
        super().__init__()
        self._base = base.rstrip("/") if base else None

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        url = request.url or ""
        if self._base and url.startswith(SDK_BASE):
            request.url = self._base + url[len(SDK_BASE) :]
        response = super().send(request, **kwargs)
        if 200 <= response.status_code < 300 and not _json_object_or_empty(response.content):
            response.close()
            raise requests.exceptions.InvalidJSONError(
                f"Plivo answered HTTP {response.status_code} with a body that is not JSON",
                request=request,
                response=response,
            )
        return response


def _json_object_or_empty(body: bytes) -> bool:
    if not body.strip():
        return True  # 204, or a delete's 200 with nothing to say
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


def make_client(auth_id: str, auth_token: str, api_url: str, timeout: float = 5.0) -> Any:
    """A `plivo.RestClient` whose requests go to `api_url`."""
    client = plivo.RestClient(auth_id, auth_token, timeout=timeout)
    base = api_url if api_url.rstrip("/") != SDK_BASE else None
    for session in (client.session, client.multipart_session):
        session.mount(SDK_BASE, _PlivoTransport(base))
    return client


class PlivoRest:
    """The REST calls the bridge makes during calls, each run in a worker thread.

    Each is sent once through `client.request`, not through the SDK's call resources: on a 5xx
    those send the request twice more (and print to stdout), so one transfer could be made three
    times."""

    def __init__(self, auth_id: str, auth_token: str, api_url: str) -> None:
        self._client = make_client(auth_id, auth_token, api_url)
        # requests.Session is not safe to share across threads: one request at a time.
        self._lock = asyncio.Lock()

    async def _run(
        self, what: str, method: str, path: tuple[str, ...], data: dict[str, str] | None = None
    ) -> Any:
        async with self._lock:
            try:
                return await asyncio.to_thread(self._client.request, method, path, data)
            except (plivo_errors.PlivoRestError, requests.RequestException) as exc:
                status = None if isinstance(exc, requests.RequestException) else status_of(exc)
                message = f"plivo {what} failed: {failure_text(exc)}"
                raise PlivoRestError(message, status) from None

    async def hangup(self, call_uuid: str) -> bool:
        """DELETE the call. True when Plivo ended it, False when it had already ended (404)."""
        try:
            await self._run("hangup", "DELETE", ("Call", call_uuid))
        except PlivoRestError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def cancel(self, request_uuid: str) -> bool:
        """Cancel a placed call not answered yet. False when Plivo no longer holds that request
        (it was answered, or has ended: 404)."""
        try:
            await self._run("cancel", "DELETE", ("Request", request_uuid))
        except PlivoRestError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def transfer(self, call_uuid: str, aleg_url: str) -> None:
        """Send the A leg to new XML at `aleg_url` (which dials the transfer target)."""
        body = {"legs": "aleg", "aleg_url": aleg_url, "aleg_method": "POST"}
        await self._run("transfer", "POST", ("Call", call_uuid), body)
