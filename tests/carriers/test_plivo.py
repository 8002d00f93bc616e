"""The Plivo stream protocol, answer XML and signature check, without any I/O."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telebridge.call.events import (
    CallerAudio,
    Cleared,
    Digit,
    Played,
    ProtocolError,
    Started,
    Stopped,
)
from telebridge.carriers import plivo
from telebridge.carriers.plivo import FRAME_BYTES, MAX_FRAMES_PER_MESSAGE, PlivoStream
from telebridge.simulator.plivo import plivo_v3_signature

START = {
    "event": "start",
    "sequenceNumber": 1,
    "start": {
        "callId": "call-1",
        "streamId": "stream-1",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
    },
    "extra_headers": "a=b",
}


def started(**kwargs: bool) -> PlivoStream:
    stream = PlivoStream(**kwargs)
    [event] = stream.receive(json.dumps(START))
    assert event == Started("call-1", "stream-1")
    return stream


def media(payload: str) -> str:
    return json.dumps({"event": "media", "streamId": "stream-1", "media": {"payload": payload}})


@pytest.mark.parametrize(
    ("message", "event"),
    [
        ({"event": "dtmf", "dtmf": {"digit": "5"}}, Digit("5")),
        ({"event": "dtmf", "dtmf": {"digit": "#"}}, Digit("#")),
        ({"event": "dtmf", "dtmf": {"digit": "a"}}, Digit("A")),
        ({"event": "playedStream", "name": "utterance-1"}, Played("utterance-1")),
        ({"event": "played", "name": "utterance-2"}, Played("utterance-2")),
        ({"event": "clearedAudio"}, Cleared()),
        ({"event": "stop"}, Stopped()),
    ],
)
def test_events(message: dict[str, object], event: object) -> None:
    assert started().receive(json.dumps(message)) == [event]


def test_unknown_events_are_ignored() -> None:
    assert started().receive('{"event":"somethingNew","x":1}') == []


@pytest.mark.parametrize(
    "message",
    [
        b"\x00binary",
        "not json",
        "[1,2]",
        '{"event":"dtmf","dtmf":{"digit":"55"}}',
        '{"event":"dtmf"}',
        '{"event":"playedStream"}',
        json.dumps(START),  # a second start
    ],
)
def test_malformed_messages_are_protocol_errors(message: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        started().receive(message)


def test_nothing_before_start_and_start_must_name_the_call() -> None:
    with pytest.raises(ProtocolError):
        PlivoStream().receive('{"event":"dtmf","dtmf":{"digit":"1"}}')
    with pytest.raises(ProtocolError):
        PlivoStream().receive('{"event":"start","start":{"streamId":"s"}}')
    start = {"callId": "c", "streamId": "s", "mediaFormat": {"encoding": "audio/x-l16"}}
    with pytest.raises(ProtocolError):
        PlivoStream().receive(json.dumps({"event": "start", "start": start}))


def test_caller_audio_is_skipped_unless_asked_for() -> None:
    payload = base64.b64encode(b"\xff" * 160).decode()
    assert started().receive(media(payload)) == []
    audio = started(decode_caller_audio=True).receive(media(payload))
    assert audio == [CallerAudio(b"\xff" * 160)]
    with pytest.raises(ProtocolError):
        started(decode_caller_audio=True).receive(media("***"))


def test_only_caller_audio_after_start_is_ignorable() -> None:
    payload = base64.b64encode(b"\xff" * 160).decode()
    message = media(payload).encode()
    assert not PlivoStream().ignorable(message, text=True)  # before start: receive reports it
    stream = started()
    assert stream.ignorable(message, text=True)
    spaced = b'{"event": "media", "media": {"payload": "' + payload.encode() + b'"}}'
    assert stream.ignorable(spaced, text=True)
    for other in ({"event": "dtmf", "dtmf": {"digit": "5"}}, {"event": "stop"}):
        assert not stream.ignorable(json.dumps(other).encode(), text=True)
    assert not stream.ignorable(message, text=False)  # binary: receive reports it
    assert not started(decode_caller_audio=True).ignorable(message, text=True)


@given(st.binary(max_size=300), st.booleans())
def test_what_is_ignorable_is_what_receive_would_drop(payload: bytes, text: bool) -> None:
    stream = started()
    if stream.ignorable(payload, text=text):
        assert text
        assert stream.receive(payload.decode("utf-8", "replace")) == []


@given(st.integers(min_value=1, max_value=400))
def test_play_splits_into_whole_frames_within_16kb(frames: int) -> None:
    audio = bytes(range(256)) * (frames * FRAME_BYTES // 256) + bytes(frames * FRAME_BYTES % 256)
    decoded = b""
    for message in started().play(audio):
        assert isinstance(message, str)
        data = json.loads(message)
        assert data["event"] == "playAudio"
        assert data["media"]["contentType"] == "audio/x-mulaw"
        assert data["media"]["sampleRate"] == 8000
        assert len(data["media"]["payload"]) <= 16 * 1024
        chunk = base64.b64decode(data["media"]["payload"])
        assert len(chunk) % FRAME_BYTES == 0 and len(chunk) <= MAX_FRAMES_PER_MESSAGE * FRAME_BYTES
        decoded += chunk
    assert decoded == audio


def test_play_refuses_partial_frames_and_marks_name_the_stream() -> None:
    stream = started()
    with pytest.raises(ValueError):
        stream.play(b"\xff" * 100)
    mark = {"event": "checkpoint", "streamId": "stream-1", "name": "m1"}
    assert json.loads(stream.mark("m1")[0]) == mark
    assert json.loads(stream.clear()[0]) == {"event": "clearAudio", "streamId": "stream-1"}


def test_answer_xml_is_one_bidirectional_mulaw_stream() -> None:
    xml = plivo.answer_xml("wss://b.example/plivo/stream?token=a.b&x=1", "https://b.example/s")
    root = ET.fromstring(xml)
    [stream] = list(root)
    assert stream.tag == "Stream" and stream.text == "wss://b.example/plivo/stream?token=a.b&x=1"
    assert stream.attrib["bidirectional"] == "true"
    assert stream.attrib["keepCallAlive"] == "true"
    assert stream.attrib["contentType"] == "audio/x-mulaw;rate=8000"
    assert "&amp;" in xml


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("query", ["", "flow=menu&a=1"])
def test_signature_check_agrees_with_plivos_rules(method: str, query: str) -> None:
    url = "https://bridge.example.com/plivo/answer" + (f"?{query}" if query else "")
    params = {"CallUUID": "c", "From": "1415", "To": "1416"} if method == "POST" else {}
    sig = plivo_v3_signature(method, url, params, "nonce1", "token")

    def valid(
        signature: str | None, *, token: str = "token", at: str = url, sent: dict[str, str] = params
    ) -> bool:
        return plivo.signature_valid(
            method=method,
            url=at,
            params=sent,
            signature=signature,
            nonce="nonce1",
            auth_token=token,
        )

    assert valid(sig)
    assert valid(f"other,{sig}")  # several signatures: any match counts
    assert not valid(sig, token="wrong")
    assert not valid(None)
    assert not valid(sig, at=url.replace("answer", "hangup"))
    if params:
        assert not valid(sig, sent={**params, "From": "9999"})
