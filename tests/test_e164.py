"""One E.164 rule: what `telebridge call` accepts, a flow's transfer accepts, and the other way.

The number is checked by its users (the call command's `normalize_number`, the flow file's
loader, the flow runner at run time), so that a second rule anywhere shows up here.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from telebridge.flows.loader import parse_flow
from telebridge.flows.runner import FlowRunner
from telebridge.outbound.placing import OutboundError, normalize_number
from tests.flows.fakes import FakePort, make_flow

TEMPLATED = """\
start: agent
steps:
  agent:
    transfer: {to: "{{agent}}"}
    on_error: sorry
  sorry:
    say: "Sorry."
    hangup: true
"""


def by_the_call_command(number: str) -> str | None:
    """The number `telebridge call --to NUMBER` would dial, or None when it refuses it."""
    try:
        return normalize_number(number, "--to")
    except OutboundError:
        return None


def in_a_flow_file(number: str) -> bool:
    """Whether `flows check` takes `transfer: {to: NUMBER}`."""
    text = f'start: a\nsteps:\n  a:\n    transfer: {{to: "{number}"}}\n'
    flow, problems = parse_flow(text, "t.yaml")
    return flow is not None and not [p for p in problems if p.severity == "error"]


def at_run_time(number: str) -> str | None:
    """The number a flow transfers to when a variable gives it NUMBER, or None if it refuses."""
    port = FakePort()
    outcome = asyncio.run(FlowRunner(make_flow(TEMPLATED), port, variables={"agent": number}).run())
    transfers = port.calls("transfer")
    assert (outcome == "transfer") == bool(transfers)
    return str(transfers[0][1]) if transfers else None


DIGITS = st.text(alphabet="0123456789", max_size=18)


@given(digits=DIGITS)
@example(digits="6834002")  # Niue: 7 digits in all, the shortest numbers in use
@example(digits="50012345")  # the Falkland Islands: 8
@example(digits="123456789012345")  # 15, E.164's longest
@example(digits="1234567890123456")  # 16: too long
@example(digits="123456")  # 6: too short
@example(digits="04155550123")  # no country code starts with 0
@example(digits="0014155550123")  # "00" for "+" where the "+" is left out
def test_the_call_command_and_transfers_accept_the_same_numbers(digits: str) -> None:
    number = "+" + digits
    dialled = by_the_call_command(number)
    assert dialled in (None, number)  # the canonical form is what was given
    assert in_a_flow_file(number) == (dialled is not None)
    assert at_run_time(number) == dialled
    # The "+" may be left out (Plivo gives {{caller}} without it); "00" in its place means "+".
    bare = by_the_call_command("+" + digits[2:]) if digits.startswith("00") else dialled
    assert by_the_call_command(digits) == bare
    assert at_run_time(digits) == bare


@pytest.mark.parametrize(
    ("given_as", "canonical"),
    [
        ("+683 4002", "+6834002"),
        ("0044 20 7946 0958", "+442079460958"),
        ("+1 (415) 555-0123", "+14155550123"),
        ("1.415.555.0123", "+14155550123"),
    ],
)
def test_typed_forms_mean_the_canonical_number_everywhere(given_as: str, canonical: str) -> None:
    assert by_the_call_command(given_as) == canonical
    assert at_run_time(given_as) == canonical
    assert in_a_flow_file(canonical)
    # A flow file is stored configuration: its numbers are written the one canonical way.
    assert not in_a_flow_file(given_as)
