"""A carrier's playback queue, modelled in real time: what a simulated caller hears, and when.

Audio the bridge sends is queued and plays at 1x; a mark is reached when everything queued
before it has played; a clear drops what has not played yet. The model also tracks the lead
(audio queued but not yet played), which the bridge promises to keep bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class _Segment:
    start: float  # clock time its first sample plays
    data: bytes
    cut_at: float | None = None  # clock time a clear dropped the rest


@dataclass
class Playout:
    """The queue of one call. `bytes_per_second` of the carrier's encoding (8000 for μ-law)."""

    bytes_per_second: int
    frame_bytes: int
    queue_end: float = 0.0
    max_lead: float = 0.0
    segments: list[_Segment] = field(default_factory=list)

    def lead(self, now: float) -> float:
        return max(0.0, self.queue_end - now)

    def enqueue(self, now: float, data: bytes) -> float:
        """Queue audio received at `now`; returns when it starts playing."""
        start = max(self.queue_end, now)
        self.queue_end = start + len(data) / self.bytes_per_second
        self.segments.append(_Segment(start, data))
        self.max_lead = max(self.max_lead, self.queue_end - now)
        return start

    def mark_time(self, now: float) -> float:
        """When a mark queued at `now` is reached."""
        return max(self.queue_end, now)

    def clear(self, now: float) -> float:
        """Drop everything not yet played; returns the seconds of audio dropped."""
        dropped = self.lead(now)
        for seg in self.segments:
            end = seg.start + len(seg.data) / self.bytes_per_second
            if seg.cut_at is None and end > now:
                seg.cut_at = max(now, seg.start)
        self.queue_end = now
        # A clear ends the stream of prompts: the next audio after it is not an underrun.
        self.segments.append(_Segment(now, b"", cut_at=now))
        return dropped

    def heard(self, until: float | None = None) -> bytes:
        """Everything played by `until` (default: all that was not cleared), in order."""
        out = bytearray()
        for seg in self.segments:
            end = seg.start + len(seg.data) / self.bytes_per_second
            stop = min(x for x in (end, seg.cut_at, until) if x is not None)
            if stop <= seg.start:
                continue
            played = int((stop - seg.start) * self.bytes_per_second)
            played -= played % self.frame_bytes
            out += seg.data[: min(len(seg.data), played)] if stop < end else seg.data
        return bytes(out)
