"""Placing one outbound call: the `Dialer` checks the number, signs the call's variables onto
the bridge's webhook URLs (`request`) and has the carrier's placer (`placers`, chosen and set up
from the settings here) create the call.

The names other packages use for one call (the checks, the placement errors, the verdicts) are
importable from here too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from telebridge.outbound.placers import CallPlacer, PlacementError, PlivoPlacer, VonagePlacer
from telebridge.outbound.request import (
    CARRIERS,
    CallbackUrls,
    OutboundError,
    callback_urls,
    check_flow,
    normalize_number,
    parse_vars,
)
from telebridge.outbound.verdicts import UNKNOWN, Verdict, find_call, verdict_of
from telebridge.settings import ConfigError, Settings
from telebridge.tokens import CALL_VARS, signing_key

__all__ = [
    "UNKNOWN",
    "Dialer",
    "OutboundError",
    "PlacedCall",
    "PlacementError",
    "Verdict",
    "find_call",
    "normalize_number",
    "parse_vars",
    "verdict_of",
]

logger = logging.getLogger(__name__)

SDK_TIMEOUT_S = 10


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
            timeout=SDK_TIMEOUT_S,
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
            timeout=SDK_TIMEOUT_S,
        )
    raise OutboundError(f"--carrier: {carrier!r} is not one of {', '.join(CARRIERS)}")
