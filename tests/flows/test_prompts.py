"""The fixed prompts of a flow, read from real flow files: what the runner speaks that no variable
changes, with each step's speech overrides, once each."""

from __future__ import annotations

from pathlib import Path

from telebridge.flows import FlowRunner, load_flow
from telebridge.flows.ports import SpeechOverrides
from telebridge.flows.prompts import FixedPrompt, fixed_prompts
from tests.flows.fakes import CALL, FakePort

NONE = SpeechOverrides()


def flow_file(tmp_path: Path, text: str, name: str = "main") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def prompts_of(tmp_path: Path, text: str) -> list[FixedPrompt]:
    return fixed_prompts(load_flow(flow_file(tmp_path, text)))


def test_says_without_variables_are_fixed_and_with_variables_are_not(tmp_path: Path) -> None:
    found = prompts_of(
        tmp_path,
        """
start: welcome
vars: {name: there}
steps:
  welcome:
    say: "Welcome to Acme."
    next: hello
  hello:
    say: "Hello {{ name }}, nice to hear you."
    next: bye
  bye:
    say: "Goodbye."
    hangup: true
""",
    )
    assert found == [FixedPrompt("welcome", "Welcome to Acme.", NONE),
                     FixedPrompt("bye", "Goodbye.", NONE)]  # fmt: skip


def test_the_text_is_kept_exactly_as_the_runner_speaks_it(tmp_path: Path) -> None:
    # Not stripped, not folded: the cache key is the text the runner sends to Waves.
    found = prompts_of(
        tmp_path,
        """
start: a
steps:
  a:
    say: "  Spaces around.  "
    next: b
  b:
    say: |
      Two
      lines.
    hangup: true
""",
    )
    assert [p.text for p in found] == ["  Spaces around.  ", "Two\nlines.\n"]


def test_blank_texts_are_never_spoken_so_never_made(tmp_path: Path) -> None:
    found = prompts_of(
        tmp_path,
        """
start: a
steps:
  a:
    say: "   "
    gather: {retries: 1, no_input: " ", reprompt: "Press 1."}
    routes: {"1": b}
    default: b
  b:
    say: ""
    hangup: true
""",
    )
    assert found == [FixedPrompt("a", "Press 1.", NONE)]


def test_gather_texts_are_fixed_prompts_when_the_runner_can_say_them(tmp_path: Path) -> None:
    found = prompts_of(
        tmp_path,
        """
start: menu
steps:
  menu:
    say: "Press 1 or 2."
    gather:
      retries: 2
      reprompt: "Press 1 or 2, please."
      no_input: "I did not hear you."
      invalid: "That is not a choice."
    routes: {"1": done, "2": done}
    default: done
  done:
    hangup: true
""",
    )
    assert found == [
        FixedPrompt("menu", "Press 1 or 2.", NONE),
        FixedPrompt("menu", "I did not hear you.", NONE),
        FixedPrompt("menu", "That is not a choice.", NONE),
        FixedPrompt("menu", "Press 1 or 2, please.", NONE),
    ]


def test_gather_texts_with_variables_are_not_fixed(tmp_path: Path) -> None:
    found = prompts_of(
        tmp_path,
        """
start: menu
vars: {name: you}
steps:
  menu:
    say: "Press 1."
    gather:
      retries: 1
      reprompt: "{{name}}, press 1."
      no_input: "Still there, {{ name }}?"
      invalid: "No."
    routes: {"1": done}
    default: done
  done:
    hangup: true
""",
    )
    assert found == [FixedPrompt("menu", "Press 1.", NONE), FixedPrompt("menu", "No.", NONE)]


def test_gather_texts_the_runner_never_says_are_left_out(tmp_path: Path) -> None:
    # Without retries nothing is asked again; without digit routes no key is invalid.
    found = prompts_of(
        tmp_path,
        """
start: once
steps:
  once:
    say: "Press a key."
    gather: {reprompt: "Again.", no_input: "Nothing?", invalid: "Wrong."}
    routes: {"1": any}
    default: any
  any:
    say: "Any key will do."
    gather: {retries: 1, invalid: "Wrong key.", no_input: "No key."}
    next: done
  done:
    hangup: true
""",
    )
    assert [(p.step, p.text) for p in found] == [
        ("once", "Press a key."),
        ("any", "Any key will do."),
        ("any", "No key."),
    ]


def test_each_step_speaks_with_its_own_voice_speed_and_language(tmp_path: Path) -> None:
    found = prompts_of(
        tmp_path,
        """
start: en
steps:
  en:
    say: "Hello."
    next: hi
  hi:
    say: "Namaste."
    voice: arjun
    speed: 1.25
    language: hi
    gather: {retries: 1, no_input: "Kripya."}
    next: slow
  slow:
    say: "Slowly."
    speed: 0.75
    hangup: true
""",
    )
    arjun = SpeechOverrides(voice="arjun", speed=1.25, language="hi")
    assert found == [
        FixedPrompt("en", "Hello.", NONE),
        FixedPrompt("hi", "Namaste.", arjun),
        FixedPrompt("hi", "Kripya.", arjun),
        FixedPrompt("slow", "Slowly.", SpeechOverrides(speed=0.75)),
    ]


def test_a_text_said_twice_alike_is_one_prompt_said_otherwise_two(tmp_path: Path) -> None:
    found = prompts_of(
        tmp_path,
        """
start: a
steps:
  a:
    say: "Sorry."
    gather: {retries: 1, no_input: "Sorry.", reprompt: "Press 1."}
    routes: {"1": b}
    default: b
  b:
    say: "Sorry."
    next: c
  c:
    say: "Sorry."
    voice: arjun
    next: d
  d:
    say: "Press 1."
    hangup: true
""",
    )
    assert found == [
        FixedPrompt("a", "Sorry.", NONE),
        FixedPrompt("a", "Press 1.", NONE),
        FixedPrompt("c", "Sorry.", SpeechOverrides(voice="arjun")),
    ]


def test_play_and_pause_are_not_speech(tmp_path: Path) -> None:
    wav = tmp_path / "beep.wav"
    wav.write_bytes(
        b"RIFF" + (36 + 4).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
        + (16000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
        + b"data" + (4).to_bytes(4, "little") + b"\x00\x00\x00\x00"
    )  # fmt: skip
    found = prompts_of(
        tmp_path,
        """
start: a
steps:
  a:
    play: beep.wav
    pause: 0.5
    say: "After the beep."
    hangup: true
""",
    )
    assert found == [FixedPrompt("a", "After the beep.", NONE)]


async def test_the_runner_speaks_exactly_the_fixed_prompts_of_a_flow_without_variables(
    tmp_path: Path,
) -> None:
    # Walk every path once: an invalid key, no input, then a good key.
    flow = load_flow(
        flow_file(
            tmp_path,
            """
start: greet
steps:
  greet:
    say: "Thanks for calling."
    next: menu
  menu:
    say: "Press 1 for sales."
    gather:
      timeout: 0.01
      retries: 2
      no_input: "I heard nothing."
      invalid: "That key does nothing."
      reprompt: "Press 1, please."
    routes: {"1": sales}
    default: sales
  sales:
    say: "Connecting you to sales."
    voice: arjun
    hangup: true
""",
        )
    )
    port = FakePort(presses=["9", None, "1"])
    outcome = await FlowRunner(flow, port, variables=dict(CALL)).run()
    assert outcome == "hangup"
    said = set(zip(port.said(), port.overrides, strict=True))
    assert said == {(p.text, p.overrides) for p in fixed_prompts(flow)}
    assert len(said) == 6
