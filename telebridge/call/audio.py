"""The audio path without I/O: Waves PCM chunks in, whole 20 ms carrier frames out.

`FrameEncoder` resamples (only when the rates differ), encodes (μ-law or L16) and frames the
PCM16LE mono stream that Waves produces, whatever the chunk boundaries. `mulaw_to_pcm` decodes
what a μ-law carrier was sent (the simulator uses it to let you hear a call).
"""

from __future__ import annotations

import warnings
from typing import Literal

# audioop warns that it is deprecated on 3.11/3.12 (pytest turns warnings into errors); on
# 3.13+ the audioop-lts package supplies the same module without the warning.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["Codec", "FrameEncoder", "mulaw_to_pcm"]

Codec = Literal["mulaw", "l16"]

_SAMPLE_WIDTH = 2  # PCM16


def mulaw_to_pcm(data: bytes) -> bytes:
    """G.711 μ-law to PCM16LE mono, two bytes per sample."""
    return audioop.ulaw2lin(data, _SAMPLE_WIDTH)


def _samples_per_frame(rate: int, frame_ms: int) -> int:
    samples, rest = divmod(rate * frame_ms, 1000)
    if rest or samples <= 0:
        raise ValueError(f"{frame_ms} ms at {rate} Hz is not a whole number of samples")
    return samples


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
