"""The one reader of the WAV files flows play: 16-bit mono PCM at its own sample rate.

Flow checks read the header (so a bad file is a flow error before any call), and the runner's I/O
edge reads the samples when a call first plays the file.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Literal


class WavError(Exception):
    """A WAV file a flow names cannot be played: missing, unreadable, or not 16-bit mono PCM."""

    def __init__(self, kind: Literal["missing", "unreadable", "format"], detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def read_wav(path: Path, *, header_only: bool = False) -> tuple[bytes, int]:
    """The file's samples (none with `header_only`) and sample rate; raises WavError."""
    try:
        with wave.open(str(path), "rb") as wav:
            if (wav.getnchannels(), wav.getsampwidth()) != (1, 2):
                raise WavError("format", "not 16-bit mono PCM WAV")
            pcm = b"" if header_only else wav.readframes(wav.getnframes())
            return pcm, wav.getframerate()
    except FileNotFoundError as exc:
        raise WavError("missing", str(exc)) from None
    except (OSError, EOFError, wave.Error) as exc:
        raise WavError("unreadable", str(exc)) from None
