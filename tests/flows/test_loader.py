"""Tests for telebridge.flows.loader: YAML to flows, with the file and line of every problem."""

import wave
from pathlib import Path

import pytest

from telebridge.flows.loader import (
    FlowError,
    Problem,
    check_files,
    load_flow,
    parse_flow,
    resolve_flow,
)
from telebridge.flows.model import Gather, Pause, Play, Say, VarRoute

HERE = Path(__file__).parent
BROKEN = HERE / "broken"
CONFIG_FLOWS = HERE.parent.parent / "config" / "flows"

CORE = """\
start: menu
steps:
  menu:
    say: "Press 1 for opening hours, or 2 to hear this again."
    gather: {max_digits: 1, timeout: 5}
    routes: {"1": hours, "2": menu}
    default: goodbye
  hours:
    say: "We are open from nine to five, {{caller}}."
    next: goodbye
  goodbye:
    say: "Goodbye."
    hangup: true
"""

CORE_WITH_WEBHOOK_AND_TRANSFER = (
    CORE
    + """\
  lookup:
    webhook: {url: "https://crm.example.com/ivr", timeout: 3}
    next: confirm
    on_error: sorry
  confirm:
    say: "Thanks."
    hangup: true
  sorry:
    say: "Sorry."
    hangup: true
  agent:
    transfer: {to: "+14155550123"}
"""
)


