"""Tests for telebridge.flows.runner against a scripted fake call, and the shipped flows."""

import asyncio
import json
import logging
import wave
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from telebridge.flows.fetch import HttpFlowIO
from telebridge.flows.loader import load_flow
from telebridge.flows.runner import FlowRunError, FlowRunner, SpeechOverrides
from tests.flows.fakes import CALL, FakePort, Recorder, make_flow

TIMEOUT = 0.05  # gather timeouts in the flows below: real waits, kept short


MENU = f"""\
start: menu
steps:
  menu:
    say: "Press 1 for opening hours, or 2 to hear this again."
    gather: {{max_digits: 1, timeout: {TIMEOUT}}}
    routes: {{"1": hours, "2": menu}}
    default: goodbye
  hours:
    say: "We are open from nine to five, {{{{caller}}}}."
    next: goodbye
  goodbye:
    say: "Goodbye."
    hangup: true
"""
PROMPT = "Press 1 for opening hours, or 2 to hear this again."


async def run(text: str, port: FakePort, **kwargs: Any) -> tuple[str, FlowRunner, Recorder]:
    recorder = Recorder()
    runner = FlowRunner(make_flow(text), port, variables=dict(CALL), recorder=recorder, **kwargs)
    return await runner.run(), runner, recorder


# --- menus and keys -------------------------------------------------------------------------


async def test_key_1_goes_to_hours_then_hangs_up() -> None:
    port = FakePort(presses=["1"])
    outcome, runner, recorder = await run(MENU, port)
    assert outcome == "hangup"
    assert port.said() == [PROMPT, "We are open from nine to five, +15550001111.", "Goodbye."]
    assert port.calls("hangup") == [("hangup", "completed")]
    assert recorder.steps == ["menu", "hours", "goodbye"]
    assert recorder.digits == [("menu", "1")]
    assert runner.variables["digits"] == "1"
    assert runner.variables["flow"] == "test"


async def test_key_2_repeats_the_menu() -> None:
    port = FakePort(presses=["2", "1"])
    outcome, _, recorder = await run(MENU, port)
    assert outcome == "hangup"
    assert recorder.steps == ["menu", "menu", "hours", "goodbye"]


async def test_no_input_takes_the_default_after_the_timeout() -> None:
    port = FakePort()
    loop = asyncio.get_running_loop()
    began = loop.time()
    outcome, _, recorder = await run(MENU, port)
    assert outcome == "hangup"
    assert recorder.steps == ["menu", "goodbye"]
    assert recorder.digits == []
    assert port.calls("next_digit") == [("next_digit", TIMEOUT)]
    assert loop.time() - began >= TIMEOUT * 0.9


async def test_unrouted_key_takes_the_default() -> None:
    port = FakePort(presses=["9"])
    _, _, recorder = await run(MENU, port)
    assert recorder.steps == ["menu", "goodbye"]
    assert recorder.digits == [("menu", "9")]


async def test_key_during_the_prompt_counts_and_cuts_it_off() -> None:
    text = MENU.replace(
        f'    say: "{PROMPT}"\n', f'    pause: 0.2\n    say: "{PROMPT}"\n    play: tone.wav\n'
    )
    port = FakePort(during=[("Press 1", "1")])
    outcome = await FlowRunner(make_flow(text), port, variables=dict(CALL)).run()
    assert outcome == "hangup"
    assert port.log[:3] == [("pause", 0.2), ("say", PROMPT, True), ("wait_played",)]
    assert port.calls("play") == []  # the rest of the prompt was never queued
    assert port.calls("next_digit") == []  # one key was enough: no waiting
    assert port.said()[1].startswith("We are open")


async def test_keys_pressed_before_the_prompt_are_stale() -> None:
    port = FakePort(presses=["1"])
    port.buffer = "2"
    _, _, recorder = await run(MENU, port)
    assert recorder.steps == ["menu", "hours", "goodbye"]


GATHER4 = f"""\
start: pin
steps:
  pin:
    say: "Enter your code, then hash."
    gather: {{max_digits: 4, timeout: {TIMEOUT}, finish_on_key: "#"}}
    routes: {{"12": short, "1234": full}}
    default: none
  short: {{say: "short", hangup: true}}
  full: {{say: "full", hangup: true}}
  none: {{say: "none", hangup: true}}
"""


