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
from telebridge.tts.waves import SpeechOptions, TextStream, WavesClient

__all__ = [
    "SpeechOptions",
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
