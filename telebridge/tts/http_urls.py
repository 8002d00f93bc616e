"""The HTTP URLs of Waves, derived from WAVES_URL (the WebSocket URL): same host and port,
`wss://` -> `https://`, `ws://` -> `http://`, and the fixed paths of protocols/waves.md.

Only the scheme, host and port are kept: the query (`?timeout=N` is a WebSocket option) and any
user info are dropped, so these URLs are safe to print in messages.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["SSE_PATH", "SYNC_PATH", "VOICES_PATH", "sse_url", "sync_url", "voices_url"]

SSE_PATH = "/waves/v1/tts/live"
SYNC_PATH = "/waves/v1/tts"
VOICES_PATH = "/waves/v1/lightning-v3.1/get_voices"

_SCHEMES = {"wss": "https", "ws": "http", "https": "https", "http": "http"}


def sse_url(ws_url: str) -> str:
    """Where HTTP streaming (SSE) requests go: `POST /waves/v1/tts/live`."""
    return _origin(ws_url) + SSE_PATH


def sync_url(ws_url: str) -> str:
    """Where HTTP sync requests go: `POST /waves/v1/tts`."""
    return _origin(ws_url) + SYNC_PATH


def voices_url(ws_url: str) -> str:
    """The voice list (`GET`), a cheap authenticated request that opens a connection."""
    return _origin(ws_url) + VOICES_PATH


def _origin(ws_url: str) -> str:
    parts = urlsplit(ws_url.strip())
    scheme = _SCHEMES.get(parts.scheme.lower())
    # The URL itself is not quoted back: a query could hold something private.
    if scheme is None:
        raise ValueError("WAVES_URL must start with wss:// or ws://")
    host = parts.netloc.rpartition("@")[2]
    if not parts.hostname or not host:
        raise ValueError("WAVES_URL has no host")
    return f"{scheme}://{host}"
