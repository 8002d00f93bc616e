"""The agent protocol's parser: every command, and every way a message is refused."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telebridge.call import agent_wire as wire


def parse(**message: object) -> wire.AgentCommand:
    return wire.parse(json.dumps(message))


def test_commands() -> None:
    assert parse(type="text", text="Hel", id="u1") == wire.Text("Hel", "u1")
    assert parse(type="text", text="", last=True, speed=1.5, voice="v") == wire.Text(
        "", None, True, "v", 1.5
    )
    assert parse(type="clear") == wire.Clear()
    assert parse(type="dtmf", digits="12#") == wire.SendDigits("12#")
    assert parse(type="transfer", to="+14155550123") == wire.TransferTo("+14155550123")
    assert parse(type="hangup") == wire.Hangup("agent-hangup")
    assert parse(type="hangup", reason="done") == wire.Hangup("done")
    assert parse(type="next", step="menu", vars={"a": "1", "n": 2}) == wire.Next(
        "menu", {"a": "1", "n": "2"}
    )


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\x00", "binary"),
        ("nope", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"type": "shout"}', "unknown type"),
        ('{"type": "clear", "now": true}', "unknown field"),
        ('{"type": "text", "text": 5}', "'text' must be a string"),
        ('{"type": "text", "text": "a", "id": "a b"}', "'id'"),
        ('{"type": "text", "text": "a", "last": "yes"}', "'last'"),
        ('{"type": "text", "text": "a", "speed": 9}', "'speed'"),
        ('{"type": "dtmf", "digits": "x"}', "digits are"),
        ('{"type": "dtmf", "digits": ""}', "'digits'"),
        ('{"type": "transfer", "to": "12"}', "E.164"),
        ('{"type": "next", "vars": {"1a": "x"}}', "not a variable name"),
        ('{"type": "next", "vars": {"a": [1]}}', "string or a number"),
        ('{"type": "next", "vars": []}', "'vars'"),
        ('{"type": "hangup", "reason": 3}', "'reason'"),
    ],
)
def test_refusals_say_why(raw: str | bytes, why: str) -> None:
    with pytest.raises(wire.AgentMessageError, match=why):
        wire.parse(raw)


def test_an_oversized_message_is_refused() -> None:
    with pytest.raises(wire.AgentMessageError, match="over"):
        wire.parse(json.dumps({"type": "text", "text": "a" * wire.MAX_MESSAGE_BYTES}))


@given(st.one_of(st.text(max_size=200), st.binary(max_size=50)))
def test_anything_parses_or_is_refused(raw: str | bytes) -> None:
    with contextlib.suppress(wire.AgentMessageError):
        wire.parse(raw)


def test_messages_are_compact_json() -> None:
    assert wire.message("played", id="u1") == '{"type":"played","id":"u1"}'
