"""Fuzzing the carrier message parsers: any input gives events or a ProtocolError, nothing else."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from telebridge.call.events import ProtocolError
from telebridge.carriers.browser import BrowserStream
from telebridge.carriers.plivo import PlivoStream
from telebridge.carriers.vonage import VonageStream

START = json.dumps(
    {"event": "start", "start": {"callId": "c", "streamId": "s"}, "sequenceNumber": 1}
)
CONNECTED = json.dumps(
    {"event": "websocket:connected", "content-type": "audio/l16;rate=16000", "call_id": "c"}
)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
EVENTS = ["start", "media", "dtmf", "playedStream", "played", "clearedAudio", "stop", "x"]
VONAGE_EVENTS = ["websocket:connected", "websocket:dtmf", "websocket:cleared", "websocket:notify"]
BROWSER_START = json.dumps({"event": "start", "call_id": "web-0123456789abcdef"})
BROWSER_EVENTS = ["start", "dtmf", "played", "cleared", "hangup", "x"]


FIELDS = ["start", "media", "dtmf", "name", "digit", "payload", "streamId"]


def shaped(events: list[str], fields: list[str] = FIELDS) -> st.SearchStrategy[str]:
    """JSON objects that look like real messages, with arbitrary values in every field."""
    return st.builds(
        lambda event, fields: json.dumps({"event": event, **fields}),
        st.sampled_from(events),
        st.dictionaries(
            st.sampled_from(fields),
            json_values,
            max_size=4,
        ),
    )


messages = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=1200),
    json_values.map(json.dumps),
    shaped(EVENTS),
    shaped(VONAGE_EVENTS),
    shaped(BROWSER_EVENTS, ["call_id", "digit", "name", "digits", "to"]),
)


def feed(stream: PlivoStream | VonageStream | BrowserStream, message: str | bytes) -> None:
    try:
        events = stream.receive(message)
    except ProtocolError:
        return
    assert isinstance(events, list)


@settings(max_examples=400, deadline=None)
@given(st.lists(messages, max_size=20))
def test_plivo_parser_never_raises_anything_but_protocol_error(batch: list[str | bytes]) -> None:
    stream = PlivoStream()
    stream.receive(START)
    for message in batch:
        feed(stream, message)


@settings(max_examples=400, deadline=None)
@given(st.lists(messages, max_size=20))
def test_vonage_parser_never_raises_anything_but_protocol_error(batch: list[str | bytes]) -> None:
    stream = VonageStream(16000)
    stream.receive(CONNECTED)
    for message in batch:
        feed(stream, message)


@settings(max_examples=400, deadline=None)
@given(st.lists(messages, max_size=20))
def test_browser_parser_never_raises_anything_but_protocol_error(batch: list[str | bytes]) -> None:
    stream = BrowserStream()
    stream.receive(BROWSER_START)
    for message in batch:
        feed(stream, message)


@settings(max_examples=200, deadline=None)
@given(messages)
def test_parsers_before_start(message: str | bytes) -> None:
    feed(PlivoStream(), message)
    feed(VonageStream(8000), message)
    feed(BrowserStream(), message)
