"""Typed reading of YAML nodes for the flow loader: mappings with each key's line, text,
templates, numbers in a range and flags, each mistake recorded as a `Problem` with its line.

Flows are composed into nodes (not loaded into plain dicts) so that every value keeps its line.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode

from telebridge.flows import template
from telebridge.flows.model import Problem, did_you_mean

__all__ = ["NodeReader", "Pairs", "line_of", "scalar"]

_NULL = "tag:yaml.org,2002:null"
_CONSTRUCTOR = SafeConstructor()


def line_of(node: Node) -> int:
    """The 1-based line a node starts on."""
    return int(node.start_mark.line) + 1


def scalar(node: Node) -> object:
    """The typed value of a scalar node (int, float, bool, str...), or None."""
    if not isinstance(node, ScalarNode):
        return None
    try:
        return _CONSTRUCTOR.construct_object(node)
    except yaml.YAMLError:  # e.g. an explicit tag the safe constructor does not know
        return None


Pairs = dict[str, tuple[int, Node]]  # a mapping's keys with their lines and value nodes


class NodeReader:
    """Reads one file's nodes, collecting problems as it goes; subclasses build the model."""

    def __init__(self, file: str, base_dir: Path | None) -> None:
        self.file = file
        self.base_dir = base_dir
        self.problems: list[Problem] = []

    def error(self, line: int, step: str | None, message: str) -> None:
        self.problems.append(Problem(self.file, line, step, message, "error"))

    # --- typed access to nodes -------------------------------------------------------------

    def pairs(
        self,
        node: Node,
        step: str | None,
        what: str,
        allowed: tuple[str, ...] | None = None,
        unknown: str = "",
    ) -> Pairs | None:
        """A mapping's keys with their lines and value nodes; `unknown` names a stray key."""
        if not isinstance(node, MappingNode):
            self.error(line_of(node), step, f"{what} must be a mapping")
            return None
        out: Pairs = {}
        for key_node, value in node.value:
            if not isinstance(key_node, ScalarNode):
                self.error(line_of(key_node), step, f"keys in {what} must be plain words")
                continue
            key = str(key_node.value)
            if key in out:
                self.error(line_of(key_node), step, f"duplicate key {key!r} in {what}")
            elif allowed is not None and key not in allowed:
                where = (
                    f"unknown {unknown} {key!r}" if unknown else f"unknown key {key!r} in {what}"
                )
                self.error(line_of(key_node), step, where + did_you_mean(key, allowed))
            else:
                out[key] = (line_of(key_node), value)
        return out

    def text(self, node: Node, step: str | None, what: str) -> str | None:
        if isinstance(node, ScalarNode) and node.tag != _NULL:
            return str(node.value)
        self.error(line_of(node), step, f"{what} must be text")
        return None

    def template(self, node: Node, step: str | None, what: str) -> str | None:
        value = self.text(node, step, what)
        if value is not None:
            for message in template.errors(value):
                self.error(line_of(node), step, f"{what}: {message}")
        return value

    def number(
        self, node: Node, step: str, what: str, low: float, high: float, *, whole: bool = False
    ) -> float | None:
        """A number in [low, high]; a `low` of 0 means above 0 (durations), unless `whole`."""
        value = scalar(node)
        above = low == 0 and not whole
        kinds = int if whole else int | float
        number = float(value) if isinstance(value, kinds) and not isinstance(value, bool) else None
        if number is not None and (low < number if above else low <= number) and number <= high:
            return number
        kind = "a whole number" if whole else "a number"
        span = f"above 0 and at most {high:g}" if above else f"from {low:g} to {high:g}"
        shown = repr(node.value) if isinstance(node, ScalarNode) else "a collection"
        self.error(line_of(node), step, f"{what} must be {kind} {span}, not {shown}")
        return None

    def timeout(
        self, keys: Pairs, step: str, kind: str, high: float, default: float
    ) -> float | None:
        if "timeout" not in keys:
            return default
        return self.number(keys["timeout"][1], step, f"{kind}: timeout", 0, high)

    def flag(self, node: Node, step: str, what: str) -> bool | None:
        value = scalar(node)
        if isinstance(value, bool):
            return value
        self.error(line_of(node), step, f"{what} must be true or false")
        return None
