"""The browser phone without I/O (its stream protocol) and its call control."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telebridge.call.events import (
    CallerAudio,
    Cleared,
    Digit,
    Played,
    ProtocolError,
    Started,
    Stopped,
    WireMessage,
)
from telebridge.call.ports import CallControl, CarrierStream
from telebridge.carriers.browser import (
    FRAME_BYTES,
    MAX_AUDIO_BYTES,
    MAX_TEXT_BYTES,
    BrowserStream,
)
from telebridge.carriers.browser_http import BrowserCallControl

CALL = "web-0123456789abcdef"


def text(event: str, **fields: Any) -> str:
    return json.dumps({"event": event, **fields})


def started() -> BrowserStream:
    stream = BrowserStream()
    assert stream.receive(text("start", call_id=CALL)) == [Started(call_id=CALL, stream_id="")]
    return stream


# --- browser -> bridge ------------------------------------------------------------------


def test_it_is_a_16_khz_l16_carrier_stream_of_up_to_five_frames() -> None:
    stream: CarrierStream = BrowserStream()
    assert (stream.carrier, stream.codec, stream.sample_rate) == ("browser", "l16", 16000)
    assert stream.max_frames_per_message == 5
    assert stream.decode_caller_audio is False


def test_start_names_the_call_once() -> None:
    stream = started()
    assert stream.call_id == CALL
    with pytest.raises(ProtocolError, match="second start"):
        stream.receive(text("start", call_id=CALL))
    assert stream.call_id == CALL


@pytest.mark.parametrize(
    "message",
    [
        text("start"),
        text("start", call_id=""),
        text("start", call_id=7),
        text("start", call_id=None),
        text("start", call_id="x" * 201),
    ],
)
def test_a_start_without_a_proper_call_id_is_a_protocol_error(message: str) -> None:
    stream = BrowserStream()
    with pytest.raises(ProtocolError, match="call_id"):
        stream.receive(message)
    assert stream.call_id is None


@pytest.mark.parametrize(
    "message",
    [bytes(640), text("dtmf", digit="1"), text("played", name="m"), text("hangup")],
)
def test_nothing_comes_before_start(message: str | bytes) -> None:
    with pytest.raises(ProtocolError, match="before start"):
        BrowserStream().receive(message)


@pytest.mark.parametrize("size", [2, FRAME_BYTES, 3 * FRAME_BYTES + 2, MAX_AUDIO_BYTES])
def test_any_even_length_of_audio_is_caller_audio(size: int) -> None:
    audio = bytes(range(256)) * (size // 256 + 1)
    assert started().receive(audio[:size]) == [CallerAudio(audio[:size])]


@pytest.mark.parametrize("size", [0, 1, FRAME_BYTES - 1, MAX_AUDIO_BYTES + 2])
def test_empty_odd_or_huge_audio_is_a_protocol_error(size: int) -> None:
    stream = started()
    with pytest.raises(ProtocolError, match="audio"):
        stream.receive(bytes(size))
    assert stream.receive(bytes(FRAME_BYTES)) == [CallerAudio(bytes(FRAME_BYTES))]


@pytest.mark.parametrize("digit", list("0123456789*#"))
def test_each_key_of_the_pad_is_a_digit(digit: str) -> None:
    assert started().receive(text("dtmf", digit=digit)) == [Digit(digit)]


@pytest.mark.parametrize("digit", [None, "", "12", "A", "a", 5, True, ["1"], " 1"])
def test_other_digits_are_protocol_errors(digit: object) -> None:
    with pytest.raises(ProtocolError, match="dtmf"):
        started().receive(text("dtmf", digit=digit))


def test_played_cleared_and_hangup() -> None:
    stream = started()
    assert stream.receive(text("played", name="utterance-3")) == [Played("utterance-3")]
    assert stream.receive(text("cleared")) == [Cleared()]
    assert stream.receive(text("hangup")) == [Stopped()]


@pytest.mark.parametrize("name", [None, "", 3, {"n": 1}, "m" * 201])
def test_played_needs_a_short_name(name: object) -> None:
    with pytest.raises(ProtocolError, match="played"):
        started().receive(text("played", name=name))


@pytest.mark.parametrize(
    "message",
    ["{not json", "[1, 2]", '"text"', "null", "{}", '{"event": 3}', text("mystery")],
)
def test_text_that_is_not_one_of_our_events_is_a_protocol_error(message: str) -> None:
    with pytest.raises(ProtocolError):
        started().receive(message)


def test_text_over_4_kb_is_refused_before_parsing() -> None:
    stream = started()
    padding = "x" * (MAX_TEXT_BYTES - len(text("played", name="m", pad="")))
    assert stream.receive(text("played", name="m", pad=padding)) == [Played("m")]
    with pytest.raises(ProtocolError, match="4096"):
        stream.receive(text("played", name="m", pad=padding + "x"))
    # Counted in bytes: 2000 two-byte characters and some are over the limit.
    with pytest.raises(ProtocolError, match="4096"):
        stream.receive(text("played", name="m", pad="é" * 2100))


def test_only_well_formed_caller_audio_after_start_is_ignorable() -> None:
    frame = bytes(FRAME_BYTES)
    assert not BrowserStream().ignorable(frame, text=False)  # before start: reported
    stream = started()
    assert stream.ignorable(frame, text=False)
    for size in (0, 1, MAX_AUDIO_BYTES + 2):
        assert not stream.ignorable(bytes(size), text=False)
    assert not stream.ignorable(text("dtmf", digit="5").encode(), text=True)
    stream.decode_caller_audio = True  # someone listens: every frame must reach `receive`
    assert not stream.ignorable(frame, text=False)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=MAX_AUDIO_BYTES + 4), st.booleans())
def test_ignorable_agrees_with_receive(payload: bytes, before_start: bool) -> None:
    stream = BrowserStream() if before_start else started()
    if stream.ignorable(payload, text=False):
        assert stream.receive(payload) == [CallerAudio(payload)]


# --- bridge -> browser ------------------------------------------------------------------


def test_play_sends_at_most_five_frames_per_binary_message() -> None:
    stream = started()
    audio = bytes(range(256)) * (12 * FRAME_BYTES // 256)
    messages = stream.play(audio)
    assert [len(m) for m in messages] == [5 * FRAME_BYTES, 5 * FRAME_BYTES, 2 * FRAME_BYTES]
    assert b"".join(m for m in messages if isinstance(m, bytes)) == audio
    assert stream.play(b"") == []
    for bad in (1, FRAME_BYTES - 2, FRAME_BYTES + 2):
        with pytest.raises(ValueError, match="whole 20 ms frames"):
            stream.play(bytes(bad))


def test_mark_clear_digits_and_transfer_are_json_events() -> None:
    stream = started()
    [mark] = stream.mark('utterance-"1"')
    [clear] = stream.clear()
    [digits] = stream.send_digits("12#")
    [transfer] = stream.transfer("+14155550123")
    assert isinstance(mark, str) and isinstance(clear, str)
    assert isinstance(digits, str) and isinstance(transfer, str)
    assert json.loads(mark) == {"event": "mark", "name": 'utterance-"1"'}
    assert json.loads(clear) == {"event": "clear"}
    assert json.loads(digits) == {"event": "dtmf", "digits": "12#"}
    assert json.loads(transfer) == {"event": "transfer", "to": "+14155550123"}


# --- the call control -------------------------------------------------------------------


class Page:
    """What the control does to the page's socket, in order."""

    def __init__(self) -> None:
        self.done: list[str] = []

    async def send(self, messages: Sequence[WireMessage]) -> None:
        self.done.extend(f"send {m!s}" for m in messages)

    async def close(self) -> None:
        self.done.append("close")


def control_on(page: Page) -> CallControl:
    return BrowserCallControl(CALL, started(), send=page.send, close=page.close)


async def test_hangup_closes_the_socket() -> None:
    page = Page()
    await control_on(page).hangup()
    assert page.done == ["close"]


async def test_transfer_tells_the_page_then_closes() -> None:
    page = Page()
    assert await control_on(page).transfer("+14155550123", 20) is True
    assert page.done == ['send {"event": "transfer", "to": "+14155550123"}', "close"]


async def test_digits_and_the_carriers_own_speech_are_not_out_of_band() -> None:
    page = Page()
    control = control_on(page)
    assert await control.send_digits("12") is False
    assert await control.end_with_message("Sorry.") is False
    assert page.done == []