async def test_finish_on_key_ends_input_and_is_not_kept() -> None:
    port = FakePort(presses=["1", "2", "#", "3"])
    _, runner, _ = await run(GATHER4, port)
    assert runner.variables["digits"] == "12"
    assert port.said()[-1] == "short"
    assert port.presses == ["3"]


async def test_max_digits_ends_input_and_keys_in_the_prompt_come_first() -> None:
    port = FakePort(presses=["3", "4", "5"], during=[("Enter", "12")])
    _, runner, _ = await run(GATHER4, port)
    assert runner.variables["digits"] == "1234"
    assert port.said()[-1] == "full"
    assert port.presses == ["5"]


async def test_timeout_between_keys_ends_input() -> None:
    port = FakePort(presses=["1", None, "2"])
    _, runner, _ = await run(GATHER4, port)
    assert runner.variables["digits"] == "1"
    assert port.said()[-1] == "none"


RETRY = f"""\
start: ask
steps:
  ask:
    say: "Press 1."
    gather:
      max_digits: 1
      timeout: {TIMEOUT}
      retries: 2
      reprompt: "Please press 1 now."
      no_input: "I heard nothing."
      invalid: "That key does nothing."
    routes: {{"1": yes}}
    default: fallback
  yes: {{say: "yes", hangup: true}}
  fallback: {{say: "fallback", hangup: true}}
"""


async def test_retries_speak_no_input_and_invalid_then_the_reprompt() -> None:
    port = FakePort(presses=[None, "9", "1"])
    outcome, _, recorder = await run(RETRY, port)
    assert outcome == "hangup"
    assert port.said() == [
        "Press 1.",
        "I heard nothing.",
        "Please press 1 now.",
        "That key does nothing.",
        "Please press 1 now.",
        "yes",
    ]
    assert recorder.digits == [("ask", "9"), ("ask", "1")]
    assert recorder.steps == ["ask", "yes"]  # retries stay within the step


async def test_retries_exhausted_take_the_default() -> None:
    port = FakePort(presses=["7", "8", "9"])
    _, runner, _ = await run(RETRY, port)
    assert port.said()[-1] == "fallback"
    assert len(port.calls("next_digit")) == 3
    assert runner.variables["digits"] == "9"


async def test_retry_without_reprompt_repeats_the_prompt() -> None:
    text = RETRY.replace('      reprompt: "Please press 1 now."\n', "").replace(
        '      no_input: "I heard nothing."\n', ""
    )
    port = FakePort(presses=[None, "1"])
    await run(text, port)
    assert port.said() == ["Press 1.", "Press 1.", "yes"]


async def test_barge_in_false_plays_out_and_ignores_keys_meanwhile() -> None:
    text = MENU.replace(f"timeout: {TIMEOUT}}}", f"timeout: {TIMEOUT}, barge_in: false}}")
    port = FakePort(presses=["2", "9"], during=[("Press 1", "1")])
    _, _, recorder = await run(text, port)
    assert port.log[0] == ("say", PROMPT, False)
    assert recorder.steps[:2] == ["menu", "menu"]  # the "1" during the prompt did not count


# --- variables and routing ------------------------------------------------------------------


async def test_set_renders_templates_in_order_and_speaks_them() -> None:
    text = """\
start: a
vars: {title: Ms}
steps:
  a:
    set: {greeting: "Hello {{title}} {{name}}", line: "{{greeting}}, you called {{callee}}."}
    say: "{{ line }}"
    hangup: {reason: greeted}
"""
    port = FakePort()
    recorder = Recorder()
    variables = {**CALL, "name": "Ann"}
    runner = FlowRunner(make_flow(text), port, variables=variables, recorder=recorder)
    outcome = await runner.run()
    assert outcome == "hangup"
    assert port.said() == ["Hello Ms Ann, you called +15550002222."]
    assert runner.variables["line"] == "Hello Ms Ann, you called +15550002222."
    assert recorder.vars == [
        {"greeting": "Hello Ms Ann", "line": "Hello Ms Ann, you called +15550002222."}
    ]
    assert port.calls("hangup") == [("hangup", "greeted")]


async def test_call_variables_override_flow_defaults() -> None:
    text = 'start: a\nvars: {name: friend}\nsteps:\n  a: {say: "Hi {{name}}"}\n'
    port = FakePort()
    await FlowRunner(make_flow(text), port, variables={"name": "Bo"}).run()
    assert port.said() == ["Hi Bo"]


