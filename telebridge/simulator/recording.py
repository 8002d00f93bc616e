"""What the simulated caller heard, written as a WAV file (`telebridge simulate --out call.wav`)."""

from __future__ import annotations

import os
import wave

__all__ = ["write_wav"]


def write_wav(path: str | os.PathLike[str], pcm: bytes, sample_rate: int) -> None:
    """Write PCM16LE mono as a 16-bit mono WAV file."""
    if len(pcm) % 2:
        raise ValueError(f"PCM16 needs an even number of bytes, got {len(pcm)}")
    with wave.open(os.fspath(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
