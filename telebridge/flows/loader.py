"""Reading call flows from YAML, with the file and line of every mistake.

The YAML is composed into nodes (not loaded into plain dicts) so that each step, key and route
keeps its line. Errors are what makes a flow impossible to run; warnings are doubts a webhook or
the call's own variables may resolve at run time (unreached steps, variables no step sets,
loops that never wait for the caller). `telebridge flows check` prints both; the server refuses
to start only on errors. One step's keys are read by flows/steps.py, on top of the typed node
access in flows/nodes.py; the checks across steps are `model.check_flow`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import yaml

from telebridge.flows import template

# Problem and FlowError live with the model (a Flow carries its warnings); import them from here.
from telebridge.flows.model import Flow, FlowError, Problem, Step, check_flow, did_you_mean
from telebridge.flows.nodes import Pairs
from telebridge.flows.steps import StepReader

__all__ = ["FlowError", "Problem", "check_files", "load_flow", "parse_flow", "resolve_flow"]

TOP_KEYS = ("start", "steps", "vars", "description")
_FLOW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


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


class _Reader(StepReader):
    """One pass over one file's nodes: the top-level keys, then each step."""

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

    def read_vars(self, top: Pairs) -> dict[str, str]:
        defaults: dict[str, str] = {}
        if "vars" in top:
            for var, (line, node) in (self.pairs(top["vars"][1], None, "vars") or {}).items():
                if not template.is_variable_name(var):
                    self.error(line, None, f"{var!r} is not a variable name")
                value = self.text(node, None, f"vars: {var}")
                if value is not None:
                    defaults[var] = value
        return defaults

    def read_steps(self, top: Pairs) -> dict[str, Step] | None:
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
