"""Vonage's Voice REST API through the official SDK, kept off the event loop.

A call is controlled through the regional host its answer webhook named (`region_url`), so
there is one SDK client per host. The SDK is synchronous and its client mutates shared headers
per request: each client runs one request at a time, in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import requests
from vonage import Auth, HttpClientOptions, Vonage, VonageError
from vonage_http_client.errors import HttpRequestError

from telebridge.settings import ConfigError, load_private_key

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Hosts a region_url may name. Anything else (a forged unsigned webhook) would receive our
# application JWT, so it is ignored in favour of the configured host.
VONAGE_DOMAINS = (".vonage.com", ".nexmo.com")
MAX_CLIENTS = 16
_HOST = re.compile(r"[a-z0-9.-]+(:[0-9]{1,5})?")


class VonageRestError(Exception):
    """A Vonage REST request failed; the message says what and never holds credentials."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, when Vonage answered


class _QuietSdk(logging.Filter):
    """The SDK logs its request headers, bearer JWT included, at DEBUG, and every error answer,
    body and all, as a WARNING; callers turn those answers into their own one-line errors.
    Only its errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def _quiet_sdk_logs() -> None:
    sdk_logger = logging.getLogger("vonage")
    if not any(isinstance(f, _QuietSdk) for f in sdk_logger.filters):
        sdk_logger.addFilter(_QuietSdk())


def make_client(auth: Auth, api_host: str, *, timeout: int, max_retries: int = 3) -> Vonage:
    """An SDK client for `api_host` (a host or a URL), with the SDK's logs kept quiet.

    `max_retries` resends a request whose connection failed: 0 for requests that must not be
    sent twice (a new call)."""
    _quiet_sdk_logs()
    options = HttpClientOptions(
        api_host=host_of(api_host), timeout=timeout, max_retries=max_retries
    )
    return Vonage(auth, options)


def host_of(url_or_host: str) -> str:
    """`https://api-eu-3.vonage.com/` -> `api-eu-3.vonage.com`."""
    host = url_or_host.strip()
    if "://" in host:
        host = host.split("://", 1)[1]
    return host.split("/", 1)[0].lower()


class VonageRest:
    """The Voice REST calls the bridge makes, each in a worker thread."""

    def __init__(
        self,
        application_id: str,
        private_key: str,
        api_host: str = "api.nexmo.com",
        *,
        timeout: int = 5,
        max_retries: int = 2,
    ) -> None:
        self._application_id = application_id
        self._private_key = load_private_key(private_key)
        self._default_host = host_of(api_host)
        self._timeout = timeout
        self._max_retries = max_retries
        self._clients: dict[str, tuple[Vonage, threading.Lock]] = {}
        self._clients_lock = threading.Lock()
        self._client(self._default_host)  # fail now, not mid-call, if the SDK rejects the key

    @property
    def default_host(self) -> str:
        return self._default_host

    def region_host(self, region_url: str | None) -> str:
        """The host to control a call through: its region's if trustworthy, else the default."""
        if not region_url:
            return self._default_host
        host = host_of(region_url)
        name = host.split(":", 1)[0]
        # A plain host name only: "@", "#" or "?" would let a crafted value point elsewhere.
        if _HOST.fullmatch(host) and (host == self._default_host or name.endswith(VONAGE_DOMAINS)):
            return host
        logger.warning("vonage: ignoring region_url host %r (not a Vonage host)", host[:80])
        return self._default_host

    def _client(self, host: str) -> tuple[Vonage, threading.Lock]:
        with self._clients_lock:
            found = self._clients.get(host)
            if found is None:
                if len(self._clients) >= MAX_CLIENTS:
                    oldest = next(h for h in self._clients if h != self._default_host)
                    del self._clients[oldest]
                try:
                    client = make_client(
                        Auth(application_id=self._application_id, private_key=self._private_key),
                        host,
                        timeout=self._timeout,
                        max_retries=self._max_retries,
                    )
                except VonageError as exc:
                    raise ConfigError(
                        f"VONAGE_APPLICATION_ID / VONAGE_PRIVATE_KEY: rejected by the SDK "
                        f"({type(exc).__name__})"
                    ) from None
                found = self._clients[host] = (client, threading.Lock())
            return found

    async def _run(self, what: str, host: str | None, fn: Callable[[Vonage], T]) -> T:
        client, lock = self._client(host or self._default_host)

        def locked() -> T:
            with lock:
                return fn(client)

        try:
            return await asyncio.to_thread(locked)
        except HttpRequestError as exc:
            status = exc.response.status_code
            raise VonageRestError(f"vonage {what} failed: HTTP {status}", status) from None
        except VonageError as exc:
            raise VonageRestError(f"vonage {what} failed: {type(exc).__name__}") from None
        except requests.RequestException as exc:
            raise VonageRestError(f"vonage {what} failed: {type(exc).__name__}") from None

    async def hangup(self, uuid: str, region_host: str | None = None) -> bool:
        """End the call leg. True when Vonage ended it, False when it had already ended (404)."""
        try:
            await self._run("hangup", region_host, lambda c: c.voice.hangup(uuid))
        except VonageRestError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def send_digits(self, uuid: str, digits: str, region_host: str | None = None) -> None:
        """Play DTMF tones into the call leg."""
        await self._run("dtmf", region_host, lambda c: c.voice.play_dtmf_into_call(uuid, digits))

    async def transfer_ncco(
        self, uuid: str, ncco: list[dict[str, Any]], region_host: str | None = None
    ) -> None:
        """Move the call leg to a new NCCO (already serialised)."""
        # Through the SDK's HTTP client: `voice.transfer_call_ncco` re-validates its argument
        # into bare NccoAction models, which silently turns plain dicts into `{}`.
        body = {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}}
        await self._run(
            "transfer",
            region_host,
            lambda c: c.http_client.put(c.http_client.api_host, f"/v1/calls/{uuid}", body),
        )
