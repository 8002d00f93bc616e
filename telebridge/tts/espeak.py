"""Offline speech from the bundled libespeak-ng, through a minimal ctypes binding.

This is the embedded synthesizer behind the local Waves stand-in: real, intelligible speech with
no network and no API key. Output is deterministic: the same arguments give the same bytes, in
this process and the next.
"""

from __future__ import annotations

import _ctypes
import array
import ctypes
import logging
import sys
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import espeakng_loader

with warnings.catch_warnings():
    # audioop is deprecated on 3.11/3.12 (audioop-lts replaces it on 3.13); the test suite
    # turns warnings into errors, so the import must not emit one.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

logger = logging.getLogger(__name__)

# Constants from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_EE_OK = 0

# espeak's words-per-minute range; clamping here keeps the mapping from `speed` explicit.
_BASE_WPM = 175
_MIN_WPM = 80
_MAX_WPM = 450

# Rendered utterances kept for reuse (phone prompts repeat a lot), bounded in bytes.
_CACHE_MAX_BYTES = 16 * 1024 * 1024

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

# espeak-ng has global state and is not thread-safe: every use goes through this lock.
_lock = threading.Lock()
_native_rate: int | None = None
_cache: OrderedDict[tuple[str, str, int, int], bytes] = OrderedDict()
_cache_bytes = 0


class _Utterance:
    """Collects the samples espeak hands to its callback during one synchronous synthesis."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        # The CFUNCTYPE object must outlive every call into the library, so it lives here.
        self.callback = _SYNTH_CALLBACK(self._on_samples)

    def _on_samples(self, wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int) -> int:
        if count > 0 and wav:
            self.chunks.append(ctypes.string_at(wav, count * 2))
        return 0  # 0 = keep synthesizing


@contextmanager
def _fresh_library() -> Iterator[tuple[ctypes.CDLL, int]]:
    """Load and initialise libespeak-ng, then unload it again.

    The wave generator keeps state between utterances in C statics that no API resets (pitch
    flutter position, gain control, cycle counters), so the same text sounds slightly different
    on every call. Unloading the library after each utterance throws that state away; loading
    and initialising costs a few milliseconds. espeak_Terminate does not free every voice
    allocation (a few KB per load), which the cache in `synthesize` keeps small for repeated
    prompts.
    """
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    try:
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Terminate.restype = ctypes.c_int
        data_path = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise (code {rate})")
        try:
            yield lib, rate
        finally:
            lib.espeak_Terminate()
    finally:
        _ctypes.dlclose(lib._handle)


def _speak(text: str, voice: str, wpm: int) -> tuple[bytes, int]:
    """Native-rate PCM16 in host byte order, and that rate. Caller holds `_lock`."""
    global _native_rate
    utterance = _Utterance()
    encoded = text.encode("utf-8")
    buffer = ctypes.create_string_buffer(encoded)
    with _fresh_library() as (lib, rate):
        _native_rate = rate
        lib.espeak_SetSynthCallback(utterance.callback)
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        lib.espeak_SetParameter(_ESPEAK_RATE, wpm, 0)
        status = lib.espeak_Synth(
            buffer, len(encoded) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
        )
        if status != _EE_OK:
            raise RuntimeError(f"espeak-ng synthesis failed (code {status})")
    return b"".join(utterance.chunks), rate


def native_rate() -> int:
    """The rate espeak-ng synthesizes at before any resampling (22050 Hz for the bundled data)."""
    global _native_rate
    with _lock:
        if _native_rate is None:
            with _fresh_library() as (_, rate):
                _native_rate = rate
        return _native_rate


def has_voice(voice: str) -> bool:
    """Whether the bundled espeak-ng data has `voice` (an espeak voice name such as "en-us")."""
    try:
        synthesize("a", voice=voice)
    except ValueError:
        return False
    return True


def synthesize(
    text: str, *, voice: str = "en-us", speed: float = 1.0, sample_rate: int = 22050
) -> bytes:
    """Speak `text` as PCM16LE mono at `sample_rate`. Same arguments, same bytes."""
    global _cache_bytes
    if not text.strip():
        return b""
    if sample_rate <= 0:
        raise ValueError("sample_rate must be positive")
    if speed <= 0:
        raise ValueError("speed must be positive")
    wpm = max(_MIN_WPM, min(_MAX_WPM, round(_BASE_WPM * speed)))
    key = (text, voice, wpm, sample_rate)
    with _lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
        pcm, rate = _speak(text, voice, wpm)
    if sys.byteorder == "big":
        samples = array.array("h", pcm)
        samples.byteswap()
        pcm = samples.tobytes()
    if rate != sample_rate and pcm:
        # A fresh ratecv state per call, so no filter history leaks between utterances.
        pcm, _ = audioop.ratecv(pcm, 2, 1, rate, sample_rate, None)
    with _lock:
        if key not in _cache and len(pcm) <= _CACHE_MAX_BYTES:
            _cache[key] = pcm
            _cache_bytes += len(pcm)
            while _cache_bytes > _CACHE_MAX_BYTES:
                _, evicted = _cache.popitem(last=False)
                _cache_bytes -= len(evicted)
    logger.debug("espeak: %d chars -> %d bytes at %d Hz", len(text), len(pcm), sample_rate)
    return pcm


def clear_cache() -> None:
    """Forget rendered utterances (tests use it to exercise the synthesizer itself)."""
    global _cache_bytes
    with _lock:
        _cache.clear()
        _cache_bytes = 0
