"""What speech is asked for: `SpeechOptions` (voice, model, language, speed) and the `Synthesizer`
protocol every source of speech follows (the Waves client, the prompt cache, the guard)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

__all__ = ["SpeechOptions", "Synthesizer"]


@dataclass(frozen=True, slots=True)
class SpeechOptions:
    """How to speak: which Waves voice, model, language and speed."""

    voice_id: str
    model: str = "lightning_v3.1"
    language: str = "en"
    speed: float = 1.0


class Synthesizer(Protocol):
    """Where speech comes from: the Waves client, a prompt cache, or anything that speaks alike."""

    def synthesize(
        self,
        text: str,
        *,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None = None,
    ) -> AsyncIterator[bytes]: ...
