"""The flows a running bridge may use, loaded and checked once at start-up.

The server refuses to start when any of them has an error, so a call never meets a broken flow.
A call's flow is chosen by `?flow=NAME` on the answer URL, else by the number called (the
`TELEBRIDGE_NUMBERS` map), else `TELEBRIDGE_FLOW`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from telebridge.flows.loader import FlowError, load_flow, resolve_flow
from telebridge.flows.model import Flow, Problem
from telebridge.settings import Settings

logger = logging.getLogger(__name__)


class UnknownFlow(LookupError):
    """A request named a flow the bridge does not have."""


class FlowLibrary:
    """Flows by name: every file in the flows folder, the default, and the per-number ones."""

    def __init__(self, flows_dir: Path, default: str, numbers: dict[str, str] | None = None):
        self._flows: dict[str, Flow] = {}
        errors: list[Problem] = []
        self.default = self._add(resolve_flow(default, flows_dir), errors)
        if flows_dir.is_dir():
            for path in sorted([*flows_dir.glob("*.yaml"), *flows_dir.glob("*.yml")]):
                self._add(path, errors)
        self._numbers: dict[str, str] = {}
        for number, name in (numbers or {}).items():
            try:
                self._numbers[_digits(number)] = self._add(resolve_flow(name, flows_dir), errors)
            except FlowError as exc:
                errors.extend(exc.problems)
        if errors:
            raise FlowError(errors)
        for flow in self._flows.values():
            for warning in flow.warnings:
                logger.warning("flow warning: %s", warning)

    @classmethod
    def from_settings(cls, settings: Settings) -> FlowLibrary:
        """The flows the settings name (TELEBRIDGE_FLOWS_DIR, _FLOW, _NUMBERS); raises FlowError,
        also for agent steps without TELEBRIDGE_AGENT_SECRET."""
        library = cls(
            settings.telebridge_flows_dir, settings.telebridge_flow, settings.telebridge_numbers
        )
        if settings.telebridge_agent_secret is None:
            unsigned = [p for flow in library._flows.values() for p in agent_secret_missing(flow)]
            if unsigned:
                raise FlowError(unsigned)
        return library

    def _add(self, path: Path, errors: list[Problem]) -> str:
        name = path.stem
        if name in self._flows:
            return name
        try:
            self._flows[name] = load_flow(path)
        except FlowError as exc:
            errors.extend(exc.problems)
        return name

    @property
    def names(self) -> list[str]:
        return sorted(self._flows)

    def get(self, name: str) -> Flow:
        try:
            return self._flows[name.removesuffix(".yaml").removesuffix(".yml")]
        except KeyError:
            raise UnknownFlow(name) from None

    def choose(self, requested: str | None, callee: str) -> Flow:
        """The flow for a call: `?flow=` first, then the number called, then the default."""
        if requested:
            return self.get(requested)
        by_number = self._numbers.get(_digits(callee))
        return self.get(by_number or self.default)


def agent_secret_missing(flow: Flow) -> list[Problem]:
    """One problem per agent step: for when TELEBRIDGE_AGENT_SECRET is not set."""
    return [
        Problem(
            flow.source or flow.name,
            step.line_of("agent"),
            step.id,
            "agent steps need TELEBRIDGE_AGENT_SECRET (it signs the handshake to the application)",
        )
        for step in flow.steps.values()
        if step.agent is not None
    ]


def _digits(number: str) -> str:
    # Plivo sends numbers without "+", Vonage with or without: compare digits only.
    return "".join(ch for ch in number if ch.isdigit())
