"""The call API's requests, read and checked: JSON objects whose fields are all known and of the
right type, numbers in E.164, variables with valid names. Anything else is an `ApiError` (400)
whose message names the field; nothing here does I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from telebridge.outbound.request import (
    CARRIERS,
    OutboundError,
    check_variable_name,
    normalize_number,
)

__all__ = ["MAX_BODY_BYTES", "ApiError", "HangupCall", "PlaceCall", "Say", "TransferCall",
           "read_object"]  # fmt: skip

MAX_BODY_BYTES = 64 * 1024
MAX_TEXT_CHARS = 5000  # one announcement; longer text belongs in a flow
MAX_VARS = 100
MAX_VALUE_CHARS = 1000
MAX_REASON_CHARS = 200
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")


class ApiError(Exception):
    """A request the API answers with `status` and `{"error": message, **extra}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.extra}


@dataclass(frozen=True, slots=True)
class PlaceCall:
    carrier: str
    to: str
    from_: str
    flow: str | None = None
    variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Say:
    text: str
    interrupt: bool = False
    voice: str | None = None
    speed: float | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class HangupCall:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TransferCall:
    to: str


def read_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object (an empty body is `{}`)."""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8 text") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the body must be a JSON object")
    return value


def _fields(body: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        known = ", ".join((*required, *optional))
        raise ApiError(400, f"unknown field {unknown[0]!r} (fields: {known})")
    for name in required:
        if name not in body:
            raise ApiError(400, f"{name}: required")


def _text(body: dict[str, Any], name: str, limit: int, *, blank: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{name}: must be a string")
    if not blank and not value.strip():
        raise ApiError(400, f"{name}: must not be empty")
    if len(value) > limit:
        raise ApiError(400, f"{name}: at most {limit} characters")
    return value


def _number(body: dict[str, Any], name: str) -> str:
    text = _text(body, name, 32)
    if text is None:
        raise ApiError(400, f"{name}: required")
    try:
        return normalize_number(text, name)
    except OutboundError as exc:
        raise ApiError(400, str(exc)) from None


def place_call(body: dict[str, Any]) -> PlaceCall:
    _fields(body, ("carrier", "to", "from"), ("flow", "vars"))
    carrier = body["carrier"]
    if carrier not in CARRIERS:
        raise ApiError(400, f"carrier: must be one of {', '.join(CARRIERS)}")
    to, from_ = _number(body, "to"), _number(body, "from")
    if to == from_:
        raise ApiError(400, "to: the number to call is the from number")
    flow = _text(body, "flow", 200)
    raw_vars = body.get("vars")
    if raw_vars is None:
        raw_vars = {}
    if not isinstance(raw_vars, dict):
        raise ApiError(400, "vars: must be an object of name to value")
    if len(raw_vars) > MAX_VARS:
        raise ApiError(400, f"vars: at most {MAX_VARS} variables")
    variables: dict[str, str] = {}
    for name, value in raw_vars.items():
        try:
            check_variable_name(name, "vars")
        except OutboundError as exc:
            raise ApiError(400, str(exc)) from None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ApiError(400, f"vars: {name!r} must be a string or a number")
        try:
            text = str(value)
        except ValueError:  # an int of more digits than Python turns into text
            text = "x" * (MAX_VALUE_CHARS + 1)
        if len(text) > MAX_VALUE_CHARS:
            raise ApiError(400, f"vars: {name!r} is over {MAX_VALUE_CHARS} characters")
        variables[name] = text
    return PlaceCall(carrier, to, from_, flow, variables)


def say(body: dict[str, Any]) -> Say:
    _fields(body, ("text",), ("interrupt", "voice", "speed", "language"))
    text = _text(body, "text", MAX_TEXT_CHARS)
    if text is None:
        raise ApiError(400, "text: required")
    interrupt = body.get("interrupt", False)
    if not isinstance(interrupt, bool):
        raise ApiError(400, "interrupt: must be true or false")
    voice, language = _text(body, "voice", 100), _text(body, "language", 20)
    for name, value in (("voice", voice), ("language", language)):
        if value is not None and not _NAME.fullmatch(value):
            raise ApiError(400, f"{name}: letters, digits, '_', '.' and '-' only")
    speed = body.get("speed")
    if speed is not None:
        if isinstance(speed, bool) or not isinstance(speed, int | float):
            raise ApiError(400, "speed: must be a number")
        if not 0.5 <= speed <= 2.0:
            raise ApiError(400, "speed: from 0.5 to 2.0")
        speed = float(speed)
    return Say(text, interrupt, voice, speed, language)


def hangup(body: dict[str, Any]) -> HangupCall:
    _fields(body, (), ("reason",))
    return HangupCall(_text(body, "reason", MAX_REASON_CHARS, blank=True) or "")


def transfer(body: dict[str, Any]) -> TransferCall:
    _fields(body, ("to",), ())
    return TransferCall(_number(body, "to"))
