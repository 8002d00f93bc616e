"""Offline speech from the bundled libespeak-ng, through a minimal ctypes binding.

This is the embedded synthesizer behind the local Waves stand-in: real, intelligible speech with
no network and no API key. Output is deterministic: the same arguments give the same bytes, in
this process and the next, whatever was said before.

espeak-ng's wave generator keeps state between utterances in C statics that no API resets (pitch
flutter position, gain control, cycle counters), so the same text sounds slightly different after
other speech, and `espeak_Terminate` does not free everything it allocated. The library is
therefore loaded and initialised once, in a helper process that never speaks itself: each
utterance is spoken by a fork of it, which starts from exactly that untouched state and exits
afterwards, taking espeak's allocations with it. Run as a script, this module is that helper.
"""

from __future__ import annotations

import array
import atexit
import contextlib
import ctypes
import logging
import os
import struct
import subprocess
import sys
import threading
import warnings
from collections import OrderedDict
from typing import BinaryIO

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

# Between this process and the helper: a request is its text's and voice's byte lengths and the
# words per minute, then the text and voice; a reply is a status and a length, then native-rate
# PCM16 in host byte order (or the error's message). The helper first says its native rate.
_REQUEST = struct.Struct("<III")
_REPLY = struct.Struct("<BI")
_HELLO = struct.Struct("<i")
_OK, _NO_VOICE, _FAILED = 0, 1, 2

# One request to the helper at a time; the cache is shared by every thread too.
_lock = threading.Lock()
_cache: OrderedDict[tuple[str, str, int, int], bytes] = OrderedDict()
_cache_bytes = 0


# --- the helper process -----------------------------------------------------------------


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


def _load() -> tuple[ctypes.CDLL, int]:
    """Load and initialise libespeak-ng: the library and its native rate."""
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
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
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.c_void_p
    data_path = espeakng_loader.get_data_path().encode()
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
    if rate <= 0:
        raise RuntimeError(f"espeak-ng failed to initialise (code {rate})")
    # The first voice selection would read every voice file to build this same list: build it
    # once here, so no utterance pays for it (nothing in synthesis depends on when it was built).
    lib.espeak_ListVoices(None)
    return lib, rate


def _speak(lib: ctypes.CDLL, text: str, voice: str, wpm: int) -> bytes:
    """Native-rate PCM16 in host byte order."""
    utterance = _Utterance()
    encoded = text.encode("utf-8")
    buffer = ctypes.create_string_buffer(encoded)
    lib.espeak_SetSynthCallback(utterance.callback)
    if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
        raise ValueError(f"espeak-ng has no voice {voice!r}")
    lib.espeak_SetParameter(_ESPEAK_RATE, wpm, 0)
    status = lib.espeak_Synth(
        buffer, len(encoded) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
    )
    if status != _EE_OK:
        raise RuntimeError(f"espeak-ng synthesis failed (code {status})")
    return b"".join(utterance.chunks)


def _reply(status: int, payload: bytes) -> bytes:
    return _REPLY.pack(status, len(payload)) + payload


def _spoken(lib: ctypes.CDLL, text: str, voice: str, wpm: int) -> bytes:
    try:
        return _reply(_OK, _speak(lib, text, voice, wpm))
    except ValueError as exc:
        return _reply(_NO_VOICE, str(exc).encode())
    except Exception as exc:
        return _reply(_FAILED, str(exc).encode())


def _in_a_fork(lib: ctypes.CDLL, text: str, voice: str, wpm: int, replies: int) -> None:
    """Answer one request on `replies` from a child that starts from our untouched state.

    The reply goes straight from the child to the caller, so this process never holds audio
    (whose varying sizes would fragment its heap, utterance after utterance).
    """
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            reply = memoryview(_spoken(lib, text, voice, wpm))
            while reply:
                reply = reply[os.write(replies, reply) :]
            code = 0
        finally:
            os._exit(code)  # never back into the helper's loop, nor through its clean-up
    _, wait_status = os.waitpid(pid, 0)
    exit_code = os.waitstatus_to_exitcode(wait_status)
    if exit_code != 0:
        # Part of a reply may be out: leaving is the only clean answer (the caller restarts us).
        raise SystemExit(f"espeak-ng stopped while speaking (exit {exit_code})")


