"""What speech is asked for: `SpeechOptions` (voice, model, language, speed) and the `Synthesizer`
protocol every source of speech follows (the Waves client, the prompt cache, the guard), and
`TextSpeech`, one utterance whose text arrives in pieces (`Synthesizer`s that can take text in
pieces also have `stream`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from telebridge.settings import Settings

__all__ = ["SpeechOptions", "StreamingSynthesizer", "Synthesizer", "TextSpeech"]


@dataclass(frozen=True, slots=True)
class SpeechOptions:
    """How to speak: which Waves voice, model, language and speed."""

    voice_id: str
    model: str = "lightning_v3.1"
    language: str = "en"
    speed: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SpeechOptions:
        """The bridge's default speech: WAVES_VOICE, WAVES_MODEL, WAVES_LANGUAGE, WAVES_SPEED."""
        return cls(
            voice_id=settings.waves_voice,
            model=settings.waves_model,
            language=settings.waves_language,
            speed=settings.waves_speed,
        )


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


class TextSpeech(Protocol):
    """One utterance whose text arrives in pieces: `send` pieces, `flush` what should be spoken
    now, `finish` at the end; iterate (once) for its PCM; `aclose` abandons it at once."""

    async def send(self, text: str) -> None: ...
    async def flush(self) -> None: ...
    async def finish(self) -> None: ...
    async def aclose(self) -> None: ...
    def __aiter__(self) -> AsyncIterator[bytes]: ...


class StreamingSynthesizer(Synthesizer, Protocol):
    """A Synthesizer that also takes text in pieces (the WebSocket client and its wrappers)."""

    def stream(
        self, *, sample_rate: int, options: SpeechOptions, request_id: str | None = None
    ) -> TextSpeech: ...
