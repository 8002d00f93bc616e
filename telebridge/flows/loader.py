"""Reading call flows from YAML, with the file and line of every mistake.

The YAML is composed into nodes (not loaded into plain dicts) so that each step, key and route
keeps its line. Errors are what makes a flow impossible to run; warnings are doubts a webhook or
the call's own variables may resolve at run time (unreached steps, variables no step sets,
loops that never wait for the caller). `telebridge flows check` prints both; the server refuses
to start only on errors.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from telebridge import e164

# Problem and FlowError live with the model (a Flow carries its warnings); import them from here.
from telebridge.dtmf import DTMF_KEYS
from telebridge.flows import template
from telebridge.flows.model import (
    TRANSFER_TIMEOUT,
    WEBHOOK_TIMEOUT,
    Flow,
    FlowError,
    Gather,
    Pause,
    Play,
    Problem,
    PromptPart,
    Say,
    Step,
    Transfer,
    VarRoute,
    Webhook,
    check_flow,
    did_you_mean,
)
from telebridge.flows.wav import WavError, read_wav

__all__ = ["FlowError", "Problem", "check_files", "load_flow", "parse_flow", "resolve_flow"]

TOP_KEYS = ("start", "steps", "vars", "description")
STEP_KEYS = (
    "say", "voice", "speed", "language", "play", "pause", "set", "gather", "webhook",
    "transfer", "routes", "default", "next", "on_error", "hangup",
)  # fmt: skip
GATHER_KEYS = (
    "max_digits", "timeout", "finish_on_key", "retries", "reprompt", "no_input", "invalid",
    "barge_in",
)  # fmt: skip
_DIGIT_ROUTE = re.compile(r"[0-9*#A-D]+")
_FLOW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_NULL = "tag:yaml.org,2002:null"
_CONSTRUCTOR = SafeConstructor()


def load_flow(path: Path) -> Flow:
    """Read and check one flow file; raise `FlowError` on errors. Warnings: `flow.warnings`."""
    flow, problems = _read_file(path)
    if flow is None:
        errors = [p for p in problems if p.severity == "error"]
        raise FlowError(errors, [p for p in problems if p.severity == "warning"])
    return flow


def parse_flow(
    text: str, name: str, *, base_dir: Path | None = None
) -> tuple[Flow | None, list[Problem]]:
    """Check flow YAML `text`; `name` labels the problems and names the flow (its stem).

    Returns the flow (None when there are errors) and every problem, errors and warnings, in
    line order. With `base_dir`, `play:` files are looked up there and checked.
    """
    reader = _Reader(name, base_dir)
    flow = reader.read(text, Path(name).stem or name)
    problems = sorted(reader.problems, key=lambda p: (p.line, p.severity))
    if flow is None or any(p.severity == "error" for p in problems):
        return None, problems
    warnings = tuple(p for p in problems if p.severity == "warning")
    return replace(flow, warnings=warnings), problems


def check_files(paths: list[Path]) -> tuple[list[Problem], list[Problem]]:
    """Check flow files; returns (errors, warnings) across all of them."""
    errors: list[Problem] = []
    warnings: list[Problem] = []
    for path in paths:
        for problem in _read_file(path)[1]:
            (errors if problem.severity == "error" else warnings).append(problem)
    return errors, warnings


def resolve_flow(name_or_path: str, flows_dir: Path, *, names_only: bool = False) -> Path:
    """The file for a flow: the path as given if it exists, else `flows_dir/NAME.yaml` (or .yml).

    `names_only` refuses anything but a plain name, for names that come from a request.
    """
    tried: list[str] = []
    if not names_only:
        given = Path(name_or_path)
        if given.is_file():
            return given
        tried.append(str(given))
    stem = name_or_path.removesuffix(".yaml").removesuffix(".yml")
    plain = _FLOW_NAME.fullmatch(stem) is not None
    if names_only and not plain:
        raise FlowError([Problem(name_or_path, 0, None, "not a flow name (letters, digits, _ -)")])
    if plain:
        names = [name_or_path] if stem != name_or_path else [f"{stem}.yaml", f"{stem}.yml"]
        for candidate in (flows_dir / n for n in names):
            if candidate.is_file():
                return candidate
            tried.append(str(candidate))
    raise FlowError([Problem(name_or_path, 0, None, f"no such flow; tried {', '.join(tried)}")])


def _read_file(path: Path) -> tuple[Flow | None, list[Problem]]:
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(label, 0, None, f"cannot read the flow file: {exc.strerror or exc}")]
    except UnicodeDecodeError:
        return None, [Problem(label, 0, None, "the flow file is not UTF-8 text")]
    return parse_flow(text, label, base_dir=path.parent)


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _scalar(node: Node) -> object:
    """The typed value of a scalar node (int, float, bool, str...), or None."""
    if not isinstance(node, ScalarNode):
        return None
    try:
        return _CONSTRUCTOR.construct_object(node)
    except yaml.YAMLError:  # e.g. an explicit tag the safe constructor does not know
        return None


_Pairs = dict[str, tuple[int, Node]]


class _Reader:
    """One pass over one file's nodes, collecting problems as it builds the model."""

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
    ) -> _Pairs | None:
        """A mapping's keys with their lines and value nodes; `unknown` names a stray key."""
        if not isinstance(node, MappingNode):
            self.error(_line(node), step, f"{what} must be a mapping")
            return None
        out: _Pairs = {}
        for key_node, value in node.value:
            if not isinstance(key_node, ScalarNode):
                self.error(_line(key_node), step, f"keys in {what} must be plain words")
                continue
            key = str(key_node.value)
            if key in out:
                self.error(_line(key_node), step, f"duplicate key {key!r} in {what}")
            elif allowed is not None and key not in allowed:
                where = (
                    f"unknown {unknown} {key!r}" if unknown else f"unknown key {key!r} in {what}"
                )
                self.error(_line(key_node), step, where + did_you_mean(key, allowed))
            else:
                out[key] = (_line(key_node), value)
        return out

    def text(self, node: Node, step: str | None, what: str) -> str | None:
        if isinstance(node, ScalarNode) and node.tag != _NULL:
            return str(node.value)
        self.error(_line(node), step, f"{what} must be text")
        return None

    def template(self, node: Node, step: str | None, what: str) -> str | None:
        value = self.text(node, step, what)
        if value is not None:
            for message in template.errors(value):
                self.error(_line(node), step, f"{what}: {message}")
        return value

    def number(
        self, node: Node, step: str, what: str, low: float, high: float, *, whole: bool = False
    ) -> float | None:
        """A number in [low, high]; a `low` of 0 means above 0 (durations), unless `whole`."""
        value = _scalar(node)
        above = low == 0 and not whole
        kinds = int if whole else int | float
        number = float(value) if isinstance(value, kinds) and not isinstance(value, bool) else None
        if number is not None and (low < number if above else low <= number) and number <= high:
            return number
        kind = "a whole number" if whole else "a number"
        span = f"above 0 and at most {high:g}" if above else f"from {low:g} to {high:g}"
        shown = repr(node.value) if isinstance(node, ScalarNode) else "a collection"
        self.error(_line(node), step, f"{what} must be {kind} {span}, not {shown}")
        return None

    def timeout(
        self, keys: _Pairs, step: str, kind: str, high: float, default: float
    ) -> float | None:
        if "timeout" not in keys:
            return default
        return self.number(keys["timeout"][1], step, f"{kind}: timeout", 0, high)

    def flag(self, node: Node, step: str, what: str) -> bool | None:
        value = _scalar(node)
        if isinstance(value, bool):
            return value
        self.error(_line(node), step, f"{what} must be true or false")
        return None

    # --- the flow ------------------------------------------------------------------------

    def read(self, text: str, name: str) -> Flow | None:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            # The problem mark is where parsing failed; the context mark, when there is one,
            # is where the construct began (an unclosed quote, say), worth naming too.
            mark = exc.problem_mark or exc.context_mark
            detail = exc.problem or "cannot parse"
            if exc.context and exc.context_mark:
                detail += f" ({exc.context} started on line {exc.context_mark.line + 1})"
            self.error(mark.line + 1 if mark else 1, None, f"YAML syntax error: {detail}")
            return None
        except yaml.YAMLError as exc:
            self.error(1, None, f"YAML syntax error: {exc}")
            return None
        if root is None:
            self.error(1, None, "the file is empty: a flow needs 'start' and 'steps'")
            return None
        top = self.pairs(root, None, "a flow file", TOP_KEYS, "top-level key")
        if top is None:
            return None
        steps = self.read_steps(top)
        defaults = self.read_vars(top)
        description = ""
        if "description" in top:
            description = self.text(top["description"][1], None, "description") or ""
        start = ""
        if "start" not in top:
            self.error(1, None, "'start' is missing: name the first step")
        else:
            line, node = top["start"]
            start = self.text(node, None, "start") or ""
            if start and steps is not None and start not in steps:
                hint = did_you_mean(start, list(steps))
                self.error(line, None, f"start names missing step {start!r}{hint}")
        if steps is None:
            return None
        flow = Flow(name, start, steps, defaults, description, self.file, self.base_dir)
        self.problems.extend(check_flow(flow))
        return flow

    def read_vars(self, top: _Pairs) -> dict[str, str]:
        defaults: dict[str, str] = {}
        if "vars" in top:
            for var, (line, node) in (self.pairs(top["vars"][1], None, "vars") or {}).items():
                if not template.is_variable_name(var):
                    self.error(line, None, f"{var!r} is not a variable name")
                value = self.text(node, None, f"vars: {var}")
                if value is not None:
                    defaults[var] = value
        return defaults

    def read_steps(self, top: _Pairs) -> dict[str, Step] | None:
        """The steps, or None when there are none to check `start` and routes against."""
        if "steps" not in top:
            self.error(1, None, "'steps' is missing: a flow needs at least one step")
            return None
        line, node = top["steps"]
        pairs = self.pairs(node, None, "steps")
        if pairs is not None and not pairs:
            self.error(line, None, "'steps' is empty: a flow needs at least one step")
        if not pairs:
            return None
        return {sid: self.read_step(sid, sl, sn) for sid, (sl, sn) in pairs.items()}

    def read_step(self, sid: str, line: int, node: Node) -> Step:
        keys = self.pairs(node, sid, "a step", STEP_KEYS, "step key")
        if keys is None:
            return Step(sid, line)
        # Step's keyword arguments, filled key by key; the types follow from each reader.
        fields: dict[str, object] = {}
        prompt: list[PromptPart] = []
        lines = {key: ln for key, (ln, _) in keys.items()}
        for key, (_, value) in keys.items():
            if key == "say" and (text := self.template(value, sid, "say")) is not None:
                prompt.append(Say(text))
            elif key == "play" and (path := self.text(value, sid, "play")) is not None:
                self.check_audio(path, _line(value), sid)
                prompt.append(Play(path))
            elif key == "pause" and (seconds := self.number(value, sid, "pause", 0, 60)):
                prompt.append(Pause(seconds))
            elif key in ("voice", "language", "default", "next", "on_error"):
                fields[key] = self.text(value, sid, key)
            elif key == "speed":
                fields[key] = self.number(value, sid, "speed", 0.5, 2.0)
            elif key == "set":
                fields[key] = self.read_set(value, sid)
            elif key == "gather":
                fields[key] = self.read_gather(value, sid)
            elif key == "webhook":
                fields[key] = self.read_webhook(value, sid)
            elif key == "transfer":
                fields[key] = self.read_transfer(value, sid)
            elif key == "routes":
                fields["routes"], fields["var_routes"], route_lines = self.read_routes(value, sid)
                lines.update({f"routes.{k}": ln for k, ln in route_lines.items()})
            elif key == "hangup":
                fields[key] = self.read_hangup(value, sid)
        return Step(sid, line, prompt=tuple(prompt), lines=lines, **fields)  # type: ignore[arg-type]

    def read_set(self, node: Node, sid: str) -> dict[str, str]:
        values: dict[str, str] = {}
        for var, (line, value) in (self.pairs(node, sid, "set") or {}).items():
            if not template.is_variable_name(var):
                self.error(line, sid, f"set: {var!r} is not a variable name")
            text = self.template(value, sid, f"set: {var}")
            if text is not None:
                values[var] = text
        return values

    def read_gather(self, node: Node, sid: str) -> Gather | None:
        keys = self.pairs(node, sid, "gather", GATHER_KEYS)
        if keys is None:
            return None
        options: dict[str, object] = {}
        for key, (_, value) in keys.items():
            what = f"gather: {key}"
            if key in ("max_digits", "retries"):
                low, high = (1, 64) if key == "max_digits" else (0, 10)
                number = self.number(value, sid, what, low, high, whole=True)
                options[key] = None if number is None else int(number)
            elif key == "timeout":
                options[key] = self.number(value, sid, what, 0, 600)
            elif key == "barge_in":
                options[key] = self.flag(value, sid, what)
            elif key == "finish_on_key":
                key_text = self.text(value, sid, what)
                if key_text is not None and (len(key_text) != 1 or key_text not in DTMF_KEYS):
                    self.error(_line(value), sid, f"{what} must be one key such as '#'")
                options[key] = key_text
            else:
                options[key] = self.template(value, sid, what)
        return Gather(**{k: v for k, v in options.items() if v is not None})  # type: ignore[arg-type]

    def read_webhook(self, node: Node, sid: str) -> Webhook | None:
        keys = self.pairs(node, sid, "webhook", ("url", "timeout"))
        if keys is None:
            return None
        if "url" not in keys:
            self.error(_line(node), sid, "webhook needs a 'url'")
            return None
        url = self.text(keys["url"][1], sid, "webhook: url")
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                self.error(keys["url"][0], sid, f"webhook url {url!r} must be http:// or https://")
        timeout = self.timeout(keys, sid, "webhook", 60, WEBHOOK_TIMEOUT)
        return Webhook(url, timeout) if url is not None and timeout is not None else None

    def read_transfer(self, node: Node, sid: str) -> Transfer | None:
        keys = self.pairs(node, sid, "transfer", ("to", "timeout"))
        if keys is None:
            return None
        if "to" not in keys:
            self.error(_line(node), sid, "transfer needs 'to' (a number such as +14155550123)")
            return None
        to = self.template(keys["to"][1], sid, "transfer: to")
        # A file holds numbers in the canonical form only: "4155550123" could be a national
        # number missing its country code, which read as E.164 would ring someone abroad.
        if to is not None and "{{" not in to and not e164.is_e164(to):
            self.error(keys["to"][0], sid, f"transfer number {to!r} is not E.164: {e164.RULE}")
        timeout = self.timeout(keys, sid, "transfer", 600, TRANSFER_TIMEOUT)
        return Transfer(to, timeout) if to is not None and timeout is not None else None

    def read_routes(
        self, node: Node, sid: str
    ) -> tuple[dict[str, str], tuple[VarRoute, ...], dict[str, int]]:
        if isinstance(node, SequenceNode):
            read = [self.read_var_route(item, sid) for item in node.value]
            return {}, tuple(route for route in read if route is not None), {}
        routes: dict[str, str] = {}
        lines: dict[str, int] = {}
        for key, (line, value) in (self.pairs(node, sid, "routes") or {}).items():
            if not _DIGIT_ROUTE.fullmatch(key):
                self.error(line, sid, f"route key {key!r} must be keys 0-9, *, # (or a list form)")
            target = self.text(value, sid, f"route {key!r}")
            if target is not None:
                routes[key] = target
                lines[key] = line
        return routes, (), lines

    def read_var_route(self, node: Node, sid: str) -> VarRoute | None:
        keys = self.pairs(node, sid, "a route", ("when", "next"))
        if keys is None:
            return None
        if "when" not in keys or "next" not in keys:
            self.error(_line(node), sid, "a route in list form needs 'when' and 'next'")
            return None
        when: list[tuple[str, str]] = []
        for var, (line, value) in (self.pairs(keys["when"][1], sid, "when") or {}).items():
            if not template.is_variable_name(var):
                self.error(line, sid, f"when: {var!r} is not a variable name")
            text = self.text(value, sid, f"when: {var}")
            if text is not None:
                when.append((var, text))
        target = self.text(keys["next"][1], sid, "next")
        if not when or target is None:
            if not when:
                self.error(_line(node), sid, "'when' must name at least one variable")
            return None
        return VarRoute(tuple(when), target, _line(node))

    def read_hangup(self, node: Node, sid: str) -> str | None:
        if isinstance(node, MappingNode):
            keys = self.pairs(node, sid, "hangup", ("reason",)) or {}
            if "reason" in keys:
                return self.text(keys["reason"][1], sid, "hangup: reason")
            return "completed"
        value = _scalar(node)
        if not isinstance(value, bool):
            self.error(_line(node), sid, "hangup must be true or {reason: ...}")
            return None
        return "completed" if value else None

    def check_audio(self, path: str, line: int, sid: str) -> None:
        if self.base_dir is None:
            return
        full = self.base_dir / path
        try:
            read_wav(full, header_only=True)
        except WavError as exc:
            if exc.kind == "missing":
                self.error(line, sid, f"audio file {str(full)!r} not found")
            elif exc.kind == "unreadable":
                self.error(
                    line, sid, f"audio file {str(full)!r} is not a readable WAV file: {exc.detail}"
                )
            else:
                self.error(line, sid, f"audio file {str(full)!r} must be 16-bit mono PCM WAV")
