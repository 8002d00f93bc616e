"""Tests for telebridge.flows.wav, the one reader of the WAV files flows play."""

import wave
from pathlib import Path

import pytest

from telebridge.flows.wav import WavError, read_wav


def write_wav(path: Path, *, channels: int = 1, width: int = 2, rate: int = 8000) -> bytes:
    """A WAV file of 160 frames; returns its sample bytes."""
    frames = bytes(i % 251 for i in range(160 * channels * width))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(frames)
    return frames


def kind_of(path: Path) -> str:
    with pytest.raises(WavError) as caught:
        read_wav(path)
    assert caught.value.detail == str(caught.value)
    return caught.value.kind


def test_reads_16_bit_mono_samples_and_their_rate(tmp_path: Path) -> None:
    frames = write_wav(tmp_path / "a.wav", rate=16000)
    assert read_wav(tmp_path / "a.wav") == (frames, 16000)
    assert len(frames) == 320


def test_header_only_gives_the_rate_and_no_samples(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", rate=22050)
    assert read_wav(tmp_path / "a.wav", header_only=True) == (b"", 22050)


def test_a_missing_file_is_missing(tmp_path: Path) -> None:
    assert kind_of(tmp_path / "nowhere.wav") == "missing"


@pytest.mark.parametrize("content", [b"", b"RIFF", b"not a wav file at all" * 10])
def test_a_file_that_is_not_wav_is_unreadable(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "bad.wav").write_bytes(content)
    assert kind_of(tmp_path / "bad.wav") == "unreadable"


def test_a_directory_is_unreadable(tmp_path: Path) -> None:
    assert kind_of(tmp_path) == "unreadable"


@pytest.mark.parametrize(("channels", "width"), [(2, 2), (1, 1), (1, 3), (2, 1)])
@pytest.mark.parametrize("header_only", [False, True])
def test_stereo_or_other_sample_widths_are_the_wrong_format(
    tmp_path: Path, channels: int, width: int, header_only: bool
) -> None:
    write_wav(tmp_path / "a.wav", channels=channels, width=width)
    with pytest.raises(WavError) as caught:
        read_wav(tmp_path / "a.wav", header_only=header_only)
    assert caught.value.kind == "format"
    assert "16-bit mono" in caught.value.detail
