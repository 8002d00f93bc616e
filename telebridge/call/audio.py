"""The audio path without I/O: Waves PCM chunks in, whole 20 ms carrier frames out.

`FrameEncoder` resamples (only when the rates differ), encodes (μ-law or L16) and frames the
PCM16LE mono stream that Waves produces, whatever the chunk boundaries. WAV helpers read
prompts and write what the caller heard.
"""

from __future__ import annotations

import os
import struct
import warnings
import wave
from typing import Literal

# audioop warns that it is deprecated on 3.11/3.12 (pytest turns warnings into errors); on
# 3.13+ the audioop-lts package supplies the same module without the warning.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "AudioFormatError",
    "Codec",
    "FrameEncoder",
    "l16_silence",
    "mulaw_silence",
    "mulaw_to_pcm",
    "pcm_to_mulaw",
    "read_wav",
    "write_wav",
]

Codec = Literal["mulaw", "l16"]

_SAMPLE_WIDTH = 2  # PCM16
_MULAW_SILENCE = b"\xff"  # lin2ulaw(0)
_WAVE_FORMAT_MULAW = 7


class AudioFormatError(ValueError):
    """An audio file or stream that telebridge cannot use; the message says why."""


def pcm_to_mulaw(pcm: bytes) -> bytes:
    """PCM16LE mono to G.711 μ-law, one byte per sample."""
    return audioop.lin2ulaw(pcm, _SAMPLE_WIDTH)


def mulaw_to_pcm(data: bytes) -> bytes:
    """G.711 μ-law to PCM16LE mono, two bytes per sample."""
    return audioop.ulaw2lin(data, _SAMPLE_WIDTH)


def _samples_per_frame(rate: int, frame_ms: int) -> int:
    samples, rest = divmod(rate * frame_ms, 1000)
    if rest or samples <= 0:
        raise ValueError(f"{frame_ms} ms at {rate} Hz is not a whole number of samples")
    return samples


def mulaw_silence(frames: int, frame_ms: int = 20) -> bytes:
    """`frames` frames of μ-law 8 kHz silence."""
    return _MULAW_SILENCE * (frames * _samples_per_frame(8000, frame_ms))


def l16_silence(frames: int, rate: int, frame_ms: int = 20) -> bytes:
    """`frames` frames of L16 silence at `rate` Hz."""
    return bytes(frames * _samples_per_frame(rate, frame_ms) * _SAMPLE_WIDTH)


class FrameEncoder:
    """PCM16LE mono chunks at `src_rate` in, whole 20 ms carrier frames out.

    Output depends only on the bytes fed, never on how they were chunked: an odd byte that
    splits a sample waits for its other half, and the resampler keeps its state across chunks.
    """

    def __init__(self, *, src_rate: int, dst_rate: int, codec: Codec, frame_ms: int = 20) -> None:
        if codec not in ("mulaw", "l16"):
            raise ValueError(f"unknown codec {codec!r}: expected 'mulaw' or 'l16'")
        if src_rate <= 0:
            raise ValueError(f"source rate must be positive, not {src_rate}")
        samples = _samples_per_frame(dst_rate, frame_ms)
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self.codec: Codec = codec
        self.frame_ms = frame_ms
        self.frame_bytes = samples * (1 if codec == "mulaw" else _SAMPLE_WIDTH)
        self._frame_pcm = samples * _SAMPLE_WIDTH
        self._resampling = src_rate != dst_rate
        self._odd = b""  # half a sample waiting for its other byte (before the resampler)
        self._buf = bytearray()  # PCM at dst_rate, shorter than one frame
        self._rc_state: tuple[int, tuple[tuple[int, int], ...]] | None = None

    @property
    def pending(self) -> int:
        """Bytes of PCM buffered that do not yet make a whole frame."""
        return len(self._buf) + len(self._odd)

    def feed(self, pcm: bytes) -> bytes:
        """Take any chunk of PCM; return zero or more whole encoded frames, concatenated."""
        if not pcm:
            return b""
        data = self._odd + pcm if self._odd else pcm
        whole = len(data) & ~1
        self._odd = bytes(data[whole:])
        with memoryview(data) as view:
            return self._frames(self._resample(view[:whole]))

    def flush(self) -> bytes:
        """End of an utterance: the remainder padded with silence to a frame boundary.

        Returns b"" when nothing is pending. That is one frame, except when resampling: a
        dangling half sample, once completed, may resample to no sample at all, or (upsampling)
        to several that spill into a second frame. Resets framing and resampler state
        afterwards, so the next utterance starts clean.
        """
        # A dangling byte is half a sample: complete it with a zero high byte rather than drop it.
        tail = self._resample(self._odd + b"\x00") if self._odd else b""
        self._odd = b""
        out = self._frames(tail)
        if self._buf:
            self._buf.extend(bytes(self._frame_pcm - len(self._buf)))
            out += self._frames(b"")
        self.reset()
        return out

    def reset(self) -> None:
        """Drop everything pending (barge-in): nothing fed so far will come out."""
        self._odd = b""
        self._buf.clear()
        self._rc_state = None

    def _resample(self, samples: bytes | memoryview) -> bytes | memoryview:
        if not self._resampling or not samples:
            return samples
        out, self._rc_state = audioop.ratecv(
            samples, _SAMPLE_WIDTH, 1, self.src_rate, self.dst_rate, self._rc_state
        )
        return out

    def _frames(self, pcm: bytes | memoryview) -> bytes:
        """Append PCM to the buffer, cut off the whole frames and encode them in one go."""
        if self._buf:
            self._buf += pcm
            source: bytes | bytearray | memoryview = self._buf
        else:
            source = pcm  # common case: no remainder, so skip copying the chunk into the buffer
        cut = len(source) - len(source) % self._frame_pcm
        with memoryview(source) as view:
            ready = view[:cut]
            if self.codec == "mulaw":
                out = audioop.lin2ulaw(ready, _SAMPLE_WIDTH) if cut else b""
            else:
                out = ready.tobytes()
            rest = view[cut:].tobytes()
            ready.release()
        # The remainder is under one frame, so rebuilding the buffer costs little.
        self._buf = bytearray(rest)
        return out


