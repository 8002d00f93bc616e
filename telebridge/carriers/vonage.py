"""Vonage without I/O: the audio WebSocket protocol, NCCOs and signed-webhook checks.

See protocols/vonage.md. `VonageStream` turns Vonage's WebSocket messages (binary L16 frames and
JSON events) into call events, and the session's commands into binary 20 ms frames and
`notify` / `clear` actions. NCCOs are built with the SDK's models so their shape follows it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import jwt
from pydantic import ValidationError
from vonage_voice.models import Connect, NccoAction, PhoneEndpoint, Talk, WebsocketEndpoint

from telebridge.call.audio import Codec
from telebridge.call.events import (
    CallerAudio,
    CallEvent,
    Cleared,
    Digit,
    Played,
    ProtocolError,
    Started,
    WireMessage,
    json_object,
)
from telebridge.dtmf import DTMF_KEYS

logger = logging.getLogger(__name__)

RATES = (8000, 16000, 24000)
# The header of the NCCO's websocket endpoint that names the call leg: Vonage's connected
# message carries no uuid of its own.
CALL_HEADER = "call_id"
# Vonage echoes endpoint headers into the connected message and caps them at 512 bytes.
MAX_HEADER_BYTES = 512
# A signed webhook may be stamped this far ahead of our clock (skew) and still count.
MAX_FUTURE_SKEW = 60.0
MAX_TOKEN_CHARS = 8192


def content_type(rate: int) -> str:
    if rate not in RATES:
        raise ValueError(f"Vonage streams L16 at 8000, 16000 or 24000 Hz, not {rate}")
    return f"audio/l16;rate={rate}"


def frame_bytes(rate: int) -> int:
    """Bytes of one 20 ms L16 frame at `rate` (320, 640 or 960)."""
    content_type(rate)
    return rate // 50 * 2


def _rate_of(value: object) -> int | None:
    """The rate in a content type such as `audio/l16;rate=16000`, None if it is not L16."""
    if not isinstance(value, str):
        return None
    kind, _, params = value.replace(" ", "").lower().partition(";")
    if kind != "audio/l16":
        return None
    for param in params.split(";"):
        key, _, rate = param.partition("=")
        if key == "rate" and rate.isdigit():
            return int(rate)
    return None


class VonageStream:
    """One Vonage audio WebSocket. `websocket:connected` must come first and name the call."""

    carrier = "vonage"
    codec: Codec = "l16"
    # Vonage drops the socket on any binary message that is not exactly one 20 ms frame.
    max_frames_per_message = 1

    def __init__(self, sample_rate: int = 16000) -> None:
        self.sample_rate = sample_rate
        self.frame_bytes = frame_bytes(sample_rate)
        self.call_id: str | None = None
        self.decode_caller_audio = False  # frames are caller audio either way: no decoding

    # --- carrier -> bridge --------------------------------------------------------

    def ignorable(self, payload: bytes, text: bool) -> bool:
        # One well-formed frame of caller audio once connected: nothing in the bridge listens
        # to it. A frame of the wrong size still reaches `receive`, which reports it.
        return (
            not text
            and not self.decode_caller_audio
            and self.call_id is not None
            and len(payload) == self.frame_bytes
        )

    def receive(self, message: str | bytes) -> list[CallEvent]:
        if isinstance(message, bytes):
            if self.call_id is None:
                raise ProtocolError("audio before websocket:connected")
            if len(message) != self.frame_bytes:
                raise ProtocolError(
                    f"caller audio of {len(message)} bytes, expected {self.frame_bytes}"
                )
            return [CallerAudio(message)]
        data = json_object(message)
        event = data.get("event")
        if event == "websocket:connected":
            return [self._connected(data)]
        if self.call_id is None:
            raise ProtocolError(f"{str(event)[:40]!r} before websocket:connected")
        if event == "websocket:dtmf":
            return [self._dtmf(data)]
        if event == "websocket:cleared":
            return [Cleared()]
        if event == "websocket:notify":
            payload = data.get("payload")
            mark = payload.get("mark") if isinstance(payload, dict) else None
            if isinstance(mark, str):
                return [Played(mark)]
            logger.info("vonage call %s: ignoring a notify without a mark", self.call_id)
            return []
        logger.info("vonage call %s: ignoring unknown event %r", self.call_id, str(event)[:40])
        return []

    def _connected(self, data: Mapping[str, Any]) -> Started:
        if self.call_id is not None:
            raise ProtocolError("second websocket:connected on one socket")
        rate = _rate_of(data.get("content-type"))
        if rate != self.sample_rate:
            raise ProtocolError(
                f"content-type {str(data.get('content-type'))[:40]!r} is not "
                f"{content_type(self.sample_rate)}"
            )
        call_id = data.get(CALL_HEADER) or data.get("uuid")
        if not isinstance(call_id, str) or not call_id:
            raise ProtocolError(f"websocket:connected without a {CALL_HEADER} header")
        self.call_id = call_id
        return Started(call_id=call_id, stream_id="")

    @staticmethod
    def _dtmf(data: Mapping[str, Any]) -> Digit:
        # The documented shape is {"digit": "5"}; some senders nest it as {"dtmf": ...}.
        digit = data.get("digit")
        if digit is None:
            dtmf = data.get("dtmf")
            digit = dtmf.get("digit") if isinstance(dtmf, dict) else dtmf
        if isinstance(digit, int) and not isinstance(digit, bool):
            digit = str(digit)
        if not isinstance(digit, str) or digit.upper() not in DTMF_KEYS:
            raise ProtocolError(f"dtmf with an invalid digit {str(digit)[:8]!r}")
        return Digit(digit.upper())

    # --- bridge -> carrier --------------------------------------------------------

    def play(self, frames: bytes) -> list[WireMessage]:
        size = self.frame_bytes
        if len(frames) % size:
            raise ValueError(f"Vonage takes whole 20 ms frames of {size} bytes only")
        return [frames[i : i + size] for i in range(0, len(frames), size)]

    def mark(self, name: str) -> list[WireMessage]:
        return [json.dumps({"action": "notify", "payload": {"mark": name}})]

    def clear(self) -> list[WireMessage]:
        return ['{"action":"clear"}']

    def send_digits(self, digits: str) -> list[WireMessage]:
        """Nothing on the socket: Vonage plays tones through its REST API (`CallControl`)."""
        return []


# --- NCCOs ------------------------------------------------------------------------------


def _dump(actions: Sequence[NccoAction]) -> list[dict[str, Any]]:
    return [a.model_dump(mode="json", by_alias=True, exclude_none=True) for a in actions]


def _phone_number(number: str) -> str:
    # Vonage numbers go without "+" or "00": 447700900000.
    digits = number.strip().removeprefix("+")
    return digits[2:] if digits.startswith("00") else digits


def answer_ncco(stream_uri: str, rate: int, headers: Mapping[str, str]) -> list[dict[str, Any]]:
    """The answer to an answer webhook: connect the call to our audio WebSocket.

    `connect` is the last action, so the call ends when the bridge closes the socket.
    """
    if len(json.dumps(dict(headers), separators=(",", ":")).encode()) > MAX_HEADER_BYTES:
        raise ValueError(f"websocket headers exceed {MAX_HEADER_BYTES} bytes")
    endpoint = WebsocketEndpoint(
        uri=stream_uri, contentType=content_type(rate), headers=dict(headers)
    )
    # The SDK insists on a caller id; a websocket leg needs none, hence randomFromNumber=False.
    return _dump([Connect(endpoint=[endpoint], randomFromNumber=False)])


def transfer_ncco(to: str, from_: str, timeout: float | None = None) -> list[dict[str, Any]]:
    """An NCCO that connects the caller to the phone number `to`, showing `from_`.

    Raises ValueError for a `to` that is not an E.164 number. A `from_` that is not a number
    (a withheld or SIP caller id) falls back to one of the application's own numbers.
    """
    try:
        endpoint = PhoneEndpoint(number=_phone_number(to))
    except ValidationError:
        raise ValueError(f"cannot transfer to {to[:32]!r}: not an E.164 phone number") from None
    ring = max(1, round(timeout)) if timeout else None  # seconds the target may ring
    try:
        action = Connect(endpoint=[endpoint], from_=_phone_number(from_), timeout=ring)
    except ValidationError:
        action = Connect(endpoint=[endpoint], randomFromNumber=True, timeout=ring)
    return _dump([action])


def talk_ncco(text: str) -> list[dict[str, Any]]:
    """Speak `text` and end the call (nothing follows the talk)."""
    return _dump([Talk(text=text)])


# --- signed webhooks -------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _payload_hashes(body: bytes, query: Sequence[tuple[str, str]]) -> set[str]:
    """Every hash of this request's payload that Vonage may have signed.

    Vonage hashes the raw POST body; its support notes describe the hash as that of a compact
    JSON object of the body (POST) or of the query parameters in order (GET), so those
    serialisations (and the query string as sent) are accepted too.
    """
    hashes = {_sha256(body)}
    values: Any = None
    if body:
        try:
            values = json.loads(body)
        except ValueError:
            values = None
    elif query:
        values = dict(query)
        hashes.add(_sha256(urlencode(list(query)).encode()))  # the query string itself
    if values is not None:
        for ascii_only in (True, False):
            text = json.dumps(values, separators=(",", ":"), ensure_ascii=ascii_only)
            hashes.add(_sha256(text.encode()))
    return hashes


def verify_signed_webhook(
    authorization_header: str | None,
    body: bytes,
    secret: str,
    max_age: float,
    now: float | None = None,
    *,
    query: Sequence[tuple[str, str]] = (),
) -> str | None:
    """Check a Vonage signed webhook: None when it is genuine, else a short reason.

    The JWT must be HS256 over `secret`, carry `payload_hash` matching the body (`query` is the
    request's query parameters, for GET), and have an `iat` at most `max_age` seconds old and
    at most a minute ahead. A GET with an empty body may omit `payload_hash`: there is no body
    to protect and Vonage's own description of GET hashing is not precise.
    """
    if not authorization_header:
        return "no Authorization header"
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return "Authorization is not a Bearer token"
    if len(token) > MAX_TOKEN_CHARS:
        return "token too long"
    try:
        # PyJWT directly rather than vonage_jwt.verify_signature: that one rejects an `iat`
        # even a second ahead of our clock and folds every failure into one error string.
        # Vonage's secrets may be shorter than RFC 7518 recommends; that is its choice.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            claims = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                # Times are checked below against `now`, so tests and replays are exact.
                options={
                    "verify_iat": False,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                    "require": ["iat"],
                },
            )
    except jwt.InvalidSignatureError:
        return "bad signature"
    except jwt.MissingRequiredClaimError:
        return "token without iat"
    except jwt.InvalidTokenError:
        return "malformed token"
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        return "token with a malformed iat"
    now = time.time() if now is None else now
    if now - iat > max_age:
        return "token too old"
    if iat - now > MAX_FUTURE_SKEW:
        return "token issued in the future"
    exp = claims.get("exp")
    if exp is not None and (not isinstance(exp, int | float) or isinstance(exp, bool) or exp < now):
        return "token expired"
    claimed = claims.get("payload_hash")
    if claimed is None:
        return None if not body else "token without payload_hash"
    if not isinstance(claimed, str):
        return "malformed payload_hash"
    claimed = claimed.lower()
    if not any(hmac.compare_digest(claimed, h) for h in _payload_hashes(body, query)):
        return "payload_hash does not match the request"
    return None
