"""Text-to-speech: the Waves WebSocket client, its typed errors, and the offline stand-in."""

from telebridge.tts.errors import (
    TTSError,
    WavesAuthError,
    WavesConnectionError,
    WavesForbiddenError,
    WavesRateLimited,
    WavesServerError,
    WavesTimeout,
    WavesTruncated,
)
from telebridge.tts.waves import SpeechOptions, Synthesizer, TextStream, WavesClient

__all__ = [
    "SpeechOptions",
    "Synthesizer",
    "TTSError",
    "TextStream",
    "WavesAuthError",
    "WavesClient",
    "WavesConnectionError",
    "WavesForbiddenError",
    "WavesRateLimited",
    "WavesServerError",
    "WavesTimeout",
    "WavesTruncated",
]
