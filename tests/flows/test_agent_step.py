"""The agent step in the flow format and the runner: parsing, checks, and where each way an
agent step can end leads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from telebridge.flows.loader import parse_flow
from telebridge.flows.model import Agent
from telebridge.flows.ports import AgentEnd, AgentLink, AgentUnavailable
from telebridge.flows.runner import FlowRunner
from tests.flows.fakes import CALL, FakePort, make_flow

FLOW = """
start: ask
steps:
  ask:
    say: "Hello."
    agent: {url: "wss://agent.example.com/call/{{caller}}", listen: false, timeout: 3}
    next: bye
    on_error: sorry
  bye: {say: "Bye.", hangup: true}
  sorry: {say: "Sorry.", hangup: true}
  other: {say: "Other {{topic}}.", hangup: true}
"""


class FakeIO:
    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.opened: list[tuple[str, float]] = []

    async def post_json(self, url: str, payload: Any, timeout: float) -> tuple[int, bytes]:  # noqa: ASYNC109
        raise NotImplementedError

    async def load_audio(self, path: Path) -> tuple[bytes, int]:
        raise NotImplementedError

    async def open_agent(self, url: str, timeout: float) -> AgentLink:  # noqa: ASYNC109
        self.opened.append((url, timeout))
        if self.fail:
            raise AgentUnavailable(self.fail)
        return object()  # type: ignore[return-value]  # the fake port never uses it


def test_the_step_is_read() -> None:
    step = make_flow(FLOW).steps["ask"]
    assert step.agent == Agent("wss://agent.example.com/call/{{caller}}", listen=False, timeout=3)
    assert step.waits_for_caller


@pytest.mark.parametrize(
    ("agent", "problem"),
    [
        ("{listen: true}", "agent needs a 'url'"),
        ('{url: "http://x.example.com"}', "must be ws:// or wss://"),
        ('{url: "wss://x.example.com", listen: maybe}', "agent: listen must be true or false"),
        ('{url: "wss://x.example.com", timeout: 0}', "agent: timeout"),
        ('{url: "wss://x.example.com", speak: true}', "speak"),
    ],
)
def test_bad_agent_steps_are_errors(agent: str, problem: str) -> None:
    _, problems = parse_flow(f"start: a\nsteps:\n  a:\n    agent: {agent}\n", "f")
    assert any(problem in str(p) and p.severity == "error" for p in problems), problems


def test_agent_with_gather_is_an_error() -> None:
    text = 'start: a\nsteps:\n  a:\n    agent: {url: "ws://h/x"}\n    gather: {max_digits: 1}\n'
    _, problems = parse_flow(text, "f")
    assert any("cannot also 'gather'" in str(p) for p in problems)


async def run(end: AgentEnd, io: FakeIO | None = None) -> tuple[FakePort, str, FlowRunner]:
    port = FakePort()
    port.agent_end = end
    runner = FlowRunner(make_flow(FLOW), port, variables=dict(CALL), io=io or FakeIO())
    outcome = await runner.run()
    return port, outcome, runner


async def test_the_url_is_templated_and_start_names_the_call() -> None:
    io = FakeIO()
    port, outcome, _ = await run(AgentEnd("next"), io)
    assert io.opened == [("wss://agent.example.com/call/+15550001111", 3.0)]
    [start] = port.agent_starts
    assert start["type"] == "start" and start["step"] == "ask" and start["flow"] == "test"
    assert start["caller"] == CALL["caller"] and start["direction"] == "inbound"
    assert port.said() == ["Hello.", "Bye."]
    assert outcome == "hangup"


async def test_next_with_a_step_and_vars() -> None:
    port, _, runner = await run(AgentEnd("next", step="other", vars={"topic": "cats"}))
    assert port.said()[-1] == "Other cats."
    assert runner.variables["topic"] == "cats"


async def test_next_naming_no_step_goes_to_on_error() -> None:
    port, _, _ = await run(AgentEnd("next", step="nowhere"))
    assert port.said()[-1] == "Sorry."


async def test_an_unavailable_agent_goes_to_on_error() -> None:
    port, _, _ = await run(AgentEnd("next"), FakeIO(fail="refused"))
    assert ("converse", "ask") not in port.log
    assert port.said()[-1] == "Sorry."


async def test_hangup_and_transfer_and_error() -> None:
    port, outcome, _ = await run(AgentEnd("hangup", detail="bye now"))
    assert outcome == "hangup" and ("hangup", "bye now") in port.log
    port, outcome, _ = await run(AgentEnd("transfer", to="+14155550123"))
    assert outcome == "transfer"
    port, _, _ = await run(AgentEnd("error", detail="agent connection broke"))
    assert port.said()[-1] == "Sorry."
