"""Tests for telebridge.call.audio: framing is chunking-independent and exact; μ-law decoding."""

from __future__ import annotations

import itertools
import struct
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telebridge.call.audio import Codec, FrameEncoder, mulaw_to_pcm

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

# (src_rate, dst_rate, codec): the common carrier paths plus every resampling direction.
CONFIGS: list[tuple[int, int, Codec]] = [
    (8000, 8000, "mulaw"),
    (8000, 8000, "l16"),
    (16000, 16000, "l16"),
    (24000, 24000, "l16"),
    (16000, 8000, "mulaw"),
    (16000, 8000, "l16"),
    (24000, 8000, "mulaw"),
    (8000, 24000, "l16"),
    (22050, 16000, "l16"),
]


@st.composite
def pcm_and_cuts(draw: st.DrawFn, max_size: int = 3000) -> tuple[bytes, list[int]]:
    """PCM of any length (odd too) and sorted cut points, repeats giving empty chunks."""
    pcm = draw(st.binary(max_size=max_size))
    cuts = draw(st.lists(st.integers(0, len(pcm)), max_size=12))
    return pcm, sorted(cuts)


def split(pcm: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(pcm)]
    return [pcm[a:b] for a, b in itertools.pairwise(bounds)]


def encode_whole(enc: FrameEncoder, pcm: bytes) -> bytes:
    return enc.feed(pcm) + enc.flush()


def silence_byte(codec: Codec) -> int:
    return 0xFF if codec == "mulaw" else 0x00


@pytest.mark.parametrize(("src", "dst", "codec"), CONFIGS)
@given(case=pcm_and_cuts())
def test_any_chunking_gives_the_same_bytes(
    src: int, dst: int, codec: Codec, case: tuple[bytes, list[int]]
) -> None:
    pcm, cuts = case
    whole = encode_whole(FrameEncoder(src_rate=src, dst_rate=dst, codec=codec), pcm)
    enc = FrameEncoder(src_rate=src, dst_rate=dst, codec=codec)
    pieces = []
    for chunk in split(pcm, cuts):
        out = enc.feed(chunk)
        assert len(out) % enc.frame_bytes == 0
        pieces.append(out)
    tail = enc.flush()
    assert len(tail) in (0, enc.frame_bytes, 2 * enc.frame_bytes)
    assert b"".join(pieces) + tail == whole
    assert len(whole) % enc.frame_bytes == 0


@given(case=pcm_and_cuts())
def test_mulaw_same_rate_is_exactly_lin2ulaw_plus_silence(case: tuple[bytes, list[int]]) -> None:
    pcm, cuts = case
    enc = FrameEncoder(src_rate=8000, dst_rate=8000, codec="mulaw")
    out = b"".join(enc.feed(c) for c in split(pcm, cuts)) + enc.flush()
    # A dangling odd byte is completed into a sample with a zero high byte.
    samples = pcm + b"\x00" if len(pcm) % 2 else pcm
    expected = audioop.lin2ulaw(samples, 2)
    pad = -len(expected) % 160
    assert out == expected + b"\xff" * pad


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
@given(case=pcm_and_cuts())
def test_l16_same_rate_is_the_pcm_plus_zero_padding(
    rate: int, case: tuple[bytes, list[int]]
) -> None:
    pcm, cuts = case
    enc = FrameEncoder(src_rate=rate, dst_rate=rate, codec="l16")
    out = b"".join(enc.feed(c) for c in split(pcm, cuts)) + enc.flush()
    frame = rate // 50 * 2
    assert out == pcm + bytes(-len(pcm) % frame)


@given(case=pcm_and_cuts())
def test_resampling_16k_to_8k_chunked_equals_one_ratecv(case: tuple[bytes, list[int]]) -> None:
    pcm, cuts = case
    enc = FrameEncoder(src_rate=16000, dst_rate=8000, codec="l16")
    out = b"".join(enc.feed(c) for c in split(pcm, cuts)) + enc.flush()
    samples = pcm + b"\x00" if len(pcm) % 2 else pcm
    converted, _ = audioop.ratecv(samples, 2, 1, 16000, 8000, None)
    assert out == converted + bytes(-len(converted) % 320)


@pytest.mark.parametrize(("src", "dst", "codec"), CONFIGS)
@given(pcm=st.binary(min_size=1, max_size=3000))
def test_flush_pads_one_frame_with_silence(src: int, dst: int, codec: Codec, pcm: bytes) -> None:
    enc = FrameEncoder(src_rate=src, dst_rate=dst, codec=codec)
    enc.feed(pcm)
    pending = enc.pending
    tail = enc.flush()
    if pending == 0:
        assert tail == b""
    elif src == dst:
        assert len(tail) == enc.frame_bytes
        # Same rate: the pending PCM bytes are the frame's meaningful part, the rest is silence.
        meaningful = (pending + 1) // 2 * (1 if codec == "mulaw" else 2)
        assert set(tail[meaningful:]) <= {silence_byte(codec)}
        assert len(tail) - meaningful > 0
    else:
        # Resampling: a completed half sample may add up to three samples, or none.
        assert len(tail) in (0, enc.frame_bytes, 2 * enc.frame_bytes)
    assert enc.pending == 0
    assert enc.flush() == b""


