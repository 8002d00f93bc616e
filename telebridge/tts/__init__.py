"""Text-to-speech: the Waves WebSocket client, its typed errors, and the offline stand-in.

The client is layered one way: `wire` (the message format, no I/O) <- `pool` (the sockets) <-
`request` (one request on one socket) <- `text_stream` and `waves` (the client). `speech` holds
the options and the `Synthesizer` protocol that the prompt cache and guard also follow. tts imports
only root modules of the package (`telebridge.logs`).
"""

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
from telebridge.tts.speech import SpeechOptions, Synthesizer
from telebridge.tts.text_stream import TextStream
from telebridge.tts.waves import WavesClient

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