def errors_of(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def warnings_of(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "warning"]


def test_core_example_parses_without_problems() -> None:
    flow, problems = parse_flow(CORE, "core.yaml")
    assert problems == []
    assert flow is not None
    assert flow.name == "core"
    assert flow.start == "menu"
    menu = flow.steps["menu"]
    assert menu.prompt == (Say("Press 1 for opening hours, or 2 to hear this again."),)
    assert menu.gather == Gather(max_digits=1, timeout=5.0)
    assert dict(menu.routes) == {"1": "hours", "2": "menu"}
    assert menu.default == "goodbye"
    assert flow.steps["hours"].next == "goodbye"
    assert flow.steps["goodbye"].hangup == "completed"
    # Lines are 1-based and point at the step and at each of its keys.
    assert menu.line == 3
    assert menu.line_of("gather") == 5
    assert menu.line_of("routes.2") == 6
    assert flow.steps["goodbye"].line == 11


def test_webhook_and_transfer_shapes_parse_and_unreached_steps_only_warn() -> None:
    flow, problems = parse_flow(CORE_WITH_WEBHOOK_AND_TRANSFER, "full.yaml")
    assert errors_of(problems) == []
    assert flow is not None
    lookup = flow.steps["lookup"]
    assert lookup.webhook is not None
    assert (lookup.webhook.url, lookup.webhook.timeout) == ("https://crm.example.com/ivr", 3.0)
    assert (lookup.next, lookup.on_error) == ("confirm", "sorry")
    agent = flow.steps["agent"]
    assert agent.transfer is not None and agent.transfer.to == "+14155550123"
    unreached = {p.step for p in warnings_of(problems) if "no route reaches" in p.message}
    assert unreached == {"lookup", "confirm", "sorry", "agent"}
    assert flow.warnings == tuple(warnings_of(problems))


def test_integer_route_keys_become_strings_as_written() -> None:
    text = CORE.replace('routes: {"1": hours, "2": menu}', "routes: {1: hours, 02: menu}")
    flow, problems = parse_flow(text, "ints.yaml")
    assert flow is not None, problems
    assert dict(flow.steps["menu"].routes) == {"1": "hours", "02": "menu"}


def test_extended_step_parts_parse_in_written_order() -> None:
    text = """\
start: a
vars: {name: friend}
steps:
  a:
    set: {greeting: "Hi {{name}}"}
    pause: 0.5
    say: "{{greeting}}"
    voice: emily
    speed: 1.2
    language: en
    gather:
      max_digits: 4
      timeout: 2.5
      finish_on_key: "#"
      retries: 2
      reprompt: "Again."
      no_input: "Nothing?"
      invalid: "Not that."
      barge_in: false
    routes:
      - when: {digits: "1234", name: friend}
        next: b
    next: b
  b:
    hangup: {reason: done here}
"""
    flow, problems = parse_flow(text, "ext.yaml")
    assert problems == []
    assert flow is not None
    a = flow.steps["a"]
    assert a.prompt == (Pause(0.5), Say("{{greeting}}"))
    assert (a.voice, a.speed, a.language) == ("emily", 1.2, "en")
    assert dict(a.set) == {"greeting": "Hi {{name}}"}
    assert a.gather == Gather(4, 2.5, "#", 2, "Again.", "Nothing?", "Not that.", False)
    assert a.var_routes == (VarRoute((("digits", "1234"), ("name", "friend")), "b", 21),)
    assert flow.steps["b"].hangup == "done here"
    assert dict(flow.defaults) == {"name": "friend"}


# Each broken fixture: the message it must produce (a substring) and the line it points at.
BROKEN_CASES = {
    "yaml_syntax.yaml": ("YAML syntax error", 6),
    "not_mapping.yaml": ("must be a mapping", 1),
    "empty.yaml": ("the file is empty", 1),
    "unknown_top_key.yaml": ("unknown top-level key 'voices'", 6),
    "unknown_step_key.yaml": ("unknown step key 'sya' (did you mean 'say'?)", 4),
    "unknown_gather_key.yaml": ("unknown key 'timout' in gather (did you mean 'timeout'?)", 5),
    "bad_max_digits.yaml": ("max_digits must be a whole number from 1 to 64, not 'x'", 5),
    "bad_timeout.yaml": ("timeout must be a number above 0", 7),
    "bad_barge_in.yaml": ("barge_in must be true or false", 5),
    "bad_pause_and_hangup.yaml": ("pause must be a number above 0", 5),
    "missing_start.yaml": ("'start' is missing", 1),
    "start_missing_step.yaml": ("start names missing step 'welcome'", 1),
    "route_missing_step.yaml": ("route '1' names missing step 'hour' (did you mean 'hours'?)", 7),
    "next_missing_step.yaml": ("next names missing step 'goodby' (did you mean 'goodbye'?)", 5),
    "on_error_missing_step.yaml": ("on_error names missing step 'oops'", 6),
    "empty_step.yaml": ("does nothing and goes nowhere", 6),
    "bad_transfer_number.yaml": ("'4155550123' is not E.164", 5),
    "bad_webhook_url.yaml": ("must be http:// or https://", 5),
    "duplicate_step.yaml": ("duplicate key 'menu'", 6),
    "bad_template.yaml": ("never closed", 4),
    "hangup_after_next.yaml": ("'hangup' is never reached", 6),
    "routes_without_gather.yaml": ("digit routes need a 'gather'", 5),
    "route_list_without_next.yaml": ("needs 'when' and 'next'", 6),
    "steps_not_mapping.yaml": ("steps must be a mapping", 2),
    "missing_audio.yaml": ("not found", 4),
}


def test_every_broken_fixture_has_an_expectation() -> None:
    assert sorted(p.name for p in BROKEN.glob("*.yaml")) == sorted(BROKEN_CASES)


@pytest.mark.parametrize(("name", "expected"), sorted(BROKEN_CASES.items()))
def test_broken_fixture_reports_message_and_line(name: str, expected: tuple[str, int]) -> None:
    fragment, line = expected
    path = BROKEN / name
    errors, _ = check_files([path])
    assert any(fragment in p.message and p.line == line for p in errors), errors
    assert all(p.file == str(path) for p in errors)
    with pytest.raises(FlowError) as caught:
        load_flow(path)
    assert f"{path}:{line}: " in str(caught.value)
    assert caught.value.problems == errors


def test_step_problems_name_the_step() -> None:
    errors, _ = check_files([BROKEN / "unknown_step_key.yaml"])
    assert [str(p) for p in errors] == [
        f"{BROKEN / 'unknown_step_key.yaml'}:4: step 'menu': "
        "unknown step key 'sya' (did you mean 'say'?)"
    ]


def test_problem_text_without_step_or_line() -> None:
    assert str(Problem("f.yaml", 3, None, "bad")) == "f.yaml:3: bad"
    assert str(Problem("f.yaml", 0, None, "gone")) == "f.yaml: gone"
    assert str(Problem("f.yaml", 3, "menu", "bad", "warning")) == "f.yaml:3: step 'menu': bad"


def test_yaml_error_names_where_the_quote_began() -> None:
    errors, _ = check_files([BROKEN / "yaml_syntax.yaml"])
    assert "started on line 4" in errors[0].message


def test_unset_variable_is_a_warning_with_its_line() -> None:
    text = CORE.replace("{{caller}}", "{{ customer }}")
    flow, problems = parse_flow(text, "vars.yaml")
    assert flow is not None
    [warning] = problems
    assert warning.severity == "warning"
    assert (warning.line, warning.step) == (9, "hours")
    assert "'customer'" in warning.message


def test_variables_set_by_steps_or_declared_do_not_warn() -> None:
    text = CORE.replace("{{caller}}", "{{ customer }} {{ seen }}") + "    set: {seen: yes}\n"
    flow, problems = parse_flow("vars: {customer: you}\n" + text, "vars.yaml")
    assert flow is not None
    assert problems == []


def test_loop_without_input_is_a_warning() -> None:
    text = """\
start: a
steps:
  a: {say: "A", next: b}
  b: {say: "B", next: a}
  c: {say: "C", next: c}
  d: {say: "D", gather: {}, default: d}
"""
    flow, problems = parse_flow(text, "loop.yaml")
    assert flow is not None
    loops = [p for p in problems if "loop forever" in p.message]
    assert [(p.step, p.line) for p in loops] == [("a", 3), ("c", 5)]
    assert all(p.severity == "warning" for p in loops)
    assert "'a', 'b'" in loops[0].message


def test_route_too_long_for_gather_and_stray_on_error_warn() -> None:
    text = CORE.replace('{"1": hours', '{"12": hours').replace(
        "    next: goodbye\n", "    next: goodbye\n    on_error: goodbye\n", 1
    )
    flow, problems = parse_flow(text, "w.yaml")
    assert flow is not None
    messages = [(p.severity, p.line, p.message) for p in problems]
    assert ("warning", 6, "route '12' can never match: gather takes at most 1 digit(s)") in messages
    assert any(s == "warning" and "'on_error' has no webhook" in m for s, _, m in messages)


def test_templated_transfer_number_is_checked_at_run_time() -> None:
    text = 'start: a\nsteps:\n  a:\n    transfer: {to: "{{agent}}"}\n'
    flow, problems = parse_flow(text, "t.yaml")
    assert flow is not None
    assert [p.severity for p in problems] == ["warning"]  # 'agent' is set by no step


def write_wav(path: Path, channels: int = 1, width: int = 2) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(8000)
        wav.writeframes(b"\x00" * 160 * channels * width)


def test_play_file_is_checked_next_to_the_flow(tmp_path: Path) -> None:
    write_wav(tmp_path / "chime.wav")
    write_wav(tmp_path / "stereo.wav", channels=2)
    flow_file = tmp_path / "f.yaml"
    flow_file.write_text("start: a\nsteps:\n  a:\n    play: chime.wav\n    hangup: true\n")
    flow = load_flow(flow_file)
    assert flow.steps["a"].prompt == (Play("chime.wav"),)
    assert flow.base_dir == tmp_path
    flow_file.write_text("start: a\nsteps:\n  a:\n    play: stereo.wav\n    hangup: true\n")
    errors, _ = check_files([flow_file])
    assert [(p.line, "16-bit mono" in p.message) for p in errors] == [(4, True)]


def test_unreadable_file_is_one_problem(tmp_path: Path) -> None:
    errors, warnings = check_files([tmp_path / "nope.yaml"])
    assert warnings == []
    assert len(errors) == 1 and "cannot read" in errors[0].message
    assert str(errors[0]).startswith(f"{tmp_path / 'nope.yaml'}: ")


def test_shipped_flows_have_no_errors() -> None:
    paths = sorted(CONFIG_FLOWS.glob("*.yaml"))
    assert {p.name for p in paths} >= {"demo.yaml", "support.yaml", "reminder.yaml", "survey.yaml"}
    errors, _ = check_files(paths)
    assert errors == []


def test_demo_greeting_is_cacheable_and_the_demo_is_clean() -> None:
    flow = load_flow(CONFIG_FLOWS / "demo.yaml")
    assert flow.warnings == ()
    first = flow.steps[flow.start].prompt[0]
    assert isinstance(first, Say) and "{{" not in first.text


def test_resolve_flow_by_path_and_by_name(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(CORE)
    (tmp_path / "b.yml").write_text(CORE)
    assert resolve_flow(str(tmp_path / "a.yaml"), Path("/nonexistent")) == tmp_path / "a.yaml"
    assert resolve_flow("a", tmp_path) == tmp_path / "a.yaml"
    assert resolve_flow("b", tmp_path) == tmp_path / "b.yml"
    assert resolve_flow("a.yaml", tmp_path, names_only=True) == tmp_path / "a.yaml"
    with pytest.raises(FlowError) as caught:
        resolve_flow("missing", tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "missing.yaml") in message and str(tmp_path / "missing.yml") in message


def test_resolve_flow_names_only_refuses_paths(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(CORE)
    with pytest.raises(FlowError, match="not a flow name"):
        resolve_flow(str(tmp_path / "a.yaml"), tmp_path, names_only=True)
    with pytest.raises(FlowError, match="not a flow name"):
        resolve_flow("../flows/a", tmp_path, names_only=True)
