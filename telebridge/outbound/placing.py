"""Placing one outbound call: numbers checked, variables signed, the bridge's webhook URLs built.

A call's variables travel on its answer URL as `vars=<signed>` (`tokens.sign_call_variables`,
with the key a bridge with the same settings derives too), which the serving bridge verifies
before the flow sees them, so they reach the flow and cannot be forged; they expire
`VARS_TTL_S` after the call is placed. The same signed value rides on the carrier's status URL
(Plivo's `/plivo/hangup`, Vonage's `/vonage/event`), so a call that ends before it ever streamed
can still be traced to the campaign attempt that placed it.

Both carrier SDKs are synchronous: `CallPlacer.place` blocks, so async code runs it in a worker
thread. Each thread gets its own SDK client, because neither SDK's session is safe to share.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from urllib.parse import quote

import requests

from telebridge import e164
from telebridge.calllog import NO_STREAM, CallLog, CallRecord
from telebridge.carriers import paths
from telebridge.settings import ConfigError, Settings
from telebridge.tokens import CALL_VARS, sign_call_variables, signing_key

logger = logging.getLogger(__name__)

CARRIERS = ("plivo", "vonage")
# Names the bridge sets itself (caller, callee, ...) or the campaign uses to trace a call.
RESERVED_VARS = frozenset({"caller", "callee", "call_id", "carrier", "direction", "attempt"})
# Carriers take long answer URLs, but not unbounded ones; the bridge reads at most 8 KB of token.
MAX_URL_CHARS = 4096
SDK_TIMEOUT_S = 10
# A placed call is answered within minutes (ring timeouts, carrier queues); after this its answer
# URL is refused, so a captured one cannot start the flow again later.
VARS_TTL_S = 3600.0

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class OutboundError(Exception):
    """A mistake in what was asked (a number, a variable, a flow); the message names it."""


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


# --- checking what was asked ----------------------------------------------------------------


def normalize_number(text: str, what: str) -> str:
    """`text` as a canonical E.164 number (`e164.parse`); OutboundError names `what` if not."""
    number = e164.parse(text)
    if number is None:
        raise OutboundError(f"{what}: {text.strip()!r} is not an E.164 number ({e164.RULE})")
    return number


def check_variable_name(name: str, what: str) -> None:
    if not _VAR_NAME.fullmatch(name):
        raise OutboundError(f"{what}: {name!r} is not a variable name (letters, digits, _)")
    if name in RESERVED_VARS:
        raise OutboundError(
            f"{what}: {name!r} is set by telebridge itself; choose another name "
            f"(reserved: {', '.join(sorted(RESERVED_VARS))})"
        )


def parse_vars(items: list[str]) -> dict[str, str]:
    """`["name=Ada", "time=9am"]` as a dict; raises OutboundError naming a bad item."""
    variables: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise OutboundError(f"--var: {item!r} is not KEY=VALUE")
        check_variable_name(name.strip(), "--var")
        variables[name.strip()] = value
    return variables


def check_flow(settings: Settings, name: str | None) -> None:
    """Refuse a flow the bridge (which shares these settings) would not have."""
    if not name:
        return
    from telebridge.flows import FlowError
    from telebridge.flows.library import FlowLibrary, UnknownFlow

    try:
        library = FlowLibrary.from_settings(settings)
        library.get(name)
    except FlowError as exc:
        raise OutboundError(f"the flows have errors:\n{exc}") from None
    except UnknownFlow:
        raise OutboundError(
            f"--flow: no flow named {name!r} in {settings.telebridge_flows_dir} "
            f"(have: {', '.join(library.names) or 'none'})"
        ) from None


# --- the URLs the carrier calls back ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallbackUrls:
    answer: str  # the bridge's answer webhook, with ?flow= and the signed variables
    status: str  # Plivo's hangup URL or Vonage's event URL, with the signed variables


def callback_urls(
    settings: Settings, key: bytes, carrier: str, flow: str | None, variables: dict[str, str]
) -> CallbackUrls:
    """The URLs of a call placed now (its variables expire VARS_TTL_S from now)."""
    base = settings.require_public_url()
    token = sign_call_variables(key, variables, VARS_TTL_S)  # base64url and ".": safe in a query
    query = (f"flow={quote(flow, safe='')}&" if flow else "") + f"vars={token}"
    if carrier == "plivo":
        urls = CallbackUrls(
            f"{base}{paths.PLIVO_ANSWER}?{query}", f"{base}{paths.PLIVO_HANGUP}?vars={token}"
        )
    elif carrier == "vonage":
        urls = CallbackUrls(
            f"{base}{paths.VONAGE_ANSWER}?{query}", f"{base}{paths.VONAGE_EVENT}?vars={token}"
        )
    else:
        raise OutboundError(f"--carrier: {carrier!r} is not one of {', '.join(CARRIERS)}")
    if len(urls.answer) > MAX_URL_CHARS:
        raise OutboundError(
            f"the call variables make the answer URL {len(urls.answer)} characters long "
            f"(at most {MAX_URL_CHARS}): pass fewer or shorter variables"
        )
    return urls


# --- the carriers ----------------------------------------------------------------------------


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

    def __init__(self, auth_id: str, auth_token: str, api_url: str) -> None:
        self._credentials = (auth_id, auth_token, api_url)
        self._local = threading.local()

    def _client(self) -> Any:
        from telebridge.carriers.plivo_rest import make_client

        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = make_client(*self._credentials, timeout=SDK_TIMEOUT_S)
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

    def __init__(self, application_id: str, private_key: str, api_host: str) -> None:
        from telebridge.carriers.vonage_rest import host_of, load_private_key

        self._application_id = application_id
        self._private_key = load_private_key(private_key)
        self._host = host_of(api_host)
        self._local = threading.local()

    def _client(self) -> Any:
        from vonage import Auth

        from telebridge.carriers.vonage_rest import make_client

        client = getattr(self._local, "client", None)
        if client is None:
            auth = Auth(application_id=self._application_id, private_key=self._private_key)
            # No transport retries: a resent POST could ring the same person twice.
            client = make_client(auth, self._host, timeout=SDK_TIMEOUT_S, max_retries=0)
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
            message = f"vonage refused the call: HTTP {status}"
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


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def placer_for(settings: Settings, carrier: str) -> CallPlacer:
    """The placer for `carrier`, or a ConfigError naming the missing setting."""
    if carrier == "plivo":
        if not (settings.plivo_auth_id and settings.plivo_auth_token):
            raise ConfigError(
                "PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN are not set: needed for Plivo calls"
            )
        return PlivoPlacer(
            settings.plivo_auth_id,
            settings.plivo_auth_token.get_secret_value(),
            settings.plivo_api_url,
        )
    if carrier == "vonage":
        if not (settings.vonage_application_id and settings.vonage_private_key):
            raise ConfigError(
                "VONAGE_APPLICATION_ID / VONAGE_PRIVATE_KEY are not set: needed for Vonage calls"
            )
        if not settings.vonage_enabled:
            raise ConfigError(
                "VONAGE_SIGNATURE_SECRET is not set: a bridge with these settings refuses Vonage "
                "webhooks, so the call could not be answered (or set VONAGE_ALLOW_UNSIGNED=true)"
            )
        return VonagePlacer(
            settings.vonage_application_id,
            settings.vonage_private_key.get_secret_value(),
            settings.vonage_api_host,
        )
    raise OutboundError(f"--carrier: {carrier!r} is not one of {', '.join(CARRIERS)}")


# --- one call --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlacedCall:
    carrier: str
    request_id: str  # Plivo's request_uuid or Vonage's call uuid
    to: str
    from_: str
    variables: dict[str, str] = field(default_factory=dict)


class Dialer:
    """Places outbound calls for one carrier, from one number, into one flow."""

    def __init__(
        self,
        settings: Settings,
        carrier: str,
        from_: str,
        *,
        flow: str | None = None,
        placer: CallPlacer | None = None,
    ) -> None:
        if carrier not in CARRIERS:
            raise OutboundError(f"--carrier: {carrier!r} is not one of {', '.join(CARRIERS)}")
        self.settings = settings
        self.carrier = carrier
        self.from_ = normalize_number(from_, "--from")
        self.flow = flow
        settings.require_public_url()
        check_flow(settings, flow)
        self.placer = placer if placer is not None else placer_for(settings, carrier)
        # After the placer: a missing credential is named by what needs it first.
        self._key = signing_key(settings, CALL_VARS, carrier)

    def urls(self, variables: dict[str, str]) -> CallbackUrls:
        return callback_urls(self.settings, self._key, self.carrier, self.flow, variables)

    def call(self, to: str, variables: dict[str, str] | None = None) -> PlacedCall:
        """Place one call (blocks). `variables` must already be checked; "direction" is added."""
        number = normalize_number(to, "--to")
        if number == self.from_:
            raise OutboundError("--to: the number to call is the --from number")
        values = {**(variables or {}), "direction": "outbound"}
        urls = self.urls(values)
        request_id = self.placer.place(to=number, from_=self.from_, urls=urls)
        logger.info("%s call to %s placed: %s", self.carrier, number, request_id)
        return PlacedCall(self.carrier, request_id, number, self.from_, values)


# --- what became of a call -------------------------------------------------------------------

OUTCOMES = ("answered", "busy", "no-answer", "failed")
UNKNOWN = "unknown"  # no final word from the bridge in time
CLOCK_MARGIN_S = 120.0  # the bridge may run on another host whose clock is a little off


@dataclass(frozen=True, slots=True)
class Verdict:
    """An outbound call's result as the bridge's call log tells it."""

    outcome: str  # one of OUTCOMES, or UNKNOWN
    flow_outcome: str = ""  # how the flow ended (answered calls)
    digits: str = ""
    hangup_cause: str = ""
    call_id: str = ""  # the carrier's call id (Plivo CallUUID, Vonage uuid)
    detail: str = ""


def hangup_outcome(carrier: str, cause: str | None) -> str:
    """busy / no-answer / failed for a call that ended without ever streaming."""
    words = re.sub(r"[^a-z]+", " ", (cause or "").lower())
    if "busy" in words:
        return "busy"
    if carrier == "plivo" and ("rejected" in words or "declined" in words):
        return "busy"  # the person refused the call (Vonage's "rejected" is its own refusal)
    if any(w in words for w in ("no answer", "unanswered", "timeout", "no user", "cancel")):
        return "no-answer"
    return "failed"  # unreachable numbers, carrier refusals, answered but never streamed


def verdict_of(record: CallRecord) -> Verdict | None:
    """The result a call log row records, or None while the call is still going."""
    if record.outcome is None:
        return None
    cause = record.hangup_cause or ""
    if record.outcome == NO_STREAM and record.started_at is None:
        return Verdict(hangup_outcome(record.carrier, cause), hangup_cause=cause,
                       call_id=record.call_id)  # fmt: skip
    return Verdict("answered", record.outcome, record.digits, cause, record.call_id)


def find_call(
    log: CallLog, carrier: str, attempt: str, request_id: str | None, since: float | None = None
) -> CallRecord | None:
    """The call log row of the call placed with variable `attempt` (blocks: reads the file).

    Rows are found by the attempt id in their variables; a Vonage row also by its uuid, which
    Vonage's create answers (Plivo's create answers a request id, never the CallUUID). `since`
    (epoch seconds, when the call was placed) keeps the search to calls from then on.
    """
    after = None if since is None else datetime.fromtimestamp(since - CLOCK_MARGIN_S, UTC)
    found = log.find_by_variable("attempt", attempt, carrier=carrier, since=after)
    if not found and carrier == "vonage" and request_id:
        one = log.get(carrier, request_id)
        found = [one] if one is not None else []
    final = [r for r in found if verdict_of(r) is not None]
    return (final or found)[-1] if found else None