def _to_pcm16(frames: bytes, width: int) -> bytes:
    if width == 1:
        # WAV stores 8-bit samples unsigned; audioop expects them signed.
        frames = audioop.bias(frames, 1, -128)
    return frames if width == _SAMPLE_WIDTH else audioop.lin2lin(frames, width, _SAMPLE_WIDTH)


def _to_mono(pcm: bytes, channels: int, where: str) -> bytes:
    if channels == 1:
        return pcm
    if channels == 2:
        return audioop.tomono(pcm, _SAMPLE_WIDTH, 0.5, 0.5)
    raise AudioFormatError(f"{where}: {channels} channels; only mono or stereo WAV is supported")


def read_wav(path: str | os.PathLike[str]) -> tuple[bytes, int]:
    """Read a WAV file as PCM16LE mono at its own rate: `(pcm, sample_rate)`.

    Accepts 8/16/24/32-bit integer PCM and μ-law, mono or stereo (mixed down). Anything else
    raises `AudioFormatError`; a missing file raises `OSError` as usual.
    """
    where = os.fspath(path)
    try:
        with wave.open(where, "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except wave.Error as exc:
        if "unknown format: 7" in str(exc):
            return _read_mulaw_wav(where)
        raise AudioFormatError(f"{where}: not a usable WAV file ({exc})") from None
    except EOFError:
        raise AudioFormatError(f"{where}: truncated WAV file") from None
    if width not in (1, 2, 3, 4):
        raise AudioFormatError(f"{where}: {width * 8}-bit samples are not supported")
    if rate <= 0:
        raise AudioFormatError(f"{where}: invalid sample rate {rate}")
    usable = len(frames) - len(frames) % (width * channels)  # a truncated last frame is dropped
    return _to_mono(_to_pcm16(frames[:usable], width), channels, where), rate


def _read_mulaw_wav(where: str) -> tuple[bytes, int]:
    """The stdlib `wave` module reads only integer PCM; walk the RIFF chunks for μ-law."""
    with open(where, "rb") as f:
        blob = f.read()
    if blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise AudioFormatError(f"{where}: not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(blob):
        chunk_id, size = blob[pos : pos + 4], struct.unpack_from("<I", blob, pos + 4)[0]
        body = blob[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt " and len(body) >= 16:
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                break
            tag, channels, rate, bits = fmt
            if tag != _WAVE_FORMAT_MULAW or bits != 8 or rate <= 0:
                break
            usable = len(body) - len(body) % channels
            return _to_mono(mulaw_to_pcm(body[:usable]), channels, where), rate
        pos += 8 + size + (size & 1)  # chunks are padded to even length
    raise AudioFormatError(f"{where}: malformed μ-law WAV file")


def write_wav(path: str | os.PathLike[str], pcm: bytes, sample_rate: int) -> None:
    """Write PCM16LE mono as a 16-bit mono WAV file."""
    if len(pcm) % _SAMPLE_WIDTH:
        raise ValueError(f"PCM16 needs an even number of bytes, got {len(pcm)}")
    with wave.open(os.fspath(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(_SAMPLE_WIDTH)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
