"""The espeak-ng binding: real, deterministic speech at any rate and speed."""

from __future__ import annotations

import array
import hashlib
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import espeakng_loader
import pytest

from telebridge.tts import espeak

SENTENCE = "Thank you for calling. Our opening hours are nine to five."


def rms(pcm: bytes) -> float:
    samples = array.array("h", pcm)
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def test_same_arguments_same_bytes() -> None:
    first = espeak.synthesize(SENTENCE, sample_rate=16000)
    espeak.clear_cache()  # force real synthesis again, after other utterances changed its state
    espeak.synthesize("Something else entirely, 42.", voice="de", speed=1.7)
    espeak.synthesize("Other text.", sample_rate=8000)
    assert espeak.synthesize(SENTENCE, sample_rate=16000) == first


def test_same_bytes_in_a_fresh_process() -> None:
    espeak.clear_cache()
    here = hashlib.sha256(espeak.synthesize(SENTENCE, sample_rate=8000)).hexdigest()
    code = (
        "import hashlib; from telebridge.tts import espeak; "
        f"print(hashlib.sha256(espeak.synthesize({SENTENCE!r}, sample_rate=8000)).hexdigest())"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == here


def test_speech_is_not_silence() -> None:
    pcm = espeak.synthesize(SENTENCE, sample_rate=8000)
    assert len(pcm) % 2 == 0
    assert 2.0 < len(pcm) / 2 / 8000 < 8.0  # a few seconds of speech
    assert rms(pcm) > 500


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 44100])
def test_length_follows_the_rate(rate: int) -> None:
    native = espeak.synthesize(SENTENCE, sample_rate=espeak.native_rate())
    resampled = espeak.synthesize(SENTENCE, sample_rate=rate)
    assert len(resampled) % 2 == 0
    assert len(resampled) / len(native) == pytest.approx(rate / espeak.native_rate(), rel=0.002)
    assert rms(resampled) > 500


def test_native_rate() -> None:
    assert espeak.native_rate() == 22050


def test_speed_changes_duration() -> None:
    slow, normal, fast = (
        len(espeak.synthesize(SENTENCE, speed=s, sample_rate=8000)) for s in (0.5, 1.0, 2.0)
    )
    assert slow > 1.5 * normal
    assert fast < 0.75 * normal


def test_voices_differ() -> None:
    us = espeak.synthesize("Hello there.", voice="en-us")
    gb = espeak.synthesize("Hello there.", voice="en")
    assert us != gb


def test_blank_text_is_empty() -> None:
    assert espeak.synthesize("") == b""
    assert espeak.synthesize("  \n\t") == b""


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        espeak.synthesize("Hi", voice="no-such-voice")
    with pytest.raises(ValueError):
        espeak.synthesize("Hi", sample_rate=0)
    with pytest.raises(ValueError):
        espeak.synthesize("Hi", speed=0)
    assert not espeak.has_voice("no-such-voice")
    assert espeak.has_voice("en-us")


@pytest.mark.parametrize(
    ("text", "voice", "speed", "rate"),
    [
        (SENTENCE, "en-us", 1.0, 8000),
        ("Hello there, this is a test.", "en", 1.3, 16000),
        ("Hallo, wie geht es dir? 42.", "de", 0.8, 24000),
        ("Bonjour tout le monde.", "fr", 1.0, 44100),
    ],
)
def test_what_was_said_before_changes_nothing(
    text: str, voice: str, speed: float, rate: int
) -> None:
    espeak.clear_cache()
    first = espeak.synthesize(text, voice=voice, speed=speed, sample_rate=rate)
    for other in ("Something else entirely.", "Press 1 for sales, 2 for support.", text):
        espeak.synthesize(other, voice="es", speed=1.9)
    espeak.clear_cache()
    assert espeak.synthesize(text, voice=voice, speed=speed, sample_rate=rate) == first


def vm_rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_the_library_is_loaded_once_and_200_utterances_leave_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    espeak.native_rate()  # the helper is up, the library loaded in it
    helper = espeak._speaker.pid
    assert helper is not None
    loads: list[str] = []
    real: Callable[[], str] = espeakng_loader.get_library_path

    def counted() -> str:
        loads.append("load")
        return real()

    monkeypatch.setattr(espeakng_loader, "get_library_path", counted)
    for i in range(20):  # the helper's own first-use allocations
        espeak.clear_cache()
        espeak.synthesize(f"Warming up, number {i}.", sample_rate=8000)
    before = vm_rss_kb(helper)
    for i in range(200):
        espeak.clear_cache()
        espeak.synthesize(f"Utterance number {i}, please hold the line.", sample_rate=8000)
    assert loads == []
    assert espeak._speaker.pid == helper
    assert vm_rss_kb(helper) - before < 64  # each utterance's allocations left with its fork


def test_a_helper_that_died_is_started_again() -> None:
    espeak.clear_cache()
    first = espeak.synthesize("Still here.")
    process = espeak._speaker._process
    assert process is not None
    process.kill()
    process.wait()
    espeak.clear_cache()
    assert espeak.synthesize("Still here.") == first
    assert espeak._speaker.pid not in (None, process.pid)