def test_flush_pads_with_silence_after_loud_audio() -> None:
    enc = FrameEncoder(src_rate=8000, dst_rate=8000, codec="mulaw")
    loud = struct.pack("<h", 20000) * 100  # 100 samples: 60 short of a frame
    assert enc.feed(loud) == b""
    assert enc.pending == 200
    tail = enc.flush()
    assert tail == audioop.lin2ulaw(loud, 2) + b"\xff" * 60


def test_dangling_byte_at_a_frame_edge_when_upsampling() -> None:
    # 160 samples at 8 kHz become 478 at 24 kHz: two short of a frame. The dangling byte,
    # completed into a sample, upsamples to three more, so flush spills into a second frame.
    enc = FrameEncoder(src_rate=8000, dst_rate=24000, codec="l16")
    assert enc.feed(struct.pack("<h", 1000) * 160 + b"\x05") == b""
    tail = enc.flush()
    assert len(tail) == 2 * enc.frame_bytes
    assert tail[960 + 2 :] == bytes(958)


def test_dangling_byte_alone_may_resample_to_nothing() -> None:
    # 479 samples at 24 kHz make exactly one 8 kHz frame; the completed 480th sample falls
    # between two output samples, so nothing is left to pad.
    enc = FrameEncoder(src_rate=24000, dst_rate=8000, codec="mulaw")
    assert len(enc.feed(bytes(479 * 2 + 1))) == enc.frame_bytes
    assert enc.pending == 1
    assert enc.flush() == b""
    assert enc.pending == 0


@pytest.mark.parametrize(
    ("rate", "codec", "size"),
    [(8000, "mulaw", 160), (8000, "l16", 320), (16000, "l16", 640), (24000, "l16", 960)],
)
def test_frame_bytes(rate: int, codec: Codec, size: int) -> None:
    assert FrameEncoder(src_rate=rate, dst_rate=rate, codec=codec).frame_bytes == size


def test_pending_counts_buffered_bytes() -> None:
    enc = FrameEncoder(src_rate=8000, dst_rate=8000, codec="mulaw")
    assert enc.pending == 0
    assert enc.feed(b"\x01" * 321) == audioop.lin2ulaw(b"\x01" * 320, 2)
    assert enc.pending == 1
    assert len(enc.feed(b"\x02" * 318)) == 0
    assert enc.pending == 319
    assert len(enc.feed(b"\x03")) == 160
    assert enc.pending == 0


def test_reset_drops_pending_audio_and_resampler_state() -> None:
    pcm = bytes(range(256)) * 7
    enc = FrameEncoder(src_rate=16000, dst_rate=8000, codec="l16")
    enc.feed(pcm[:333])
    assert enc.pending > 0
    enc.reset()
    assert enc.pending == 0
    fresh = FrameEncoder(src_rate=16000, dst_rate=8000, codec="l16")
    assert encode_whole(enc, pcm) == encode_whole(fresh, pcm)


@pytest.mark.parametrize(("src", "dst", "codec"), CONFIGS)
def test_flush_starts_the_next_utterance_clean(src: int, dst: int, codec: Codec) -> None:
    first = struct.pack("<h", 12345) * 501 + b"\x07"
    second = struct.pack("<h", -2222) * 777
    enc = FrameEncoder(src_rate=src, dst_rate=dst, codec=codec)
    encode_whole(enc, first)
    fresh = FrameEncoder(src_rate=src, dst_rate=dst, codec=codec)
    assert encode_whole(enc, second) == encode_whole(fresh, second)


def test_empty_feed_and_empty_flush() -> None:
    enc = FrameEncoder(src_rate=16000, dst_rate=8000, codec="mulaw")
    assert enc.feed(b"") == b""
    assert enc.flush() == b""


def test_accepts_bytearray_and_memoryview() -> None:
    pcm = bytes(range(200)) * 4
    enc = FrameEncoder(src_rate=8000, dst_rate=8000, codec="l16")
    out = enc.feed(bytearray(pcm[:401])) + enc.feed(memoryview(pcm)[401:]) + enc.flush()  # type: ignore[arg-type]
    assert out == pcm + bytes(-len(pcm) % 320)


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="codec"):
        FrameEncoder(src_rate=8000, dst_rate=8000, codec="opus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="whole number"):
        FrameEncoder(src_rate=8000, dst_rate=11025, codec="l16")
    with pytest.raises(ValueError, match="positive"):
        FrameEncoder(src_rate=0, dst_rate=8000, codec="l16")


def test_mulaw_decoding_round_trips() -> None:
    pcm = struct.pack("<5h", 0, 1000, -1000, 32000, -32000)
    ulaw = audioop.lin2ulaw(pcm, 2)
    assert len(ulaw) == 5
    back = struct.unpack("<5h", mulaw_to_pcm(ulaw))
    original = struct.unpack("<5h", pcm)
    # μ-law is lossy but keeps each sample within a few percent (plus a small step near zero).
    for a, b in zip(original, back, strict=True):
        assert abs(a - b) <= abs(a) * 0.04 + 8
