"""Tests for what a flow says first before it runs (`opening_prompt`, used by the server's
prefetch) and the variables a run starts with (`start_variables`)."""

import pytest

from telebridge.flows.runner import FlowRunner, SpeechOverrides, opening_prompt, start_variables
from tests.flows.fakes import CALL, FakePort, make_flow

# `say` first, then a pause, then the end of the flow.
OPENING = """\
start: hello
vars: {company: Acme, greeting: Hi}
steps:
  hello:
    say: "{{greeting}} {{caller}}, welcome to {{company}}."
    voice: maria
    speed: 1.25
    language: es
    pause: 0.5
"""


@pytest.mark.parametrize(
    "first",
    [
        'set: {caller: "you"}\n    say: "Hello {{caller}}."',  # a set comes first
        'webhook: {url: "https://crm.example.com/ivr"}\n    say: "Hello."',  # a webhook does
        'play: tone.wav\n    say: "Hello."',  # the prompt opens with audio
        'pause: 1\n    say: "Hello."',  # ... or with silence
        'say: "Hello {{account}}."',  # a variable nobody gave
        "gather: {max_digits: 1}\n    default: start",  # nothing said at all
    ],
)
def test_no_opening_prompt_when_it_is_not_known_before_the_call(first: str) -> None:
    flow = make_flow(f"start: start\nsteps:\n  start:\n    {first}\n")
    assert opening_prompt(flow, dict(CALL)) is None


def test_the_opening_prompt_is_rendered_with_defaults_and_call_variables() -> None:
    flow = make_flow(OPENING)
    text, overrides = opening_prompt(flow, dict(CALL)) or ("", SpeechOverrides())
    assert text == "Hi +15550001111, welcome to Acme."
    assert overrides == SpeechOverrides("maria", 1.25, "es")


def test_call_variables_override_defaults_in_the_opening_prompt() -> None:
    flow = make_flow(OPENING)
    opening = opening_prompt(flow, {**CALL, "company": "Globex"})
    assert opening is not None
    assert opening[0] == "Hi +15550001111, welcome to Globex."


def test_a_variable_with_a_default_counts_as_given() -> None:
    flow = make_flow('start: a\nvars: {who: you}\nsteps:\n  a: {say: "Hello {{who}}."}\n')
    assert opening_prompt(flow, {}) == ("Hello you.", SpeechOverrides())


@pytest.mark.parametrize("variables", [dict(CALL), {**CALL, "company": "Globex", "greeting": ""}])
async def test_the_runner_speaks_exactly_the_opening_prompt_first(
    variables: dict[str, str],
) -> None:
    flow = make_flow(OPENING)
    opening = opening_prompt(flow, variables)
    assert opening is not None
    port = FakePort()
    assert await FlowRunner(flow, port, variables=dict(variables)).run() == "ended"
    assert port.said()[0] == opening[0]
    assert port.overrides[0] == opening[1]


def test_start_variables_layer_flow_digits_defaults_then_the_call() -> None:
    flow = make_flow(OPENING)
    given = {**CALL, "greeting": "Hey"}
    assert start_variables(flow, given) == {
        "flow": "test",
        "digits": "",
        "company": "Acme",
        "greeting": "Hey",  # the call's own beats the default
        **CALL,
    }
    assert given == {**CALL, "greeting": "Hey"}  # not changed


def test_the_runner_starts_with_start_variables() -> None:
    flow = make_flow(OPENING)
    runner = FlowRunner(flow, FakePort(), variables=dict(CALL))
    assert runner.variables == start_variables(flow, dict(CALL))
