"""`LiveFeed`: what the console shows of live calls beyond the call API's view of them, kept
from the calls' events (a `CallObserver` in `Bridge.observers`): each call's time to first audio
and its barge-ins, and a change signal the event stream waits on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["LiveFeed"]

# The events that change what the live view shows.
_CHANGES = frozenset({"started", "step", "first_audio", "barge_in", "ended"})


@dataclass(slots=True)
class _Figures:
    started: float  # monotonic
    first_audio_ms: float | None = None
    barge_ins: int = 0


class LiveFeed:
    """Live calls' figures by call id, and a version that moves on every change."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._calls: dict[str, _Figures] = {}
        self.version = 0
        self._changed = asyncio.Event()

    def __call__(self, call_id: str, kind: str, fields: dict[str, Any]) -> None:
        if kind == "started":
            self._calls[call_id] = _Figures(self._clock())
        figures = self._calls.get(call_id)
        if figures is None:
            return
        if kind == "first_audio" and figures.first_audio_ms is None:
            figures.first_audio_ms = round((self._clock() - figures.started) * 1000, 1)
        elif kind == "barge_in":
            figures.barge_ins += 1
        elif kind == "ended":
            del self._calls[call_id]
        if kind in _CHANGES:
            self.version += 1
            self._changed.set()
            self._changed = asyncio.Event()

    def snapshot(self, live_calls: list[dict[str, Any]]) -> dict[str, Any]:
        """`{"calls": [...]}`: the call API's live calls (`CallDesk.live_calls`) with the time
        in call, time to first audio and barge-ins of those streaming here."""
        now = self._clock()
        calls = []
        for call in live_calls:
            figures = self._calls.get(str(call.get("call_id")))
            calls.append({
                **call,
                "seconds": round(now - figures.started, 1) if figures else None,
                "first_audio_ms": figures.first_audio_ms if figures else None,
                "barge_ins": figures.barge_ins if figures else 0,
            })  # fmt: skip
        return {"calls": calls}

    async def wait_change(self, version: int, limit: float) -> None:
        """Return once `version` is out of date, or after `limit` seconds."""
        if self.version != version:
            return
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await changed.wait()