async def test_unknown_variable_is_spoken_empty_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = 'start: a\nsteps:\n  a: {say: "Hi {{nobody}}!"}\n'
    port = FakePort()
    with caplog.at_level(logging.WARNING):
        outcome = await FlowRunner(make_flow(text), port, variables={}).run()
    assert outcome == "ended"
    assert port.said() == ["Hi !"]
    assert any("'nobody'" in r.getMessage() for r in caplog.records)


VAR_ROUTES = f"""\
start: ask
steps:
  ask:
    say: "Press a key."
    gather: {{max_digits: 1, timeout: {TIMEOUT}}}
    next: check
  check:
    routes:
      - when: {{tier: gold, digits: "1"}}
        next: gold_one
      - when: {{tier: gold}}
        next: gold
    next: plain
  gold_one: {{say: "gold one"}}
  gold: {{say: "gold"}}
  plain: {{say: "plain"}}
"""


@pytest.mark.parametrize(
    ("tier", "key", "spoken"),
    [("gold", "1", "gold one"), ("gold", "2", "gold"), ("silver", "1", "plain")],
)
async def test_variable_routes_first_match_wins(tier: str, key: str, spoken: str) -> None:
    port = FakePort(presses=[key])
    outcome = await FlowRunner(make_flow(VAR_ROUTES), port, variables={"tier": tier}).run()
    assert outcome == "ended"
    assert port.said()[-1] == spoken


async def test_speech_overrides_reach_the_port() -> None:
    text = 'start: a\nsteps:\n  a: {say: "Hola", voice: maria, speed: 0.9, language: es}\n'
    port = FakePort()
    await FlowRunner(make_flow(text), port, variables={}).run()
    assert port.overrides == [SpeechOverrides("maria", 0.9, "es")]
    assert port.log[0] == ("say", "Hola", False)  # no gather: nothing to barge in for


async def test_play_reads_the_wav_next_to_the_flow(tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "tone.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\x01\x00" * 320)
    (tmp_path / "f.yaml").write_text("start: a\nsteps:\n  a: {play: tone.wav, pause: 0.25}\n")
    port = FakePort()
    outcome = await FlowRunner(
        load_flow(tmp_path / "f.yaml"), port, variables={}, io=HttpFlowIO()
    ).run()
    assert outcome == "ended"
    assert port.log == [("play", 640, 16000, False), ("pause", 0.25)]


async def test_unreadable_audio_ends_in_error(tmp_path: Path) -> None:
    (tmp_path / "tone.wav").write_bytes(b"RIFF")
    flow = replace(make_flow("start: a\nsteps:\n  a: {play: tone.wav}\n"), base_dir=tmp_path)
    outcome = await FlowRunner(flow, FakePort(), variables={}, io=HttpFlowIO()).run()
    assert outcome.startswith("error:") and "tone.wav" in outcome


NO_IO = "error:this flow needs HTTP or audio files, and the runner has no FlowIO"


