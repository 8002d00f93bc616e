"""The prompt cache's file format and folder: round trips, nothing foreign trusted or deleted."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telebridge.tts.cache_folder import (
    STALE_TEMP_SECONDS,
    BadFile,
    Key,
    PromptFolder,
    decode,
    encode,
    file_name,
    open_folder,
)

KEY: Key = ("Hello.", "emily", "lightning_v3.1", 1.0, "en", 8000)

keys = st.tuples(
    st.text(),
    st.text(max_size=20),
    st.sampled_from(["lightning_v3.1", "lightning_v3.1_pro"]),
    st.floats(min_value=0.5, max_value=2.0),
    st.text(max_size=5),
    st.sampled_from([8000, 16000, 24000]),
)
pcm = st.binary(max_size=64).map(lambda b: b[: len(b) // 2 * 2])


@given(keys, pcm)
def test_a_file_decodes_to_its_audio_for_its_key_only(key: Key, audio: bytes) -> None:
    data = encode(key, audio)
    assert decode(key, data) == audio
    other = (key[0] + "!", *key[1:])
    with pytest.raises(BadFile):
        decode(other, data)  # type: ignore[arg-type]
    with pytest.raises(BadFile):
        decode(key, data[:-1])


@given(keys, keys)
def test_the_file_name_is_the_key_and_only_the_key(a: Key, b: Key) -> None:
    assert (file_name(a) == file_name(b)) == (a == b)


def test_open_folder_creates_it_and_leaves_nothing_behind(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    open_folder(folder)
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_open_folder_refuses_what_cannot_be_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OSError):
        open_folder(tmp_path / "file" / "cache")


def test_eviction_never_touches_files_that_are_not_its_own(tmp_path: Path) -> None:
    old = time.time() - STALE_TEMP_SECONDS - 10
    foreign = [tmp_path / "notes.pcm", tmp_path / "keep.tmp", tmp_path / ("0" * 63 + ".pcm")]
    for path in foreign:
        path.write_bytes(b"x" * 1000)
        os.utime(path, (old, old))
    stale = tmp_path / (file_name(KEY) + ".abc123.tmp")
    fresh = tmp_path / (file_name(KEY) + ".def456.tmp")
    for path in (stale, fresh):
        path.write_bytes(b"x")
    os.utime(stale, (old, old))
    folder = PromptFolder(tmp_path, max_bytes=1)
    folder.write(KEY, b"ab" * 10)  # over the bound: the only candidate is its own file
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {p.name for p in foreign} | {fresh.name}


def test_a_write_that_fails_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / file_name(KEY)).mkdir()  # os.replace onto a folder fails
    folder = PromptFolder(tmp_path, max_bytes=10_000)
    folder.write(KEY, b"ab")
    assert [p.name for p in tmp_path.iterdir()] == [file_name(KEY)]
    assert folder.read(KEY) is None
