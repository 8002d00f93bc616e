"""The agent step's message protocol, without I/O: what an application may send (parsed and
checked into commands) and what the bridge sends it (the handshake's signature is the edge's,
`flows/agent_socket.py`).

The shapes are the contract's (section "The agent step"); `parse` never raises anything but
`AgentMessageError`, whose text goes back to the application in an `error` message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from telebridge import e164
from telebridge.dtmf import DTMF_KEYS

__all__ = [
    "MAX_MESSAGE_BYTES",
    "AgentCommand",
    "AgentMessageError",
    "Clear",
    "Hangup",
    "Next",
    "SendDigits",
    "Text",
    "TransferTo",
    "message",
    "parse",
]

# A text message from an application larger than this is refused (it is one piece of text, not
# a document); the socket's own frame limit is a little above it.
MAX_MESSAGE_BYTES = 64 * 1024
_MAX_ID = 128
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_STEP = re.compile(r"[^\s]{1,128}")
MAX_VARS = 64
MAX_VAR_CHARS = 1024
MAX_DIGITS = 32


class AgentMessageError(ValueError):
    """A message from the application that the bridge refuses (answered with `error`)."""


@dataclass(frozen=True, slots=True)
class Text:
    """A piece of one utterance; `last` ends it."""

    text: str
    id: str | None = None
    last: bool = False
    voice: str | None = None
    speed: float | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Clear:
    """Stop speaking now."""


@dataclass(frozen=True, slots=True)
class SendDigits:
    """Play DTMF tones into the call."""

    digits: str


@dataclass(frozen=True, slots=True)
class TransferTo:
    to: str


@dataclass(frozen=True, slots=True)
class Hangup:
    reason: str = "agent-hangup"


@dataclass(frozen=True, slots=True)
class Next:
    """Leave the agent step: merge `vars`, go to `step` (None: the step's `next`)."""

    step: str | None = None
    vars: dict[str, str] = field(default_factory=dict)


AgentCommand = Text | Clear | SendDigits | TransferTo | Hangup | Next

_FIELDS: dict[str, frozenset[str]] = {
    "text": frozenset({"type", "text", "id", "last", "voice", "speed", "language"}),
    "clear": frozenset({"type"}),
    "dtmf": frozenset({"type", "digits"}),
    "transfer": frozenset({"type", "to"}),
    "hangup": frozenset({"type", "reason"}),
    "next": frozenset({"type", "step", "vars"}),
}


def parse(raw: str | bytes) -> AgentCommand:
    """One message from the application as a command; raises AgentMessageError."""
    if isinstance(raw, bytes):
        raise AgentMessageError("binary frames from the application are not part of the protocol")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise AgentMessageError(f"message over {MAX_MESSAGE_BYTES} bytes")
    try:
        data = json.loads(raw)
    except ValueError:
        raise AgentMessageError("message is not JSON") from None
    if not isinstance(data, dict):
        raise AgentMessageError("message is not a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        known = ", ".join(sorted(_FIELDS))
        raise AgentMessageError(f"unknown type {str(kind)[:40]!r} (known: {known})")
    unknown = sorted(set(data) - _FIELDS[kind])
    if unknown:
        raise AgentMessageError(f"{kind}: unknown field(s) {', '.join(unknown)[:80]}")
    if kind == "text":
        return _text(data)
    if kind == "clear":
        return Clear()
    if kind == "dtmf":
        digits = data.get("digits")
        if not isinstance(digits, str) or not digits or len(digits) > MAX_DIGITS:
            raise AgentMessageError(f"dtmf: 'digits' must be 1 to {MAX_DIGITS} keys")
        if any(d not in DTMF_KEYS for d in digits):
            raise AgentMessageError("dtmf: digits are 0-9, *, #, A-D")
        return SendDigits(digits)
    if kind == "transfer":
        to = data.get("to")
        number = e164.parse(to) if isinstance(to, str) else None
        if number is None:
            raise AgentMessageError(f"transfer: 'to' must be an E.164 number ({e164.RULE})")
        return TransferTo(number)
    if kind == "hangup":
        reason = data.get("reason", "agent-hangup")
        if not isinstance(reason, str) or len(reason) > 200:
            raise AgentMessageError("hangup: 'reason' must be a string of at most 200 characters")
        return Hangup(reason or "agent-hangup")
    return _next(data)


def _text(data: dict[str, Any]) -> Text:
    text = data.get("text")
    if not isinstance(text, str):
        raise AgentMessageError("text: 'text' must be a string")
    uid = data.get("id")
    if uid is not None and (not isinstance(uid, str) or not _ID.fullmatch(uid)):
        raise AgentMessageError(f"text: 'id' must match [A-Za-z0-9_.:-]{{1,{_MAX_ID}}}")
    last = data.get("last", False)
    if not isinstance(last, bool):
        raise AgentMessageError("text: 'last' must be true or false")
    voice, language = data.get("voice"), data.get("language")
    for name, value in (("voice", voice), ("language", language)):
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 64):
            raise AgentMessageError(f"text: {name!r} must be a short string")
    speed = data.get("speed")
    if speed is not None:
        if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.5 <= speed <= 2:
            raise AgentMessageError("text: 'speed' must be a number from 0.5 to 2")
        speed = float(speed)
    return Text(text, uid, last, voice, speed, language)


def _next(data: dict[str, Any]) -> Next:
    step = data.get("step")
    if step is not None and (not isinstance(step, str) or not _STEP.fullmatch(step)):
        raise AgentMessageError("next: 'step' must be a step name")
    raw = data.get("vars", {})
    if not isinstance(raw, dict) or len(raw) > MAX_VARS:
        raise AgentMessageError(f"next: 'vars' must be an object of at most {MAX_VARS} entries")
    values: dict[str, str] = {}
    for name, value in raw.items():
        if not _VAR.fullmatch(name):
            raise AgentMessageError(f"next: {name[:40]!r} is not a variable name")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise AgentMessageError(f"next: variable {name!r} must be a string or a number")
        text = str(value)
        if len(text) > MAX_VAR_CHARS:
            raise AgentMessageError(f"next: variable {name!r} is over {MAX_VAR_CHARS} characters")
        values[name] = text
    return Next(step, values)


def message(kind: str, **fields: Any) -> str:
    """A message for the application: `{"type": kind, ...fields}` as compact JSON."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":"), ensure_ascii=False)
