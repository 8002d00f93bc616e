"""When streamed text is spoken: an utterance's pieces cut into segments at sensible places.

A language model streams one sentence word by word; Waves speaks what it was sent once it is
told to flush. `Segmenter` decides the flushes, with no I/O and its clock given: at the end of a
sentence, at a clause boundary once a few words are held, when the held text grows past
`max_chars`, when it has waited `max_wait` seconds, and at the utterance's end. It never cuts
inside a word (a piece may end mid-word: "Hel" + "lo"), except at the end.

    seg = Segmenter()
    for segment in seg.feed(piece, now): flush(segment)
    ... when seg.due() passes: for segment in seg.expire(now): flush(segment)
    for segment in seg.finish(): flush(segment)

The bridge does this itself rather than relying on Waves' `max_buffer_flush_ms`: each segment
is then answered by its own `complete`, so the bridge knows when an utterance is whole, and the
same segments go over HTTP streaming when the WebSocket is unavailable.
"""

from __future__ import annotations

import re

__all__ = ["MAX_CHARS", "MAX_WAIT", "MIN_CLAUSE", "Segmenter"]

MAX_WAIT = 0.3  # seconds held text may wait for a boundary
MAX_CHARS = 60  # held text longer than this is cut at its last space
MIN_CLAUSE = 20  # a clause boundary (, ; :) cuts only once this much is held

# Sentence ends (also the CJK full stops and marks), then closing quotes or brackets, then space.
_SENTENCE = re.compile(r"[.!?\u2026\u3002\uff01\uff1f]+[\"'\u201d\u2019)\]]*\s+")
_CLAUSE = re.compile(r"[,;:—]\s+")
_SPACE = re.compile(r"\s+")


class Segmenter:
    """Cuts one utterance's streamed text into the segments Waves is asked to speak."""

    def __init__(
        self,
        *,
        max_wait: float = MAX_WAIT,
        max_chars: int = MAX_CHARS,
        min_clause: int = MIN_CLAUSE,
    ) -> None:
        if max_wait <= 0 or max_chars < 1:
            raise ValueError("max_wait and max_chars must be positive")
        self._max_wait = max_wait
        self._max_chars = max_chars
        self._min_clause = min_clause
        self._held = ""
        self._since: float | None = None  # when the oldest held text arrived

    @property
    def held(self) -> str:
        return self._held

    def feed(self, text: str, now: float) -> list[str]:
        """Add a piece; the segments that are ready now."""
        if not text:
            return []
        if not self._held.strip():
            self._since = now
        self._held += text
        out: list[str] = []
        while (cut := self._boundary()) is not None:
            out.append(self._take(cut, now))
        return out

    def due(self) -> float | None:
        """When held text must be flushed even without a boundary (None: nothing held)."""
        if self._since is None or not self._held.strip():
            return None
        return self._since + self._max_wait

    def expire(self, now: float) -> list[str]:
        """The held text up to its last space, once it has waited long enough."""
        due = self.due()
        if due is None or now < due:
            return []
        spaces = [m.end() for m in _SPACE.finditer(self._held)]
        cut = spaces[-1] if spaces else 0
        if cut == 0 or not self._held[:cut].strip():
            # One word still arriving: wait for its end (or `finish`); check again later.
            self._since = now
            return []
        return [self._take(cut, now)]

    def finish(self) -> list[str]:
        """Everything still held (the utterance is over)."""
        rest, self._held, self._since = self._held, "", None
        return [rest] if rest.strip() else []

    def _boundary(self) -> int | None:
        held = self._held
        sentence = _SENTENCE.search(held)
        if sentence is not None and held[: sentence.end()].strip():
            return sentence.end()
        for clause in _CLAUSE.finditer(held):
            if clause.start() >= self._min_clause:
                return clause.end()
        if len(held) > self._max_chars:
            spaces = [m.end() for m in _SPACE.finditer(held, 0, self._max_chars + 1)]
            spaces = [s for s in spaces if held[:s].strip()]
            if spaces:
                return spaces[-1]
        return None

    def _take(self, cut: int, now: float) -> str:
        segment, self._held = self._held[:cut], self._held[cut:]
        self._since = now if self._held.strip() else None
        return segment
