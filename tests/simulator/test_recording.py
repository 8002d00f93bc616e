"""Tests for telebridge.simulator.recording: the WAV file of what the simulated caller heard."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telebridge.simulator.recording import write_wav


@given(pcm=st.binary(max_size=2000).map(lambda b: b[: len(b) & ~1]))
def test_wav_round_trip(tmp_path_factory: pytest.TempPathFactory, pcm: bytes) -> None:
    path = tmp_path_factory.mktemp("wav") / "x.wav"
    write_wav(path, pcm, 16000)
    with wave.open(str(path), "rb") as wav:
        assert (wav.readframes(wav.getnframes()), wav.getframerate()) == (pcm, 16000)


def test_write_wav_is_16_bit_mono(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    write_wav(str(path), b"\x01\x02" * 10, 24000)
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 24000)
        assert wav.getnframes() == 10


def test_write_wav_rejects_half_samples(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_wav(tmp_path / "bad.wav", b"\x00\x00\x00", 8000)