def _serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """The helper: load espeak-ng once, then speak each request in a fork of this process."""
    lib, rate = _load()
    replies.write(_HELLO.pack(rate))
    replies.flush()  # nothing may wait in this buffer: the children write past it
    while len(header := requests.read(_REQUEST.size)) == _REQUEST.size:
        text_bytes, voice_bytes, wpm = _REQUEST.unpack(header)
        text = requests.read(text_bytes).decode("utf-8")
        voice = requests.read(voice_bytes).decode("utf-8")
        _in_a_fork(lib, text, voice, wpm, replies.fileno())
    # End of input: the process that started us is done with speech (or gone).


class _Speaker:
    """This process's end of the helper, started on first use. Callers hold `_lock`."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._owner = 0  # the pid that started it: a forked copy of us starts its own
        self._inherited: list[subprocess.Popen[bytes]] = []  # our parent's: not ours to stop
        self.rate = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def speak(self, text: str, voice: str, wpm: int) -> bytes:
        process = self.ensure()
        assert process.stdin is not None and process.stdout is not None
        encoded, voice_name = text.encode("utf-8"), voice.encode("utf-8")
        status, payload = _FAILED, b""
        try:
            process.stdin.write(_REQUEST.pack(len(encoded), len(voice_name), wpm))
            process.stdin.write(encoded + voice_name)
            process.stdin.flush()
            header = process.stdout.read(_REPLY.size)
            if len(header) == _REPLY.size:
                status, size = _REPLY.unpack(header)
                payload = process.stdout.read(size)
                answered = len(payload) == size
            else:
                answered = False
        except OSError:
            answered = False
        if not answered:
            self.stop()
            raise RuntimeError("the espeak-ng helper process exited; it is restarted on next use")
        if status == _NO_VOICE:
            raise ValueError(payload.decode())
        if status != _OK:
            raise RuntimeError(payload.decode())
        return payload

    def ensure(self) -> subprocess.Popen[bytes]:
        """The helper, started (again) if it is not running for this process."""
        if self._owner != os.getpid():
            self._disown()
        process = self._process
        if process is not None and process.poll() is None:
            return process
        self.stop()
        # -P: this file's folder must not shadow anything the helper imports.
        process = subprocess.Popen(
            [sys.executable, "-P", __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self._process, self._owner = process, os.getpid()
        assert process.stdout is not None
        hello = process.stdout.read(_HELLO.size)
        if len(hello) != _HELLO.size:
            self.stop()
            raise RuntimeError("the espeak-ng helper process failed to start")
        (self.rate,) = _HELLO.unpack(hello)
        return process

    def stop(self) -> None:
        if self._owner != os.getpid():
            self._disown()
        process, self._process = self._process, None
        if process is None:
            return
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()  # end of input: the helper leaves its loop
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _disown(self) -> None:
        """In a fork of the process that started the helper: leave that one to our parent."""
        if self._process is not None:
            for pipe in (self._process.stdin, self._process.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()  # our copies only: the parent's stay open
            self._inherited.append(self._process)  # never waited for here
            self._process = None


_speaker = _Speaker()
atexit.register(_speaker.stop)


# --- the public functions ---------------------------------------------------------------


def native_rate() -> int:
    """The rate espeak-ng synthesizes at before any resampling (22050 Hz for the bundled data).

    Also starts the helper process, so whoever calls this early keeps a first prompt from paying
    for that.
    """
    with _lock:
        _speaker.ensure()
        return _speaker.rate


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
        pcm = _speaker.speak(text, voice, wpm)
        rate = _speaker.rate
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


if __name__ == "__main__":
    _serve(sys.stdin.buffer, sys.stdout.buffer)
