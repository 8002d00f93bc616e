"""Plivo's REST API through the official SDK, kept off the event loop.

The SDK hard-codes `https://api.plivo.com`; a requests transport adapter rebases its requests
onto `PLIVO_API_URL` so tests (and regional or proxy set-ups) reach another host unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import plivo
import requests
from plivo import exceptions as plivo_errors
from requests.adapters import HTTPAdapter

logger = logging.getLogger(__name__)

SDK_BASE = "https://api.plivo.com"


class PlivoRestError(Exception):
    """A Plivo REST request failed; the message says what and never holds credentials."""


class _Rebase(HTTPAdapter):
    def __init__(self, base: str) -> None:
        super().__init__()
        self._base = base.rstrip("/")

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        url = request.url or ""
        if url.startswith(SDK_BASE):
            request.url = self._base + url[len(SDK_BASE) :]
        return super().send(request, **kwargs)


def make_client(auth_id: str, auth_token: str, api_url: str, timeout: float = 5.0) -> Any:
    """A `plivo.RestClient` whose requests go to `api_url`."""
    client = plivo.RestClient(auth_id, auth_token, timeout=timeout)
    if api_url.rstrip("/") != SDK_BASE:
        for session in (client.session, client.multipart_session):
            session.mount(SDK_BASE, _Rebase(api_url))
    return client


class PlivoRest:
    """The REST calls the bridge makes during calls, each run in a worker thread."""

    def __init__(self, auth_id: str, auth_token: str, api_url: str) -> None:
        self._client = make_client(auth_id, auth_token, api_url)
        # requests.Session is not safe to share across threads: one request at a time.
        self._lock = asyncio.Lock()

    async def _run(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            try:
                return await asyncio.to_thread(fn, *args, **kwargs)
            except plivo_errors.ResourceNotFoundError:
                raise
            except plivo_errors.PlivoRestError as exc:
                raise PlivoRestError(f"plivo {what} failed: {type(exc).__name__}: {exc}") from None
            except requests.RequestException as exc:
                raise PlivoRestError(f"plivo {what} failed: {type(exc).__name__}") from None

    async def hangup(self, call_uuid: str) -> bool:
        """DELETE the call. True when Plivo ended it, False when it had already ended (404)."""
        try:
            await self._run("hangup", self._client.calls.delete, call_uuid)
        except plivo_errors.ResourceNotFoundError:
            return False
        return True

    async def transfer(self, call_uuid: str, aleg_url: str) -> None:
        """Send the A leg to new XML at `aleg_url` (which dials the transfer target)."""
        await self._run(
            "transfer",
            self._client.calls.update,
            call_uuid,
            legs="aleg",
            aleg_url=aleg_url,
            aleg_method="POST",
        )

    async def create_call(self, *, from_: str, to: str, answer_url: str, hangup_url: str) -> str:
        """Place an outbound call; returns Plivo's request_uuid."""
        response = await self._run(
            "call",
            self._client.calls.create,
            from_=from_.lstrip("+"),
            to_=to.lstrip("+"),
            answer_url=answer_url,
            answer_method="POST",
            hangup_url=hangup_url,
            hangup_method="POST",
        )
        return str(getattr(response, "request_uuid", ""))
