"""Typed failures of text-to-speech, so callers can retry, back off or give up by kind.

Every error has a short `kind` for metrics and logs. Messages never carry the API key: they are
built from status codes and server text only.
"""

from __future__ import annotations


class TTSError(Exception):
    """Synthesis failed; `kind` names the failure class for metrics and logs."""

    kind: str = "tts"


class WavesAuthError(TTSError):
    """The handshake was refused with 401: the API key is missing or wrong."""

    kind = "auth"


class WavesForbiddenError(TTSError):
    """The handshake was refused with 403: the key lacks access to this API."""

    kind = "forbidden"


class WavesRateLimited(TTSError):
    """Over the concurrency limit (HTTP 429 or an error frame saying so)."""

    kind = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        # Seconds the server asked us to wait (Retry-After), when it said.
        self.retry_after = retry_after


class WavesServerError(TTSError):
    """The server answered with an error frame, or with something that is not the protocol."""

    kind = "server_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message if code is None else f"{message} (code {code})")
        self.message = message
        self.code = code


class WavesTruncated(TTSError):
    """The socket closed before the request's `complete`: the audio is cut short."""

    kind = "truncated"


class WavesTimeout(TTSError):
    """No audio arrived in time."""

    kind = "timeout"


class WavesConnectionError(TTSError):
    """The WebSocket could not be opened (network error, timeout, unexpected HTTP status)."""

    kind = "connection"
