"""The in-memory shape of a call flow: steps, what each one does, and where it can go next.

The loader builds these from YAML (with line numbers for messages); the runner interprets them.
Nothing here does I/O. `check_flow` holds the rules that span keys and steps (a route naming a
missing step, an unreachable step, an endless loop...), so they apply however a flow was built.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from telebridge.flows import template

# Variables every call has, whatever the flow sets: the runner fills them in.
BUILTIN_VARIABLES = frozenset({"caller", "callee", "call_id", "carrier", "flow", "digits"})


# Seconds allowed when a flow does not say.
WEBHOOK_TIMEOUT = 5.0
TRANSFER_TIMEOUT = 30.0
AGENT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Problem:
    """One mistake or doubt in a flow file. Line 0 means "the file as a whole"."""

    file: str
    line: int
    step: str | None
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line > 0 else self.file
        if self.step is None:
            return f"{where}: {self.message}"
        return f"{where}: step {self.step!r}: {self.message}"


class FlowError(Exception):
    """A flow cannot run. `problems` are its errors; `warnings` ride along for display."""

    def __init__(self, problems: list[Problem], warnings: list[Problem] | None = None) -> None:
        self.problems = problems
        self.warnings = warnings or []
        super().__init__("\n".join(str(p) for p in problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


@dataclass(frozen=True, slots=True)
class Say:
    """Speak `text` (a template) with the step's speech overrides."""

    text: str


@dataclass(frozen=True, slots=True)
class Play:
    """Play a WAV file (PCM16 mono); a relative path is relative to the flow file."""

    path: str


@dataclass(frozen=True, slots=True)
class Pause:
    """Silence of `seconds`."""

    seconds: float


PromptPart = Say | Play | Pause


@dataclass(frozen=True, slots=True)
class Gather:
    """Collect DTMF keys after (or, with barge-in, during) the step's prompt."""

    max_digits: int = 1
    timeout: float = 5.0  # seconds to wait for each key once the prompt has played
    finish_on_key: str | None = None  # ends input early; not part of the digits
    retries: int = 0  # extra attempts after no input or an invalid key
    reprompt: str | None = None  # spoken on a retry instead of the step's prompt
    no_input: str | None = None  # spoken before a retry after no input
    invalid: str | None = None  # spoken before a retry after an unrouted key
    barge_in: bool = True  # False: the prompt plays out and keys during it are ignored


@dataclass(frozen=True, slots=True)
class Transfer:
    """Hand the call to another number (E.164, possibly a template)."""

    to: str
    timeout: float = TRANSFER_TIMEOUT


@dataclass(frozen=True, slots=True)
class Webhook:
    """POST the call's state to `url`; the answer may set vars, speak and pick the next step."""

    url: str
    timeout: float = WEBHOOK_TIMEOUT


@dataclass(frozen=True, slots=True)
class Agent:
    """Hand the call to an application over a WebSocket the bridge opens (a URL template)."""

    url: str
    listen: bool = True  # send the caller's audio
    timeout: float = AGENT_TIMEOUT  # seconds to open the socket
    barge_in: bool = True  # a key press cuts off what the application is saying


@dataclass(frozen=True, slots=True)
class VarRoute:
    """Go to `next` when every variable in `when` equals its value."""

    when: tuple[tuple[str, str], ...]
    next: str
    line: int = 0


@dataclass(frozen=True)
class Step:
    """One step of a flow. See `telebridge.flows.runner` for the order its parts run in."""

    id: str
    line: int = 0
    prompt: tuple[PromptPart, ...] = ()
    voice: str | None = None
    speed: float | None = None
    language: str | None = None
    set: Mapping[str, str] = field(default_factory=dict)
    gather: Gather | None = None
    webhook: Webhook | None = None
    transfer: Transfer | None = None
    agent: Agent | None = None
    routes: Mapping[str, str] = field(default_factory=dict)  # DTMF digits -> step
    var_routes: tuple[VarRoute, ...] = ()
    default: str | None = None
    next: str | None = None
    on_error: str | None = None
    hangup: str | None = None  # the reason, when the step hangs up
    # Line of each key of the step ("say", "next", ...) and of each digit route ("routes.1").
    lines: Mapping[str, int] = field(default_factory=dict)

    def line_of(self, key: str) -> int:
        """The line of `key` in the file, or the step's own line when unknown."""
        return self.lines.get(key, self.line)

    def targets(self) -> list[tuple[str, str, int]]:
        """Every step this one can name, as (what names it, target, line)."""
        found: list[tuple[str, str, int]] = []
        for key, target in self.routes.items():
            found.append((f"route {key!r}", target, self.line_of(f"routes.{key}")))
        for index, route in enumerate(self.var_routes, start=1):
            found.append((f"route {index}", route.next, route.line or self.line_of("routes")))
        for key in ("default", "next", "on_error"):
            target = getattr(self, key)
            if target is not None:
                found.append((key, target, self.line_of(key)))
        return found

    @property
    def waits_for_caller(self) -> bool:
        """True when the step can stop an otherwise endless loop (input, a webhook, an end)."""
        waits = (self.gather, self.webhook, self.hangup, self.transfer, self.agent)
        return any(x is not None for x in waits)


