"""Flows in the console: every flow with what `telebridge flows check` finds in its file (read
again on each request) and its steps as drawing data (kinds, texts, labelled edges)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from telebridge.console.graph import step_graph
from telebridge.flows import parse_flow
from tests.console.conftest import KEY, client
from tests.e2e.conftest import FLOWS, MakeBridge

MENU = "Press 1 for hours, or 2 to hear this again. This prompt is long enough to be cut off."
BROKEN = """start: a
steps:
  a:
    say: "Hi."
    next: b
"""
AGENT = """start: talk
steps:
  talk:
    agent: {url: "ws://127.0.0.1:9/agent"}
"""


def by_name(flows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {flow["name"]: flow for flow in flows}


async def test_flows_show_their_steps_edges_and_problems(
    make_bridge: MakeBridge, tmp_path: Path
) -> None:
    folder = tmp_path / "flows"
    shutil.copytree(FLOWS, folder)
    lb = await make_bridge(telebridge_api_key=KEY, telebridge_flows_dir=folder)
    async with client(lb, key=KEY) as http:
        flows = by_name((await http.get("/console/api/flows")).json()["flows"])
        assert set(flows) == {p.stem for p in folder.glob("*.yaml")}
        menu = flows["menu"]
        assert menu["start"] == "menu" and menu["problems"] == []
        assert menu["file"] == str(folder / "menu.yaml")
        steps = {step["id"]: step for step in menu["steps"]}
        assert list(steps) == ["menu", "hours", "goodbye"]
        assert steps["menu"] == {
            "id": "menu", "kind": "gather", "text": MENU,
            "edges": [{"to": "hours", "label": "1"}, {"to": "menu", "label": "2"},
                      {"to": "goodbye", "label": "timeout / default"}],
        }  # fmt: skip
        assert steps["hours"]["kind"] == "say"
        assert steps["hours"]["edges"] == [{"to": "goodbye", "label": "next"}]
        assert steps["goodbye"]["kind"] == "hangup" and steps["goodbye"]["edges"] == []
        transfer = {s["id"]: s for s in flows["transfer"]["steps"]}["agent"]
        assert transfer["kind"] == "transfer" and transfer["to"] == "+14155550123"
        assert transfer["edges"] == [{"to": "sorry", "label": "on_error"}]
        (warning,) = flows["notify"]["problems"]
        assert warning["level"] == "warning" and warning["line"] == 5
        assert warning["step"] == "hello" and "'name'" in warning["message"]

        # Files change while the bridge runs: each request reads them again.
        (folder / "broken.yaml").write_text(BROKEN)
        (folder / "agent.yaml").write_text(AGENT)
        (folder / "menu.yaml").write_text("start: menu\nsteps: [\n")
        flows = by_name((await http.get("/console/api/flows")).json()["flows"])
    broken = flows["broken"]
    assert broken["steps"] == []  # not loaded, and not readable as a flow
    (error,) = broken["problems"]
    assert error["level"] == "error" and error["line"] == 5 and error["step"] == "a"
    assert "missing step 'b'" in error["message"]
    agent = flows["agent"]
    assert [s["kind"] for s in agent["steps"]] == ["agent"]
    assert any("TELEBRIDGE_AGENT_SECRET" in p["message"] for p in agent["problems"])
    edited = flows["menu"]
    assert edited["problems"][0]["level"] == "error"
    assert "YAML" in edited["problems"][0]["message"]
    assert [s["id"] for s in edited["steps"]] == ["menu", "hours", "goodbye"]  # as running


def test_steps_are_drawn_with_their_kind_and_every_route() -> None:
    text = """start: ask
steps:
  ask:
    pause: 0.5
    say: "Choose now."
    gather: {max_digits: 1}
    routes: {"1": hook, "#": done}
    default: done
  hook:
    webhook: {url: "http://127.0.0.1:9/hook"}
    on_error: done
    routes:
      - when: {tier: gold}
        next: done
    next: pick
  pick:
    set: {tier: silver}
    next: quiet
  quiet:
    pause: 1
    next: done
  done:
    hangup: true
"""
    flow, problems = parse_flow(text, "shapes.yaml")
    assert flow is not None, problems
    steps = {sid: step_graph(step) for sid, step in flow.steps.items()}
    assert steps["ask"]["kind"] == "gather" and steps["ask"]["text"] == "Choose now."
    assert [e["label"] for e in steps["ask"]["edges"]] == ["1", "#", "timeout / default"]
    assert steps["hook"]["kind"] == "webhook"
    assert steps["hook"]["edges"] == [
        {"to": "done", "label": "when tier=gold"},
        {"to": "pick", "label": "next"},
        {"to": "done", "label": "on_error"},
    ]
    assert (steps["pick"]["kind"], steps["quiet"]["kind"]) == ("set", "pause")
    assert "text" not in steps["pick"]
    assert steps["done"] == {"id": "done", "kind": "hangup", "hangup": "completed", "edges": []}
