"""The failures the Waves stand-in can be told to inject, for tests of every transport."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Faults"]


@dataclass
class Faults:
    """Failures to inject. Mutable at runtime; read at each handshake or request."""

    first_chunk_delay: float = 0.0
    drop_after_bytes: int | None = None
    error_message: str | None = None
    flat_error: bool = False
    refuse_status: int | None = None
    retry_after: float | None = None
    close_after_complete: bool = False
    chunk_bytes: int | None = None
    chunk_interval: float = 0.0  # between 150 ms chunks; HTTP streaming scales it to its chunks
    # Inject the per-request faults (error, first-chunk delay, drop) only into requests whose
    # text has this, so a healthy call can run beside a failing one.
    only_for: str | None = None
    error_count: int | None = None  # inject the error into this many requests, then heal
    # Answer every HTTP request (SSE and sync) with this status; `refuse_status` is the
    # WebSocket's, so a test can refuse upgrades while HTTP works, or both.
    http_status: int | None = None

    def applies_to(self, text: str) -> bool:
        return self.only_for is None or self.only_for in text

    def take_error(self, text: str) -> str | None:
        """The error to answer a request for `text` with, if one is injected."""
        if self.error_message is None or not self.applies_to(text):
            return None
        if self.error_count is not None:
            if self.error_count <= 0:
                return None
            self.error_count -= 1
        return self.error_message
