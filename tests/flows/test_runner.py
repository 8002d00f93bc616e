"""Tests for telebridge.flows.runner against a scripted fake call and a real local webhook."""

import asyncio
import contextlib
import json
import logging
import socket
import wave
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from telebridge.flows.fetch import HttpFlowIO
from telebridge.flows.loader import load_flow, parse_flow
from telebridge.flows.model import Flow
from telebridge.flows.runner import FlowRunner, SpeechOverrides

TIMEOUT = 0.05  # gather timeouts in the flows below: real waits, kept short

CALL = {"caller": "+15550001111", "callee": "+15550002222", "call_id": "c-1", "carrier": "plivo"}


class FakePort:
    """A call that records what the runner asks and presses keys as scripted.

    `presses` answer `next_digit` in turn: a key at once, or None for a timeout (a real wait).
    `during` lists (text fragment, keys): the keys are pressed while the first prompt containing
    the fragment plays, each entry used once.
    """

    def __init__(
        self,
        presses: list[str | None] | None = None,
        during: list[tuple[str, str]] | None = None,
        transfer_ok: bool = True,
    ) -> None:
        self.presses = list(presses or [])
        self.during = list(during or [])
        self.transfer_ok = transfer_ok
        self.log: list[tuple[Any, ...]] = []
        self.overrides: list[SpeechOverrides] = []
        self.buffer = ""
        self.interrupted = False
        self.waiting = asyncio.Event()  # set once the runner waits for a key

    async def say(self, text: str, *, barge_in: bool, overrides: SpeechOverrides) -> None:
        self.log.append(("say", text, barge_in))
        self.overrides.append(overrides)
        for i, (fragment, keys) in enumerate(self.during):
            if fragment in text:
                del self.during[i]
                self.buffer += keys
                self.interrupted = self.interrupted or barge_in
                break

    async def play(self, pcm: bytes, sample_rate: int, *, barge_in: bool) -> None:
        self.log.append(("play", len(pcm), sample_rate, barge_in))

    async def pause(self, seconds: float) -> None:
        self.log.append(("pause", seconds))

    async def wait_played(self) -> bool:
        self.log.append(("wait_played",))
        interrupted, self.interrupted = self.interrupted, False
        return not interrupted

    def take_digits(self) -> str:
        keys, self.buffer = self.buffer, ""
        return keys

    async def next_digit(self, timeout: float) -> str | None:  # noqa: ASYNC109 (the port's shape)
        self.log.append(("next_digit", timeout))
        self.waiting.set()
        key = self.presses.pop(0) if self.presses else None
        if key is None:
            await asyncio.sleep(timeout)
        return key

    async def transfer(self, to: str, timeout: float) -> bool:  # noqa: ASYNC109
        self.log.append(("transfer", to, timeout))
        return self.transfer_ok

    async def hangup(self, reason: str) -> None:
        self.log.append(("hangup", reason))

    def said(self) -> list[str]:
        return [entry[1] for entry in self.log if entry[0] == "say"]

    def calls(self, kind: str) -> list[tuple[Any, ...]]:
        return [entry for entry in self.log if entry[0] == kind]


class Recorder:
    def __init__(self) -> None:
        self.steps: list[str] = []
        self.digits: list[tuple[str, str]] = []
        self.vars: list[dict[str, str]] = []
        self.webhooks: list[tuple[str, bool, str]] = []

    def step_entered(self, step: str) -> None:
        self.steps.append(step)

    def digits_collected(self, step: str, digits: str) -> None:
        self.digits.append((step, digits))

    def vars_set(self, values: dict[str, str]) -> None:
        self.vars.append(values)

    def webhook_result(self, step: str, ok: bool, detail: str) -> None:
        self.webhooks.append((step, ok, detail))


def make_flow(text: str, name: str = "test") -> Flow:
    flow, problems = parse_flow(text, name)
    assert flow is not None, [str(p) for p in problems]
    return flow


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


# --- webhook against a real local HTTP server -------------------------------------------------


class Hook:
    """A tiny HTTP/1.1 server on 127.0.0.1: answers per path, records each request."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.url = ""
        self._handlers: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            method, target, _ = (await reader.readline()).decode().split(" ", 2)
            path = target.partition("?")[0]
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, value = line.decode().split(":", 1)
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((method, path, headers, json.loads(body)))
            if path == "/slow":  # never answers; returns once the client gives up
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await reader.read()
                return
            status, payload = self.answers[path]
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        finally:
            writer.close()
            self._handlers.discard(task)

    async def stop(self) -> None:
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        number: int = sock.getsockname()[1]
    return number  # nothing listens there once the socket is closed


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    server_hook = Hook()
    server = await asyncio.start_server(server_hook.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server_hook.url = f"http://127.0.0.1:{port}"
    try:
        yield server_hook
    finally:
        server.close()
        await server_hook.stop()
        await server.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield http


def webhook_flow(url: str, *, on_error: bool = True) -> str:
    return f"""\
