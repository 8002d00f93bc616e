"""A flow as the console draws it: its steps (what each does) and the edges between them, with
their labels, beside what `telebridge flows check` finds in its file.

The files are read again on each request, so an edited flow shows its problems at once (the
bridge runs the flows it loaded at start-up until it is restarted). A file with errors is drawn
as the bridge loaded it, if it did; else it has no steps, only its problems.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from telebridge.flows import Flow, Problem, Step, parse_flow
from telebridge.flows.library import FlowLibrary, UnknownFlow, agent_secret_missing
from telebridge.flows.model import Pause, Play, Say

__all__ = ["flow_graphs", "step_graph"]


def flow_graphs(
    library: FlowLibrary, flows_dir: Path, *, agent_secret: bool
) -> list[dict[str, Any]]:
    """Every flow the bridge serves and every flow file in `flows_dir`, by name."""
    files: dict[str, Path | None] = {}
    for name in library.names:
        source = library.get(name).source
        files[name] = Path(source) if source else None
    if flows_dir.is_dir():
        for path in sorted([*flows_dir.glob("*.yaml"), *flows_dir.glob("*.yml")]):
            files.setdefault(path.stem, path)
    graphs = []
    for name, found in sorted(files.items()):
        try:
            loaded: Flow | None = library.get(name)
        except UnknownFlow:
            loaded = None
        graphs.append(_graph(name, found, loaded, agent_secret=agent_secret))
    return graphs


def _graph(
    name: str, path: Path | None, loaded: Flow | None, *, agent_secret: bool
) -> dict[str, Any]:
    flow: Flow | None = loaded
    problems: list[Problem] = []
    if path is not None:
        flow, problems = _check(path)
        if flow is not None and not agent_secret:
            problems += agent_secret_missing(flow)
        flow = flow or loaded
    return {
        "name": name,
        "file": _shown(path) if path is not None else "",
        "description": flow.description if flow else "",
        "start": flow.start if flow else "",
        "problems": [_problem(p) for p in problems],
        "steps": [step_graph(step) for step in flow.steps.values()] if flow else [],
    }


def _check(path: Path) -> tuple[Flow | None, list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(str(path), 0, None, f"cannot read the flow file: {exc.strerror}")]
    except UnicodeDecodeError:
        return None, [Problem(str(path), 0, None, "the flow file is not UTF-8 text")]
    return parse_flow(text, str(path), base_dir=path.parent)


def _problem(problem: Problem) -> dict[str, Any]:
    return {"level": problem.severity, "line": problem.line, "step": problem.step,
            "message": problem.message}  # fmt: skip


def step_graph(step: Step) -> dict[str, Any]:
    """One step: `id`, `kind`, `text` (what it says, when it says something) and `edges`."""
    said = " ".join(part.text for part in step.prompt if isinstance(part, Say))
    found: dict[str, Any] = {"id": step.id, "kind": _kind(step)}
    if said:
        found["text"] = said
    if step.transfer is not None:
        found["to"] = step.transfer.to
    if step.hangup is not None:
        found["hangup"] = step.hangup
    edges = [{"to": target, "label": key} for key, target in step.routes.items()]
    for route in step.var_routes:
        when = ", ".join(f"{var}={value}" for var, value in route.when)
        edges.append({"to": route.next, "label": f"when {when}"})
    if step.default is not None:
        label = "timeout / default" if step.gather is not None else "default"
        edges.append({"to": step.default, "label": label})
    if step.next is not None:
        edges.append({"to": step.next, "label": "next"})
    if step.on_error is not None:
        edges.append({"to": step.on_error, "label": "on_error"})
    found["edges"] = edges
    return found


def _kind(step: Step) -> str:
    for kind, part in (("agent", step.agent), ("transfer", step.transfer),
                       ("webhook", step.webhook), ("gather", step.gather)):  # fmt: skip
        if part is not None:
            return kind
    if step.hangup is not None:
        return "hangup"
    for kind, shape in (("say", Say), ("play", Play), ("pause", Pause)):
        if any(isinstance(part, shape) for part in step.prompt):
            return kind
    return "set" if step.set else "route"


def _shown(path: Path) -> str:
    """A flow file's path as the operator knows it: relative to the working folder if in it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
