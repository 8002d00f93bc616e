"""What an outbound call asks for, checked (numbers, variables, the flow), and the bridge's
webhook URLs the carrier calls back, with the call's variables signed on them.

A call's variables travel on its answer URL as `vars=<signed>` (`tokens.sign_call_variables`,
with the key a bridge with the same settings derives too), which the serving bridge verifies
before the flow sees them, so they reach the flow and cannot be forged; they expire
`VARS_TTL_S` after the call is placed. The same signed value rides on the carrier's status URL
(Plivo's `/plivo/hangup`, Vonage's `/vonage/event`), so a call that ends before it ever streamed
can still be traced to the campaign attempt that placed it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from telebridge import e164
from telebridge.carriers import paths
from telebridge.settings import Settings
from telebridge.tokens import sign_call_variables

CARRIERS = ("plivo", "vonage")
# Names the bridge sets itself (caller, callee, ...) or the campaign uses to trace a call.
RESERVED_VARS = frozenset({"caller", "callee", "call_id", "carrier", "direction", "attempt"})
# Carriers take long answer URLs, but not unbounded ones; the bridge reads at most 8 KB of token.
MAX_URL_CHARS = 4096
# A placed call is answered within minutes (ring timeouts, carrier queues); after this its answer
# URL is refused, so a captured one cannot start the flow again later.
VARS_TTL_S = 3600.0

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class OutboundError(Exception):
    """A mistake in what was asked (a number, a variable, a flow); the message names it."""


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