@pytest.mark.parametrize(
    ("step", "said"),
    [
        ('{webhook: {url: "https://crm.example.com/ivr"}, say: "Checking."}', []),
        ('{say: "First.", play: tone.wav, hangup: true}', ["First."]),
    ],
)
async def test_a_runner_without_io_ends_in_error_at_a_webhook_or_play(
    step: str, said: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    port = FakePort()
    recorder = Recorder()
    flow = make_flow(f"start: a\nsteps:\n  a: {step}\n")
    with caplog.at_level(logging.ERROR, logger="telebridge.flows.runner"):
        outcome = await FlowRunner(flow, port, variables={}, recorder=recorder).run()
    assert outcome == NO_IO
    assert port.said() == said
    assert port.calls("play") == [] and port.calls("hangup") == []
    assert recorder.webhooks == []  # a missing FlowIO is a bug, not a failed webhook
    [failure] = [r for r in caplog.records if r.exc_info]
    assert failure.exc_info is not None and failure.exc_info[0] is FlowRunError


# --- transfer, hangup, endings ----------------------------------------------------------------

TRANSFER = """\
start: agent
steps:
  agent:
    say: "Connecting you."
    transfer: {to: "{{agent}}", timeout: 20}
    on_error: busy
  busy:
    say: "Everyone is busy."
    hangup: {reason: agent busy}
"""


async def test_transfer_waits_for_the_prompt_then_transfers() -> None:
    port = FakePort()
    runner = FlowRunner(make_flow(TRANSFER), port, variables={"agent": "+14155550123"})
    assert await runner.run() == "transfer"
    assert port.log == [
        ("say", "Connecting you.", False),
        ("wait_played",),
        ("transfer", "+14155550123", 20.0),
    ]


@pytest.mark.parametrize(("number", "ok"), [("+14155550123", False), ("12345", True)])
async def test_failed_transfer_or_bad_number_goes_to_on_error(number: str, ok: bool) -> None:
    port = FakePort(transfer_ok=ok)
    outcome = await FlowRunner(make_flow(TRANSFER), port, variables={"agent": number}).run()
    assert outcome == "hangup"
    assert port.said() == ["Connecting you.", "Everyone is busy."]
    assert port.calls("hangup") == [("hangup", "agent busy")]
    assert len(port.calls("transfer")) == (0 if number == "12345" else 1)


async def test_failed_transfer_without_on_error_is_an_error() -> None:
    text = 'start: a\nsteps:\n  a:\n    transfer: {to: "+14155550123"}\n'
    outcome = await FlowRunner(make_flow(text), FakePort(transfer_ok=False), variables={}).run()
    assert outcome == "error:transfer failed"


async def test_running_off_the_end_is_ended_without_hangup() -> None:
    port = FakePort()
    outcome = await FlowRunner(
        make_flow('start: a\nsteps:\n  a: {say: "x"}\n'), port, variables={}
    ).run()
    assert outcome == "ended"
    assert port.calls("hangup") == []


async def test_runaway_loop_is_stopped() -> None:
    text = 'start: a\nsteps:\n  a: {say: "a", next: b}\n  b: {say: "b", next: a}\n'
    port = FakePort()
    outcome = await FlowRunner(make_flow(text), port, variables={}, max_steps=20).run()
    assert outcome == "error:too many steps"
    assert len(port.said()) == 20


async def test_port_failure_becomes_an_error_outcome() -> None:
    class Broken(FakePort):
        async def say(self, text: str, *, barge_in: bool, overrides: SpeechOverrides) -> None:
            raise ConnectionError("stream closed")

    outcome = await FlowRunner(make_flow(MENU), Broken(), variables={}).run()
    assert outcome == "error:stream closed"


async def test_cancellation_propagates() -> None:
    flow = make_flow(MENU.replace(f"timeout: {TIMEOUT}", "timeout: 30"))
    port = FakePort(presses=[None])
    runner = FlowRunner(flow, port, variables={})
    task = asyncio.create_task(runner.run())
    await port.waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runner.state == "done"


async def test_a_runner_runs_once() -> None:
    runner = FlowRunner(make_flow(MENU), FakePort(), variables={})
    await runner.run()
    with pytest.raises(RuntimeError):
        await runner.run()


# --- the shipped flows ----------------------------------------------------------------------

CONFIG_FLOWS = Path(__file__).parent.parent.parent / "config" / "flows"


async def test_demo_flow_answers_key_1_with_the_hours() -> None:
    port = FakePort(presses=["1"])
    outcome = await FlowRunner(load_flow(CONFIG_FLOWS / "demo.yaml"), port, variables={}).run()
    assert outcome == "hangup"
    assert len(port.said()) == 3 and "nine to five" in port.said()[1]


async def test_survey_keeps_the_score() -> None:
    port = FakePort(presses=["4"])
    runner = FlowRunner(load_flow(CONFIG_FLOWS / "survey.yaml"), port, variables={})
    assert await runner.run() == "hangup"
    assert runner.variables["score"] == "4"
    assert "4 out of 5" in port.said()[1]


@pytest.mark.parametrize(("key", "choice"), [("1", "confirmed"), ("2", "cancelled")])
async def test_reminder_reports_the_choice(key: str, choice: str) -> None:
    posted: list[Any] = []

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(200, json={})

    port = FakePort(presses=[key])
    flow = load_flow(CONFIG_FLOWS / "reminder.yaml")
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        runner = FlowRunner(
            flow, port, variables={"name": "Ann", "time": "3 pm"}, io=HttpFlowIO(http)
        )
        assert await runner.run() == "hangup"
    assert port.said()[0].startswith("Hello Ann, this is a reminder of your appointment at 3 pm.")
    [body] = posted
    assert (body["step"], body["vars"]["choice"]) == ("report", choice)
