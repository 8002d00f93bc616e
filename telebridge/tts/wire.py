"""The Waves WebSocket message format, without I/O: the request JSON, parsing of server frames,
request ids, and turning error frames, refused handshakes and `Retry-After` into typed errors."""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from telebridge.logs import redact
from telebridge.tts.errors import (
    TTSError,
    WavesAuthError,
    WavesConnectionError,
    WavesForbiddenError,
    WavesRateLimited,
    WavesServerError,
)
from telebridge.tts.speech import SpeechOptions

__all__ = [
    "MAX_MESSAGE_BYTES",
    "Frame",
    "check_request_id",
    "frame_error",
    "new_request_id",
    "parse_frame",
    "parse_retry_after",
    "refusal_error",
    "request_json",
]

# Waves chunks are small (about 150 ms), but a few MB leaves room for servers that send more.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_RATE_LIMIT_WORDS = ("concurren", "rate limit", "rate_limit", "ratelimit", "too many", "429")


@dataclass(frozen=True, slots=True)
class Frame:
    """One server frame, parsed. Statuses other than chunk/complete/error are passed through."""

    status: str
    request_id: str | None = None
    external_request_id: str | None = None
    audio: bytes = b""
    message: str = ""
    code: str | None = None
    retry_after: float | None = None


def request_json(
    text: str,
    *,
    sample_rate: int,
    options: SpeechOptions,
    rid: str,
    more: bool = False,
    flush: bool = False,
) -> str:
    """The JSON of one request frame (or one piece of a streamed request)."""
    body: dict[str, Any] = {
        "voice_id": options.voice_id,
        "text": text,
        "model": options.model,
        "sample_rate": sample_rate,
        "speed": options.speed,
        "language": options.language,
        "request_id": rid,
        "word_timestamps": False,
    }
    if more:
        body["continue"] = True
    if flush:
        body["flush"] = True
    return json.dumps(body)


def new_request_id() -> str:
    """A fresh request id in the shape Waves accepts."""
    return "tb_" + secrets.token_hex(8)


def check_request_id(request_id: str | None) -> str:
    """`request_id` if Waves accepts its shape, a fresh one if None; else raise `ValueError`."""
    if request_id is None:
        return new_request_id()
    if not _REQUEST_ID.fullmatch(request_id):
        raise ValueError("request_id must match [A-Za-z0-9_.-]{1,128}")
    return request_id


def parse_frame(raw: str | bytes) -> Frame:
    """Parse one WebSocket message from Waves, or raise `WavesServerError` if it is malformed."""
    if isinstance(raw, bytes):
        raise WavesServerError("Waves sent a binary frame where JSON text was expected")
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):  # deep nesting overflows the parser
        raise WavesServerError("Waves sent a frame that is not valid JSON") from None
    if not isinstance(obj, dict):
        raise WavesServerError("Waves sent a JSON frame that is not an object")
    status = obj.get("status")
    if not isinstance(status, str):
        raise WavesServerError("Waves sent a frame without a status")
    ids = {k: obj.get(k) for k in ("request_id", "external_request_id")}
    request_id, external_id = (v if isinstance(v, str) and v else None for v in ids.values())
    if status == "chunk":
        data = obj.get("data")
        encoded = data.get("audio") if isinstance(data, dict) else None
        if not isinstance(encoded, str):
            raise WavesServerError("Waves sent a chunk without data.audio")
        try:
            audio = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise WavesServerError("Waves sent a chunk whose audio is not valid base64") from None
        return Frame(status, request_id, external_id, audio=audio)
    if status == "error":
        # Two shapes: flat {"message": ...} (e.g. idle timeout) and nested {"error": {...}}.
        nested = obj.get("error")
        source = nested if isinstance(nested, dict) else obj
        message = source.get("message")
        if not isinstance(message, str) or not message:
            message = nested if isinstance(nested, str) and nested else "unspecified error"
        code = source.get("code")
        after = source.get("retry_after", obj.get("retry_after"))
        return Frame(
            status,
            request_id,
            external_id,
            message=message,
            code=str(code) if isinstance(code, str | int) and code != "" else None,
            retry_after=_seconds(after),
        )
    return Frame(status, request_id, external_id)


def _seconds(value: object) -> float | None:
    """A non-negative finite number of seconds from untrusted JSON, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if 0 <= seconds < float("inf") else None


def frame_error(frame: Frame, *, secret: str) -> TTSError:
    """The typed error an error frame stands for; `secret` (the API key) never gets into it."""
    message = redact(frame.message, secret)
    code = redact(frame.code, secret) if frame.code is not None else None
    wording = f"{message} {code or ''}".lower()
    if any(word in wording for word in _RATE_LIMIT_WORDS):
        return WavesRateLimited(f"Waves: {message}", retry_after=frame.retry_after)
    return WavesServerError(f"Waves: {message}", code=code)


def refusal_error(status: int, headers: Mapping[str, str]) -> TTSError:
    """The typed error for a WebSocket upgrade that Waves answered with HTTP `status`."""
    if status == 401:
        return WavesAuthError("Waves refused the API key (HTTP 401): check WAVES_API_KEY")
    if status == 403:
        return WavesForbiddenError("the Waves API key lacks access (HTTP 403)")
    if status == 429:
        after = parse_retry_after(headers)
        return WavesRateLimited("Waves concurrency limit reached (HTTP 429)", retry_after=after)
    return WavesConnectionError(f"Waves refused the connection (HTTP {status})")


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from a `Retry-After` header (seconds or an HTTP date), else None."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
