"""When audio frames go out: a model of the carrier's playback queue, driven by a given clock.

The carrier plays what it receives in real time. Audio sent but not yet due to play (the
"lead") is kept under `max_lead` seconds, so a barge-in or clear takes effect at once, while
sending as soon as there is room keeps the carrier from running dry whenever synthesis keeps
up. No I/O: the caller passes `now` (e.g. `loop.time()`) and does the sleeping and sending::

    n = min(pacer.room(now), len(ready))
    if n:
        send(ready[:n])
        pacer.sent(now, n)
    else:
        await asyncio.sleep(pacer.wait(now, min(batch, len(ready))))
"""

from __future__ import annotations

import math

__all__ = ["Pacer"]

# Slack for float arithmetic on clock readings: a queue that is exactly full still takes its
# last frame, and a send this close to the drain time is not an underrun. One microsecond is
# far above float rounding at monotonic-clock magnitudes and far below anything audible.
_EPS = 1e-6


class Pacer:
    """Keeps the carrier's queue between empty and `max_lead` seconds of audio."""

    def __init__(self, *, max_lead: float, frame_duration: float = 0.02) -> None:
        if not frame_duration > 0:
            raise ValueError(f"frame_duration must be positive, not {frame_duration}")
        if not max_lead + _EPS >= frame_duration:
            # Otherwise room() would stay 0 forever and the call would stall.
            raise ValueError(f"max_lead {max_lead} s cannot hold one {frame_duration} s frame")
        self.max_lead = max_lead
        self.frame_duration = frame_duration
        self.underruns = 0
        self._drained_at = -math.inf  # nothing sent yet: the queue is empty at any time
        self._active = False  # inside an utterance: a drain before the next send is an underrun

    @property
    def capacity(self) -> int:
        """Frames an empty queue takes: the most one send may ever carry."""
        return math.floor((self.max_lead + _EPS) / self.frame_duration)

    def lead(self, now: float) -> float:
        """Seconds of audio sent but not yet played at `now`."""
        return max(0.0, self._drained_at - now)

    def room(self, now: float) -> int:
        """Frames that may be sent at `now` without the lead exceeding `max_lead`."""
        spare = self.max_lead - self.lead(now) + _EPS
        return max(0, math.floor(spare / self.frame_duration))

    def sent(self, now: float, frames: int) -> None:
        """Record `frames` frames handed to the carrier at `now`."""
        if frames < 0:
            raise ValueError(f"cannot send {frames} frames")
        room = self.room(now)
        if frames > room:
            raise ValueError(f"{frames} frames sent with room for {room}: lead would pass max_lead")
        if frames == 0:
            return
        if self._active and now - self._drained_at > _EPS:
            self.underruns += 1
        self._drained_at = max(self._drained_at, now) + frames * self.frame_duration
        self._active = True

    def wait(self, now: float, frames: int = 1) -> float:
        """Seconds from `now` until `frames` more frames fit (0.0 if they fit now)."""
        if frames <= 0 or self.room(now) >= frames:
            return 0.0
        needed = frames * self.frame_duration
        if needed > self.max_lead + _EPS:
            raise ValueError(f"{frames} frames never fit under max_lead {self.max_lead} s")
        # Room for `frames` opens once the lead has fallen to max_lead - needed.
        return max(0.0, self._drained_at - (self.max_lead - needed) - now)

    def reset(self, now: float) -> None:
        """The carrier's queue was cleared at `now`: nothing is queued any more."""
        self._drained_at = now
        # A cleared queue is deliberate silence, so the next send is not an underrun.
        self._active = False

    def drained_at(self) -> float:
        """Clock time when everything sent so far will have played (-inf before any send)."""
        return self._drained_at

    def idle(self) -> None:
        """The utterance ended: the queue running dry from here on is expected."""
        self._active = False
