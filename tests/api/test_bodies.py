"""The call API's requests: every rule of `bodies` with the exact message it answers, and a
property that no JSON-like input makes a validator raise anything but `ApiError(400)`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telebridge import e164
from telebridge.api import bodies
from telebridge.api.bodies import ApiError, HangupCall, PlaceCall, Say, TransferCall
from telebridge.outbound.request import CARRIERS, RESERVED_VARS

TO, FROM = "+14155550123", "+14155550199"
CALL = {"carrier": "plivo", "to": TO, "from": FROM}
PLACE_FIELDS = "carrier, to, from, flow, vars"


def refused(check: Callable[[Any], object], body: Any) -> str:
    with pytest.raises(ApiError) as caught:
        check(body)
    assert caught.value.status == 400
    assert caught.value.body() == {"error": caught.value.message}
    return caught.value.message


# --- place_call -----------------------------------------------------------------------------


def test_a_call_is_read_with_numbers_in_e164() -> None:
    body = {"carrier": "vonage", "to": "+1 (415) 555-0123", "from": "0044 20 7946 0958",
            "flow": "welcome", "vars": {"name": "Ada", "n": 42, "x": 1.5, "_t": ""}}  # fmt: skip
    assert bodies.place_call(body) == PlaceCall(
        "vonage", TO, "+442079460958", "welcome", {"name": "Ada", "n": "42", "x": "1.5", "_t": ""}
    )


def test_flow_and_vars_may_be_left_out_or_null_and_the_limits_are_allowed() -> None:
    assert bodies.place_call(CALL) == PlaceCall("plivo", TO, FROM, None, {})
    nulls = bodies.place_call({**CALL, "flow": None, "vars": None})
    assert nulls == PlaceCall("plivo", TO, FROM, None, {})
    many = {f"v{i}": "x" * 1000 for i in range(100)}
    assert bodies.place_call({**CALL, "flow": "f" * 200, "vars": many}) == PlaceCall(
        "plivo", TO, FROM, "f" * 200, many
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"to": TO, "from": FROM}, "carrier: required"),
        ({"carrier": "plivo", "from": FROM}, "to: required"),
        ({"carrier": "plivo", "to": TO}, "from: required"),
        ({**CALL, "extra": 1}, f"unknown field 'extra' (fields: {PLACE_FIELDS})"),
        ({**CALL, "zz": 1, "aa": 2}, f"unknown field 'aa' (fields: {PLACE_FIELDS})"),
        ({**CALL, "from_": FROM}, f"unknown field 'from_' (fields: {PLACE_FIELDS})"),
        ({**CALL, "carrier": "twilio"}, "carrier: must be one of plivo, vonage"),
        ({**CALL, "carrier": ["plivo"]}, "carrier: must be one of plivo, vonage"),
        ({**CALL, "to": None}, "to: required"),
        ({**CALL, "to": 14155550123}, "to: must be a string"),
        ({**CALL, "from": True}, "from: must be a string"),
        ({**CALL, "to": "  "}, "to: must not be empty"),
        ({**CALL, "to": "+1" + "4" * 31}, "to: at most 32 characters"),
        ({**CALL, "to": "call me"}, f"to: 'call me' is not an E.164 number ({e164.RULE})"),
        ({**CALL, "from": " 12345 "}, f"from: '12345' is not an E.164 number ({e164.RULE})"),
        ({**CALL, "to": "+0123456789"}, f"to: '+0123456789' is not an E.164 number ({e164.RULE})"),
        ({**CALL, "from": TO}, "to: the number to call is the from number"),
        ({**CALL, "from": "1 (415) 555-0123"}, "to: the number to call is the from number"),
        ({**CALL, "flow": 3}, "flow: must be a string"),
        ({**CALL, "flow": ""}, "flow: must not be empty"),
        ({**CALL, "flow": "f" * 201}, "flow: at most 200 characters"),
        ({**CALL, "vars": ["a=1"]}, "vars: must be an object of name to value"),
        ({**CALL, "vars": {f"v{i}": "" for i in range(101)}}, "vars: at most 100 variables"),
        ({**CALL, "vars": {"ok": True}}, "vars: 'ok' must be a string or a number"),
        ({**CALL, "vars": {"ok": None}}, "vars: 'ok' must be a string or a number"),
        ({**CALL, "vars": {"ok": [1]}}, "vars: 'ok' must be a string or a number"),
        ({**CALL, "vars": {"ok": "v" * 1001}}, "vars: 'ok' is over 1000 characters"),
    ],
)
def test_bad_calls_are_refused_naming_the_field(body: dict[str, Any], message: str) -> None:
    assert refused(bodies.place_call, body) == message


NOT_A_NAME = "is not a variable name (letters, digits, _)"
RESERVED = ("is set by telebridge itself; choose another name "
            "(reserved: attempt, call_id, callee, caller, carrier, direction)")  # fmt: skip


@pytest.mark.parametrize(
    ("name", "why"),
    [*((name, NOT_A_NAME) for name in ("", "1st", "a-b", "a b", "name.x", "é")),
     *((name, RESERVED) for name in sorted(RESERVED_VARS))],
)  # fmt: skip
def test_variable_names_are_checked(name: str, why: str) -> None:
    assert refused(bodies.place_call, {**CALL, "vars": {name: "v"}}) == f"vars: {name!r} {why}"


def test_a_huge_integer_variable_is_a_400() -> None:
    # str() of an int over 4300 digits raises ValueError on Python 3.11+.
    refused(bodies.place_call, {**CALL, "vars": {"n": 10**5000}})


# --- say, hangup, transfer ------------------------------------------------------------------


def test_say_reads_every_field() -> None:
    body = {"text": "Hello", "interrupt": True, "voice": "emily", "speed": 2, "language": "en-US"}
    said = bodies.say(body)
    assert said == Say("Hello", True, "emily", 2.0, "en-US")
    assert type(said.speed) is float
    assert bodies.say({"text": " hi "}) == Say(" hi ", False, None, None, None)
    assert bodies.say({"text": "t" * 5000, "speed": 0.5}).speed == 0.5


def test_hangup_and_transfer_are_read() -> None:
    assert bodies.hangup({}) == bodies.hangup({"reason": None}) == HangupCall("")
    assert bodies.hangup({"reason": "  "}) == HangupCall("  ")  # a blank reason is allowed
    assert bodies.hangup({"reason": "r" * 200}) == HangupCall("r" * 200)
    assert bodies.transfer({"to": "+1 (415) 555-0123"}) == TransferCall(TO)


SAY_FIELDS = "text, interrupt, voice, speed, language"
CHARSET = "letters, digits, '_', '.' and '-' only"


@pytest.mark.parametrize(
    ("check", "body", "message"),
    [
        ("say", {}, "text: required"),
        ("say", {"text": None}, "text: required"),
        ("say", {"text": "hi", "volume": 3}, f"unknown field 'volume' (fields: {SAY_FIELDS})"),
        ("say", {"text": 5}, "text: must be a string"),
        ("say", {"text": " \n"}, "text: must not be empty"),
        ("say", {"text": "t" * 5001}, "text: at most 5000 characters"),
        ("say", {"text": "hi", "interrupt": "yes"}, "interrupt: must be true or false"),
        ("say", {"text": "hi", "interrupt": 1}, "interrupt: must be true or false"),
        ("say", {"text": "hi", "voice": 1}, "voice: must be a string"),
        ("say", {"text": "hi", "voice": "v" * 101}, "voice: at most 100 characters"),
        ("say", {"text": "hi", "voice": "a b"}, f"voice: {CHARSET}"),
        ("say", {"text": "hi", "voice": "../x"}, f"voice: {CHARSET}"),
        ("say", {"text": "hi", "voice": "émilie"}, f"voice: {CHARSET}"),
        ("say", {"text": "hi", "language": "l" * 21}, "language: at most 20 characters"),
        ("say", {"text": "hi", "language": "en US"}, f"language: {CHARSET}"),
        ("say", {"text": "hi", "speed": True}, "speed: must be a number"),
        ("say", {"text": "hi", "speed": "1.0"}, "speed: must be a number"),
        ("say", {"text": "hi", "speed": 0.49}, "speed: from 0.5 to 2.0"),
        ("say", {"text": "hi", "speed": 2.01}, "speed: from 0.5 to 2.0"),
        ("say", {"text": "hi", "speed": float("nan")}, "speed: from 0.5 to 2.0"),
        ("hangup", {"reason": 1}, "reason: must be a string"),
        ("hangup", {"reason": "r" * 201}, "reason: at most 200 characters"),
        ("hangup", {"why": "x"}, "unknown field 'why' (fields: reason)"),
        ("transfer", {}, "to: required"),
        ("transfer", {"to": None}, "to: required"),
        ("transfer", {"to": 1}, "to: must be a string"),
        ("transfer", {"to": "0"}, f"to: '0' is not an E.164 number ({e164.RULE})"),
        ("transfer", {"to": TO, "from": FROM}, "unknown field 'from' (fields: to)"),
    ],
)
def test_bad_says_hangups_and_transfers_are_refused(
    check: str, body: dict[str, Any], message: str
) -> None:
    assert refused(getattr(bodies, check), body) == message


# --- read_object ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [(b"", {}), (b" \r\n\t", {}), (b'{"a": [1, null]}', {"a": [1, None]}),
     ('{"\u00e9": 1}'.encode(), {"\u00e9": 1})],
)  # fmt: skip
def test_a_body_is_a_json_object_and_an_empty_one_is_empty(raw: bytes, value: object) -> None:
    assert bodies.read_object(raw) == value


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff\xfe{}", "the body is not UTF-8 text"),
        ('{"a": 1}'.encode("utf-16"), "the body is not UTF-8 text"),
        (b"[1, 2]", "the body must be a JSON object"),
        (b'"text"', "the body must be a JSON object"),
        (b"null", "the body must be a JSON object"),
        (b"7", "the body must be a JSON object"),
        (b"{", "the body is not JSON: Expecting property name enclosed in double quotes"),
        (b"{'a': 1}", "the body is not JSON: Expecting property name enclosed in double quotes"),
        (b"a=1", "the body is not JSON: Expecting value: line 1 column 1 (char 0)"),
        (b'{"a": 1} x', "the body is not JSON: Extra data: line 1 column 10 (char 9)"),
        (b"{" + b'"a":' + b"1" * 5000 + b"}", "the body is not JSON: Exceeds the limit"),
    ],
)
def test_bodies_that_are_not_json_objects_are_refused(raw: bytes, message: str) -> None:
    assert refused(bodies.read_object, raw).startswith(message)


def test_a_deeply_nested_body_is_a_400() -> None:
    # 4 KB, well under MAX_BODY_BYTES: the decoder's recursion limit must not make it a 500.
    refused(bodies.read_object, b"[" * 4096)


# --- no input raises anything but ApiError(400) ---------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
numbers = st.sampled_from([TO, FROM, "+1 (415) 555-0123", "12345", ""]) | json_values
texts = st.text() | json_values
# Each validator's own fields (and sometimes one it does not know), so the fuzzing gets past
# the unknown-field check to the rules behind it.
OWN_FIELDS: dict[Callable[[Any], object], dict[str, st.SearchStrategy[Any]]] = {
    bodies.place_call: {
        "carrier": st.sampled_from(CARRIERS) | json_values, "to": numbers, "from": numbers,
        "flow": texts, "vars": st.dictionaries(st.text(), texts, max_size=4) | json_values,
    },
    bodies.say: {
        "text": texts, "interrupt": st.booleans() | json_values, "language": texts,
        "voice": st.sampled_from(["emily", "a b"]) | json_values,
        "speed": st.floats(0.4, 2.1) | json_values,
    },
    bodies.hangup: {"reason": texts},
    bodies.transfer: {"to": numbers},
}  # fmt: skip
VALIDATORS = list(OWN_FIELDS)


def only_400(check: Callable[[Any], object], body: Any) -> None:
    try:
        check(body)
    except ApiError as exc:
        assert exc.status == 400, exc.message
        assert exc.message


@pytest.mark.parametrize("check", VALIDATORS, ids=lambda f: f.__name__)
@given(body=st.dictionaries(st.text(), json_values))
def test_any_json_object_is_accepted_or_a_400(check: Callable[..., object], body: Any) -> None:
    only_400(check, body)


@pytest.mark.parametrize("check", VALIDATORS, ids=lambda f: f.__name__)
@given(data=st.data())
def test_any_mix_of_its_fields_is_accepted_or_a_400(check: Any, data: st.DataObject) -> None:
    own = OWN_FIELDS[check]
    only_400(check, data.draw(st.fixed_dictionaries({}, optional={**own, "other": json_values})))


@given(value=json_values)
def test_read_object_takes_any_json_text(value: Any) -> None:
    only_400(bodies.read_object, json.dumps(value).encode())


@given(raw=st.binary())
def test_read_object_takes_any_bytes(raw: bytes) -> None:
    only_400(bodies.read_object, raw)
