"""Signed tokens (stream tokens, call variables) and the keys that sign them.

A token is `base64url(json claims).base64url(HMAC-SHA256)`. A stream token binds the carrier and
the call id, carries what the stream needs (flow, caller, callee, call variables) and expires. The
variables of an outbound call travel signed too (`sign_call_variables`), with an expiry, so they
can be neither forged nor replayed long after the call was placed.

`Keys` derives one key per purpose and carrier with HKDF-SHA256, from `TELEBRIDGE_SECRET` when it
is set and otherwise from that carrier's credentials. Every process that serves or places a
carrier's calls has those, so processes with the same settings sign and verify alike with nothing
more to share. With neither, a process signs with a random key of its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from telebridge.settings import ConfigError, load_private_key

if TYPE_CHECKING:
    from telebridge.settings import Settings

# HKDF `info` labels: a key for one purpose never verifies a token made for another.
STREAM_TOKEN = "telebridge stream token v1"
CALL_VARS = "telebridge call vars v1"
PLIVO_TRANSFER = "telebridge plivo transfer v1"

# What each carrier's keys derive from when TELEBRIDGE_SECRET is unset: the first of these that
# is set. Only credentials every process handling that carrier's calls must have: the bridge needs
# the Vonage signature secret to take webhooks, but the private key only for REST calls, so the
# key counts only when there is no signature secret. Changing one changes the keys, which voids
# tokens in flight; they last minutes.
CREDENTIALS: dict[str, tuple[str, ...]] = {
    "plivo": ("plivo_auth_token",),
    "vonage": ("vonage_signature_secret", "vonage_private_key"),
}


class TokenError(Exception):
    """A token that is malformed, forged, expired or for another call."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_claims(secret: bytes, claims: dict[str, Any]) -> str:
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(secret, body.encode("ascii"), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify_claims(secret: bytes, token: str, *, max_len: int = 8192) -> dict[str, Any]:
    """The claims of a token whose signature is right; raises TokenError otherwise."""
    if not token or len(token) > max_len or token.count(".") != 1:
        raise TokenError("malformed token")
    body, mac = token.split(".")
    try:
        given = _unb64(mac)
    except ValueError:
        raise TokenError("malformed token") from None
    expected = hmac.new(secret, body.encode("ascii", "replace"), hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        raise TokenError("bad token signature")
    try:
        claims = json.loads(_unb64(body))
    except ValueError:
        raise TokenError("malformed token") from None
    if not isinstance(claims, dict):
        raise TokenError("malformed token")
    return claims


@dataclass(frozen=True, slots=True)
class StreamGrant:
    """What an answer webhook allowed: one carrier stream for one call."""

    carrier: str
    call_id: str
    flow: str
    caller: str = ""
    callee: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    expires: float = 0.0


def mint_stream_token(
    secret: bytes, grant: StreamGrant, ttl: float, now: float | None = None
) -> str:
    now = time.time() if now is None else now
    claims = {
        "c": grant.carrier,
        "id": grant.call_id,
        "f": grant.flow,
        "fr": grant.caller,
        "to": grant.callee,
        "v": grant.variables,
        "exp": round(now + ttl, 3),
    }
    return sign_claims(secret, claims)


def read_stream_token(
    secret: bytes, token: str, *, carrier: str, now: float | None = None
) -> StreamGrant:
    """Verify a stream token for `carrier`; the caller still checks the call id it streams."""
    claims = verify_claims(secret, token)
    now = time.time() if now is None else now
    try:
        grant = StreamGrant(
            carrier=str(claims["c"]),
            call_id=str(claims["id"]),
            flow=str(claims["f"]),
            caller=str(claims.get("fr", "")),
            callee=str(claims.get("to", "")),
            variables={str(k): str(v) for k, v in dict(claims.get("v", {})).items()},
            expires=float(claims["exp"]),
        )
    except (KeyError, TypeError, ValueError):
        raise TokenError("malformed token claims") from None
    if grant.carrier != carrier:
        raise TokenError("token is for another carrier")
    if grant.expires < now:
        raise TokenError("token expired")
    return grant


def sign_call_variables(
    key: bytes, variables: dict[str, str], ttl: float, now: float | None = None
) -> str:
    """The `vars` token of a call placed now: good for `ttl` seconds, until it is answered."""
    now = time.time() if now is None else now
    return sign_claims(key, {"v": variables, "exp": round(now + ttl, 3)})


def read_call_variables(key: bytes, token: str, now: float | None = None) -> dict[str, str]:
    """The variables of a `vars` token; raises TokenError when forged, malformed or expired."""
    claims = verify_claims(key, token)
    try:
        variables = {str(k): str(v) for k, v in dict(claims["v"]).items()}
        expires = float(claims["exp"])
    except (KeyError, TypeError, ValueError):
        raise TokenError("malformed call variables") from None
    if expires < (time.time() if now is None else now):
        raise TokenError("call variables expired")
    return variables


# --- keys ------------------------------------------------------------------------------------


class Keys:
    """The signing keys of one process. Its repr names where keys come from, never their bytes."""

    __slots__ = ("_derived", "_random", "_secret", "_sources")

    def __init__(
        self, secret: bytes | None = None, credentials: dict[str, tuple[str, bytes]] | None = None
    ) -> None:
        self._secret = secret or None
        self._sources = dict(credentials or {})  # carrier -> (setting name, value)
        self._random = secrets.token_bytes(32)
        self._derived: dict[tuple[str, str], bytes] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Keys:
        explicit = _text(settings.telebridge_secret)
        if explicit is not None:
            return cls(explicit.encode())
        found: dict[str, tuple[str, bytes]] = {}
        for carrier, names in CREDENTIALS.items():
            for name in names:
                value = _text(getattr(settings, name))
                if value is None:
                    continue
                if name == "vonage_private_key":
                    # The same key as a path or as PEM text gives the same keys; a key that cannot
                    # be read gives none, and whatever needs it to call Vonage says so.
                    try:
                        value = load_private_key(value)
                    except ConfigError:
                        continue
                found[carrier] = (name.upper(), value.encode())
                break
        return cls(None, found)

    def source(self, carrier: str) -> str | None:
        """The setting `carrier`'s keys derive from; None: a random key of this process."""
        if self._secret is not None:
            return "TELEBRIDGE_SECRET"
        found = self._sources.get(carrier)
        return found[0] if found else None

    def key(self, purpose: str, carrier: str) -> bytes:
        """The key for `purpose` on `carrier`'s calls (this process's own if nothing is shared)."""
        derived = self._derived.get((purpose, carrier))
        if derived is None:
            found = self._sources.get(carrier)
            material = self._secret or (found[1] if found else self._random)
            hkdf = HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=None,
                info=f"{purpose}; carrier {carrier}".encode(),
            )
            derived = self._derived[(purpose, carrier)] = hkdf.derive(material)
        return derived

    def shared_key(self, purpose: str, carrier: str) -> bytes:
        """`key`, when every process with these settings has it; ConfigError otherwise."""
        if self.source(carrier) is None:
            names = " or ".join(name.upper() for name in CREDENTIALS.get(carrier, ()))
            raise ConfigError(
                f"TELEBRIDGE_SECRET is not set and neither is {names or 'a credential'}: "
                f"nothing to sign {carrier} calls with that `telebridge serve` could verify; "
                "set the same as the bridge has"
            )
        return self.key(purpose, carrier)

    def __repr__(self) -> str:
        sources = ", ".join(f"{c}: {self.source(c) or 'random'}" for c in CREDENTIALS)
        return f"Keys({sources})"


def signing_key(settings: Settings, purpose: str, carrier: str) -> bytes:
    """The key for `purpose` that a bridge with the same settings has too (or ConfigError)."""
    return Keys.from_settings(settings).shared_key(purpose, carrier)


def _text(value: Any) -> str | None:
    """A secret setting's text; unset, empty and blank all mean "not given"."""
    if value is None:
        return None
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return text if text.strip() else None