start: lookup
steps:
  lookup:
    webhook: {{url: "{url}", timeout: 0.3}}
    say: "Checking done."
    next: confirm
{"    on_error: sorry" if on_error else ""}
  confirm: {{say: "Balance {{{{balance}}}}.", hangup: true}}
  vip: {{say: "Hello VIP.", hangup: true}}
  sorry: {{say: "Sorry.", hangup: true}}
"""


async def run_hook(
    text: str, client: httpx.AsyncClient | None
) -> tuple[FakePort, FlowRunner, Recorder]:
    port = FakePort()
    recorder = Recorder()
    runner = FlowRunner(
        make_flow(text, "bank"),
        port,
        variables=dict(CALL),
        recorder=recorder,
        io=HttpFlowIO(client),
    )
    assert await runner.run() == "hangup"
    return port, runner, recorder


async def test_webhook_posts_call_state_and_applies_the_answer(
    hook: Hook, client: httpx.AsyncClient
) -> None:
    answer = {
        "vars": {"balance": 42, "vip": True, "note": None},
        "say": "{{raw}} text",
        "next": "vip",
    }
    hook.answers["/ivr"] = (200, json.dumps(answer).encode())
    port, runner, recorder = await run_hook(webhook_flow(hook.url + "/ivr"), client)
    [(method, path, headers, body)] = hook.requests
    assert (method, path) == ("POST", "/ivr")
    assert headers["content-type"] == "application/json"
    assert body == {
        "call_id": "c-1",
        "carrier": "plivo",
        "caller": "+15550001111",
        "callee": "+15550002222",
        "flow": "bank",
        "step": "lookup",
        "vars": {**CALL, "flow": "bank", "digits": ""},
    }
    assert port.said() == ["{{raw}} text", "Checking done.", "Hello VIP."]
    assert runner.variables["balance"] == "42"
    assert (runner.variables["vip"], runner.variables["note"]) == ("true", "")
    assert recorder.webhooks == [("lookup", True, "HTTP 200")]
    assert recorder.vars == [{"balance": "42", "vip": "true", "note": ""}]


async def test_webhook_without_next_keeps_the_steps_next(hook: Hook) -> None:
    hook.answers["/ivr"] = (200, b'{"vars": {"balance": "7"}}')
    port, _, _ = await run_hook(webhook_flow(hook.url + "/ivr"), None)  # the runner's own client
    assert port.said() == ["Checking done.", "Balance 7."]


@pytest.mark.parametrize(
    ("path", "status", "payload", "detail"),
    [
        ("/slow", 0, b"", "no answer within 0.3 s"),
        ("/fail", 500, b'{"next": "vip"}', "HTTP 500"),
        ("/notjson", 200, b"<html>hi</html>", "not JSON"),
        ("/list", 200, b"[1, 2]", "not a JSON object"),
        ("/badnext", 200, b'{"next": "nowhere"}', "names no step"),
        ("/badvars", 200, b'{"vars": {"x": [1]}}', "not a plain value"),
    ],
)
async def test_webhook_failures_go_to_on_error(
    hook: Hook, client: httpx.AsyncClient, path: str, status: int, payload: bytes, detail: str
) -> None:
    hook.answers[path] = (status, payload)
    port, runner, recorder = await run_hook(webhook_flow(hook.url + path), client)
    assert port.said() == ["Sorry."]  # straight to on_error: the step's say is skipped
    [(step, ok, text)] = recorder.webhooks
    assert (step, ok) == ("lookup", False)
    assert detail in text
    assert "x" not in runner.variables


async def test_webhook_failure_without_on_error_carries_on(
    hook: Hook, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    hook.answers["/fail"] = (503, b"")
    text = webhook_flow(hook.url + "/fail?token=s3cret", on_error=False)
    with caplog.at_level(logging.WARNING, logger="telebridge.flows.runner"):
        port, _, recorder = await run_hook(text, client)
    assert port.said() == ["Checking done.", "Balance ."]
    assert recorder.webhooks == [("lookup", False, f"{hook.url}/fail: HTTP 503")]
    assert "s3cret" not in caplog.text  # query strings may carry secrets: never logged


async def test_unreachable_webhook_is_a_failure(client: httpx.AsyncClient) -> None:
    port, _, recorder = await run_hook(
        webhook_flow(f"http://127.0.0.1:{unused_port()}/ivr"), client
    )
    assert port.said() == ["Sorry."]
    assert recorder.webhooks[0][1] is False


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
