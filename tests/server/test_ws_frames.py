"""FrameSplitter against websockets' own parser: the same frames come out, less the dropped ones,
however the bytes are cut."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, Protocol, Side

from telebridge.server.ws_frames import FrameSplitter


def droppable(payload: bytes, text: bool) -> bool:
    return payload.startswith(b"drop")


@dataclass(frozen=True)
class Sent:
    opcode: Opcode
    data: bytes
    fin: bool = True


def messages() -> st.SearchStrategy[list[Sent]]:
    payload = st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=70_000),  # past the 16-bit length
        st.builds(lambda b: b"drop" + b, st.binary(max_size=200)),
    )
    single = st.builds(Sent, st.sampled_from([Opcode.TEXT, Opcode.BINARY]), payload)
    fragmented = st.builds(
        lambda op, parts: (
            [Sent(op, parts[0], False)]
            + [Sent(Opcode.CONT, p, False) for p in parts[1:-1]]
            + [Sent(Opcode.CONT, parts[-1], True)]
        ),
        st.sampled_from([Opcode.TEXT, Opcode.BINARY]),
        st.lists(payload, min_size=2, max_size=4),
    )
    control = st.builds(Sent, st.sampled_from([Opcode.PING, Opcode.PONG]), st.binary(max_size=125))
    one = st.one_of(single.map(lambda m: [m]), fragmented, control.map(lambda m: [m]))
    return st.lists(one, max_size=12).map(lambda groups: [m for g in groups for m in g])


def wire(frames: list[Sent]) -> bytes:
    out = b""
    for sent in frames:
        frame = Frame(sent.opcode, sent.data, sent.fin)
        out += frame.serialize(mask=True, extensions=[])
    return out


def parsed(data: list[bytes], max_size: int | None = None) -> list[tuple[Opcode, bytes, bool]]:
    protocol = Protocol(Side.SERVER, state=OPEN, max_size=max_size)
    for chunk in data:
        protocol.receive_data(chunk)
    frames = [e for e in protocol.events_received() if isinstance(e, Frame)]
    return [(f.opcode, bytes(f.data), f.fin) for f in frames]


def cut(data: bytes, points: list[int]) -> list[bytes]:
    at = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *at], [*at, len(data)], strict=True)]


@given(messages(), st.lists(st.integers(min_value=0), max_size=20))
def test_the_parser_sees_the_same_frames_less_the_dropped_ones(
    frames: list[Sent], points: list[int]
) -> None:
    data = wire(frames)
    splitter = FrameSplitter(droppable, max_size=None)
    through = [splitter.feed(chunk) for chunk in cut(data, points)]
    kept: list[Sent] = []
    inside = False
    for sent in frames:
        data_frame = sent.opcode in (Opcode.TEXT, Opcode.BINARY)
        whole = data_frame and sent.fin and not inside
        if data_frame or sent.opcode == Opcode.CONT:
            inside = not sent.fin
        if whole and droppable(sent.data, sent.opcode == Opcode.TEXT):
            continue
        kept.append(sent)
    assert parsed(through) == [(s.opcode, s.data, s.fin) for s in kept]
    assert splitter.active


def test_a_frame_over_max_size_is_left_to_the_parser() -> None:
    data = wire([Sent(Opcode.BINARY, b"drop me"), Sent(Opcode.BINARY, b"x" * 2000)])
    splitter = FrameSplitter(droppable, max_size=1000)
    out = splitter.feed(data)
    assert not splitter.active and splitter.dropped == 1
    assert parsed([out], max_size=4000) == [(Opcode.BINARY, b"x" * 2000, True)]
    assert splitter.feed(b"later") == b"later"


def test_partial_frames_wait_for_their_end() -> None:
    data = wire([Sent(Opcode.TEXT, b"drop this"), Sent(Opcode.TEXT, b"keep this")])
    splitter = FrameSplitter(droppable, max_size=None)
    assert splitter.feed(data[:5]) == b""
    out = splitter.feed(data[5:-3]) + splitter.feed(data[-3:])
    assert parsed([out]) == [(Opcode.TEXT, b"keep this", True)]


def test_reserved_bits_and_unmasked_frames_step_aside() -> None:
    compressed = bytes([0xC1, 0x80, 0, 0, 0, 0])  # RSV1 (compression), masked, empty
    splitter = FrameSplitter(droppable, max_size=None)
    assert splitter.feed(compressed) == compressed and not splitter.active
    unmasked = bytes([0x81, 0x01]) + b"a"
    splitter = FrameSplitter(droppable, max_size=None)
    assert splitter.feed(unmasked) == unmasked and not splitter.active