@dataclass(frozen=True)
class Flow:
    """A validated call flow, ready for `FlowRunner`."""

    name: str
    start: str
    steps: Mapping[str, Step]
    defaults: Mapping[str, str] = field(default_factory=dict)  # top-level `vars:`
    description: str = ""
    source: str = ""  # the file it came from, for messages
    base_dir: Path | None = None  # where relative `play:` paths live
    warnings: tuple[Problem, ...] = ()

    def successors(self, step_id: str) -> list[str]:
        """Steps reachable from `step_id` in one move (existing ones only)."""
        step = self.steps[step_id]
        return [t for _, t, _ in step.targets() if t in self.steps]

    def reachable(self) -> set[str]:
        """Steps some route reaches from `start` (a webhook may still name others)."""
        if self.start not in self.steps:
            return set()
        seen = {self.start}
        todo = [self.start]
        while todo:
            for nxt in self.successors(todo.pop()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def endless_loops(self) -> list[list[str]]:
        """Cycles of steps none of which waits for the caller, ends the call or asks a webhook.

        Each cycle is a strongly connected component of the "passive" steps, listed in
        file order; a single step is included only when it routes to itself.
        """
        passive = {sid for sid, step in self.steps.items() if not step.waits_for_caller}
        edges = {sid: [t for t in self.successors(sid) if t in passive] for sid in passive}
        loops: list[list[str]] = []
        for component in _strongly_connected(edges):
            if len(component) > 1 or component[0] in edges[component[0]]:
                loops.append(sorted(component, key=lambda s: self.steps[s].line))
        return sorted(loops, key=lambda c: self.steps[c[0]].line)


def _strongly_connected(edges: Mapping[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative so a long chain of steps cannot hit the recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        # Each frame is a node and the position of the next edge to look at.
        frames: list[tuple[str, int]] = [(root, 0)]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while frames:
            node, pos = frames[-1]
            if pos < len(edges[node]):
                frames[-1] = (node, pos + 1)
                nxt = edges[node][pos]
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    frames.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            frames.pop()
            if frames:
                parent = frames[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """ " (did you mean 'x'?)" for the closest choice, or "" when none is close."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.65)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_flow(flow: Flow) -> list[Problem]:
    """Errors and warnings that span keys and steps (per-key checks are the loader's)."""
    src = flow.source
    found: list[Problem] = []
    for step in flow.steps.values():
        found.extend(_check_step(step, src))
        for label, target, line in step.targets():
            if target not in flow.steps:
                hint = did_you_mean(target, list(flow.steps))
                found.append(
                    Problem(
                        src, line, step.id, f"{label} names missing step {target!r}{hint}", "error"
                    )
                )
    if flow.start in flow.steps:
        reached = flow.reachable()
        unreached = [step for step in flow.steps.values() if step.id not in reached]
        for step in unreached:
            message = "no route reaches this step (fine if a webhook names it)"
            found.append(Problem(src, step.line, step.id, message, "warning"))
    for loop in flow.endless_loops():
        names = ", ".join(repr(s) for s in loop)
        message = f"steps {names} can loop forever without waiting for input, a webhook or a hangup"
        found.append(Problem(src, flow.steps[loop[0]].line, loop[0], message, "warning"))
    assigned = {var for step in flow.steps.values() for var in step.set}
    known = BUILTIN_VARIABLES | assigned | set(flow.defaults)
    for step in flow.steps.values():
        for line, var in _variables_used(step):
            if var not in known:
                message = (
                    f"variable {var!r} is not set by this flow "
                    "(fine if the call or a webhook provides it)"
                )
                found.append(Problem(src, line, step.id, message, "warning"))
    return found


def _check_step(step: Step, src: str) -> Iterator[Problem]:
    sid = step.id
    does = step.prompt or step.set or step.gather or step.webhook or step.transfer or step.agent
    if not does and step.hangup is None and not step.targets():
        yield Problem(src, step.line, sid, "the step does nothing and goes nowhere", "error")
    if step.routes and step.gather is None:
        message = (
            "digit routes need a 'gather' in the same step "
            "(to route on earlier input use the list form with when: {digits: ...})"
        )
        yield Problem(src, step.line_of("routes"), sid, message, "error")
    if step.default is not None and step.next is not None:
        message = "use either 'default' or 'next', not both"
        yield Problem(src, step.line_of("default"), sid, message, "error")
    elif step.hangup is not None and (step.next or step.default):
        message = "'hangup' is never reached after next/default"
        yield Problem(src, step.line_of("hangup"), sid, message, "error")
    if step.on_error is not None and not (step.webhook or step.transfer or step.agent):
        message = "'on_error' has no webhook, transfer or agent to catch"
        yield Problem(src, step.line_of("on_error"), sid, message, "warning")
    if step.agent is not None and (step.gather is not None or step.transfer is not None):
        message = "an 'agent' step cannot also 'gather' or 'transfer' (the application does)"
        yield Problem(src, step.line_of("agent"), sid, message, "error")
    if step.gather is not None:
        for key in step.routes:
            if len(key) > step.gather.max_digits:
                message = (
                    f"route {key!r} can never match: gather takes at most "
                    f"{step.gather.max_digits} digit(s)"
                )
                yield Problem(src, step.line_of(f"routes.{key}"), sid, message, "warning")


def _variables_used(step: Step) -> Iterator[tuple[int, str]]:
    """(line, name) of each variable the step's templates and list routes read."""
    texts: list[tuple[int, str]] = []
    texts += [(step.line_of("say"), part.text) for part in step.prompt if isinstance(part, Say)]
    texts += [(step.line_of("set"), value) for value in step.set.values()]
    if step.gather is not None:
        said = (step.gather.reprompt, step.gather.no_input, step.gather.invalid)
        texts += [(step.line_of("gather"), text) for text in said if text]
    if step.transfer is not None:
        texts.append((step.line_of("transfer"), step.transfer.to))
    if step.agent is not None:
        texts.append((step.line_of("agent"), step.agent.url))
    for line, text in texts:
        for name in template.names(text):
            yield line, name
    for route in step.var_routes:
        for name, _ in route.when:
            yield route.line, name
