"""The carriers' call placers: one outbound call created through Plivo's or Vonage's REST SDK,
and what is known when the carrier does not confirm it (`PlacementError`).

Both carrier SDKs are synchronous: `CallPlacer.place` blocks, so async code runs it in a worker
thread, off the event loop. Each thread gets its own SDK client, because neither SDK's session is
safe to share.
"""

from __future__ import annotations

import threading
from typing import Any, Literal, Protocol

import requests

from telebridge.outbound.request import CallbackUrls


class PlacementError(Exception):
    """The carrier did not confirm the call.

    `placed` says what is known: "no" when the carrier certainly did not place it (a refusal,
    a connection that never opened), "maybe" when the request may have gone through (a timeout
    after sending, a server error). Never place a "maybe" call again: that could ring twice.
    """

    def __init__(
        self,
        message: str,
        *,
        placed: Literal["no", "maybe"],
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.placed = placed
        self.status = status
        self.retry_after = retry_after

    @property
    def rate_limited(self) -> bool:
        return self.status == 429


class CallPlacer(Protocol):
    carrier: str

    def place(self, *, to: str, from_: str, urls: CallbackUrls) -> str:
        """Place the call; returns the carrier's id for the request. Raises PlacementError."""
        ...


def _request_failure(what: str, exc: requests.RequestException) -> PlacementError:
    # A connection that never opened placed nothing; anything later may have reached the carrier.
    never_sent = isinstance(exc, requests.ConnectTimeout) or (
        isinstance(exc, requests.ConnectionError)
        and "NewConnectionError" in repr(exc.args)
        and not isinstance(exc, requests.ReadTimeout)
    )
    return PlacementError(
        f"{what} failed: {type(exc).__name__}", placed="no" if never_sent else "maybe"
    )


class PlivoPlacer:
    """Outbound calls through Plivo's `calls.create`; the id returned is the request_uuid."""

    carrier = "plivo"

    def __init__(self, auth_id: str, auth_token: str, api_url: str, *, timeout: float) -> None:
        self._credentials = (auth_id, auth_token, api_url)
        self._timeout = timeout
        self._local = threading.local()

    def _client(self) -> Any:
        from telebridge.carriers.plivo_rest import make_client

        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = make_client(*self._credentials, timeout=self._timeout)
        return client

    def place(self, *, to: str, from_: str, urls: CallbackUrls) -> str:
        from plivo import exceptions as errors

        params = {
            "from": from_.lstrip("+"),
            "to": to.lstrip("+"),
            "answer_url": urls.answer,
            "answer_method": "POST",
            "hangup_url": urls.status,
            "hangup_method": "POST",
        }
        try:
            # What `calls.create` sends, but once: on a 5xx `calls.create` sends it again (its
            # "voice fallback"), and a call Plivo queued before failing would then ring twice.
            response = self._client().request("POST", ("Call",), params)
        except requests.RequestException as exc:
            raise _request_failure("plivo call", exc) from None
        except errors.PlivoRestError as exc:
            raise _plivo_failure(exc) from None
        request_uuid = str(getattr(response, "request_uuid", "") or "")
        if not request_uuid:
            raise PlacementError("plivo answered without a request_uuid", placed="maybe")
        return request_uuid


def _plivo_failure(exc: Exception) -> PlacementError:
    from telebridge.carriers.plivo_rest import failure_text, status_of

    status = status_of(exc)
    if status == 429:
        return PlacementError("plivo: too many requests", placed="no", status=429)
    if status is not None and status < 500:
        message = f"plivo refused the call: {failure_text(exc)}"
        return PlacementError(message, placed="no", status=status)
    return PlacementError(f"plivo call failed: {failure_text(exc)}", placed="maybe", status=status)


class VonagePlacer:
    """Outbound calls through Vonage's `create_call`; the id returned is the call leg's uuid."""

    carrier = "vonage"

    def __init__(
        self, application_id: str, private_key: str, api_host: str, *, timeout: int
    ) -> None:
        from telebridge.carriers.vonage_rest import host_of
        from telebridge.settings import load_private_key

        self._application_id = application_id
        self._private_key = load_private_key(private_key)
        self._host = host_of(api_host)
        self._timeout = timeout
        self._local = threading.local()

    def _client(self) -> Any:
        from vonage import Auth

        from telebridge.carriers.vonage_rest import make_client

        client = getattr(self._local, "client", None)
        if client is None:
            auth = Auth(application_id=self._application_id, private_key=self._private_key)
            # No transport retries: a resent POST could ring the same person twice.
            client = make_client(auth, self._host, timeout=self._timeout, max_retries=0)
            self._local.client = client
        return client

    def place(self, *, to: str, from_: str, urls: CallbackUrls) -> str:
        from vonage import VonageError
        from vonage_http_client.errors import HttpRequestError
        from vonage_voice.models import CreateCallRequest, Phone, ToPhone

        request = CreateCallRequest(
            to=[ToPhone(number=to.lstrip("+"))],
            from_=Phone(number=from_.lstrip("+")),
            answer_url=[urls.answer],
            answer_method="POST",
            event_url=[urls.status],
            event_method="POST",
        )
        body = request.model_dump(by_alias=True, exclude_none=True)
        try:
            # What `voice.create_call` sends; it would fail on an answer that is not JSON.
            http = self._client().http_client
            answer = http.post(http.api_host, "/v1/calls", body)
        except HttpRequestError as exc:
            status = exc.response.status_code
            if status == 429:
                retry = _seconds(exc.response.headers.get("retry-after"))
                raise PlacementError(
                    "vonage: too many requests", placed="no", status=429, retry_after=retry
                ) from None
            if status >= 500:
                message = f"vonage call failed: HTTP {status}"
                raise PlacementError(message, placed="maybe", status=status) from None
            message = f"vonage refused the call: {_vonage_reason(exc.response)}"
            raise PlacementError(message, placed="no", status=status) from None
        except requests.RequestException as exc:
            raise _request_failure("vonage call", exc) from None
        except VonageError as exc:
            message = f"vonage call failed: {type(exc).__name__}"
            raise PlacementError(message, placed="maybe") from None
        uuid = answer.get("uuid") if isinstance(answer, dict) else None
        if not isinstance(uuid, str) or not uuid:
            raise PlacementError("vonage answered without a call uuid", placed="maybe")
        return uuid


def _vonage_reason(response: requests.Response) -> str:
    """`HTTP 400: Invalid Parameters: ...`: the status with Vonage's own title and detail."""
    reason = f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return reason
    if isinstance(body, dict):
        words = [str(body[k]).strip() for k in ("title", "detail") if body.get(k)]
        if words:
            reason += ": " + ": ".join(words)
    return reason[:300]


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
