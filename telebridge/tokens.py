"""Stream tokens: what a signed answer webhook hands the carrier so that only that call may stream.

A token is `base64url(json claims).base64url(HMAC-SHA256)`. It binds the carrier and the call id,
carries what the stream needs (flow, caller, callee, call variables) and expires. Call variables
for outbound calls travel in the same signed form (`sign_claims`), so they cannot be forged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any


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
