"""Tests for telebridge.call.session: one call's policy over a fake carrier socket and Waves.

The carrier side is a real sans-I/O `PlivoStream` behind a `FakeTransport`; Waves is a
`FakeSynth`; flows are parsed from YAML, as the server does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from telebridge.call.audio import FrameEncoder
from telebridge.call.session import APOLOGY, MAX_BAD_MESSAGES, CallSession, CallState
from telebridge.flows import Flow, parse_flow
from telebridge.tts import WavesAuthError, WavesServerError, WavesTruncated
from tests.call.fakes import (
    SPEECH,
    FakeControl,
    FakeSynth,
    FakeTransport,
    Script,
    audio_of,
    dtmf,
    plivo_stream,
    tone,
)

GREET = """
start: hello
steps:
  hello:
    say: "Hello."
    hangup: {reason: done}
"""

MENU = """
start: menu
steps:
  menu:
    say: "Press 1 for hours."
    gather: {max_digits: 1, timeout: 2}
    routes: {"1": hours}
    default: goodbye
  hours:
    say: "Nine to five."
    next: goodbye
  goodbye:
    say: "Goodbye."
    hangup: {reason: done}
"""

NO_BARGE = MENU.replace("timeout: 2}", "timeout: 0.3, barge_in: false}")

TRANSFER = """
start: agent
steps:
  agent:
    say: "Connecting."
    transfer: {to: "+14155550123", timeout: 20}
    on_error: sorry
  sorry:
    say: "Sorry."
    hangup: {reason: refused}
"""

# A long prompt: 1 s of audio, trickling in.
LONG: Script = [tone(2)] + [0.02, tone(2)] * 24


def flow(text: str) -> Flow:
    parsed, problems = parse_flow(text, "test.yaml")
    assert parsed is not None, problems
    return parsed


def mulaw(pcm: bytes) -> bytes:
    encoder = FrameEncoder(src_rate=8000, dst_rate=8000, codec="mulaw")
    return encoder.feed(pcm) + encoder.flush()


def spoken(script: Script) -> bytes:
    return mulaw(b"".join(item for item in script if isinstance(item, bytes)))


@dataclass
class Call:
    session: CallSession
    transport: FakeTransport
    control: FakeControl
    tts: FakeSynth
    # (event kind, its fields, the session's state when it was emitted)
    events: list[tuple[str, dict[str, Any], CallState]] = field(default_factory=list)

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.events]

    def fields(self, kind: str) -> list[dict[str, Any]]:
        return [f for k, f, _ in self.events if k == kind]

    async def run(self, text: str) -> str:
        return await asyncio.wait_for(self.session.run(flow(text), {"caller": "+14155550100"}), 10)


def make_call(
    *scripts: Script, plays_marks: bool = True, mark_timeout: float = 1.0, **control: Any
) -> Call:
    transport = FakeTransport(plays_marks=plays_marks)
    fake_control = FakeControl(transport, **control)
    tts = FakeSynth(*scripts)
    call: Call

    def observe(call_id: str, kind: str, fields: dict[str, Any]) -> None:
        assert call_id == "call-1"
        call.events.append((kind, fields, call.session.state))

    session = CallSession(
        call_id="call-1",
        stream=plivo_stream(),
        transport=transport,
        control=fake_control,
        tts=tts,
        speech=SPEECH,
        max_lead=10.0,
        mark_timeout=mark_timeout,
        observer=observe,
    )
    call = Call(session, transport, fake_control, tts)
    return call


async def until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_prompt_plays_whole_then_the_flow_hangs_up() -> None:
    call = make_call([tone(3), tone(4)])
    assert await call.run(GREET) == "hangup"
    assert call.transport.audio() == mulaw(tone(7))
    assert call.control.calls == [("hangup", None)]
    assert call.session.hangup_reason == "done"
    assert call.transport.closed
    kinds = call.kinds()
    assert [k for k in kinds if k not in ("first_audio", "tts_first_byte")][:4] == [
        "prompt",
        "mark",
        "played",
        "hangup",
    ]
    assert kinds[-1] == "ended"
    assert call.fields("ended") == [{"outcome": "hangup", "underruns": 0}]
    states = {kind: state for kind, _, state in call.events}
    assert states["prompt"] is CallState.STREAMING
    assert states["hangup"] is CallState.ENDING
    assert states["ended"] is CallState.ENDED
    assert call.session.state is CallState.ENDED


async def test_a_session_runs_once() -> None:
    call = make_call([tone(1)])
    await call.run(GREET)
    with pytest.raises(RuntimeError):
        await call.run(GREET)


async def test_speech_that_keeps_failing_ends_with_the_carriers_apology() -> None:
    call = make_call([WavesServerError("down")])
    assert await call.run(GREET) == "error:tts server_error"
    assert len(call.tts.requests) == 3
    assert call.control.calls == [("end_with_message", APOLOGY)]
    assert "apology" in call.kinds() and "hangup" not in call.kinds()
    assert call.transport.audio() == b""
    [(_, _, state)] = [e for e in call.events if e[0] == "apology"]
    assert state is CallState.ENDING


async def test_a_refused_key_is_not_retried_and_apologises() -> None:
    call = make_call([WavesAuthError("401")], [tone(2)])
    assert await call.run(GREET) == "error:tts auth"
    assert len(call.tts.requests) == 1
    assert call.control.calls == [("end_with_message", APOLOGY)]


async def test_when_the_carrier_cannot_apologise_it_hangs_up() -> None:
    call = make_call([WavesServerError("down")], apology_spoken=False)
    assert await call.run(GREET) == "error:tts server_error"
    assert call.control.calls == [("end_with_message", APOLOGY), ("hangup", None)]


async def test_speech_cut_short_plays_what_was_heard_then_apologises() -> None:
    start = tone(2) + b"\x10\x00" * 30  # the last frame waits in the encoder for its end
    call = make_call([start, WavesTruncated("cut")], [tone(9)])
    assert await call.run(GREET) == "error:tts truncated"
    assert len(call.tts.requests) == 1  # no retry once the caller heard the start
    assert call.transport.audio() == mulaw(start)  # padded to a whole frame
    assert call.transport.events()[-1] == "checkpoint"
    kinds = call.kinds()
    assert kinds.index("played") < kinds.index("apology")  # the start played out first


async def test_a_key_during_a_barge_in_prompt_clears_it_and_routes() -> None:
    call = make_call(LONG, [tone(3)], [tone(2)])
    running = asyncio.create_task(call.run(MENU))
    await until(lambda: len(call.transport.audio()) >= 4 * 160)
    call.transport.feed(dtmf("1"))
    assert await running == "hangup"
    sent, events = call.transport.sent, call.transport.events()
    cleared = events.index("clearAudio")
    assert events[:cleared] == ["playAudio"] * cleared  # the menu was under way, not marked
    menu_heard = audio_of(sent[:cleared])
    assert 4 * 160 <= len(menu_heard) < len(spoken(LONG))
    assert spoken(LONG).startswith(menu_heard)
    # Nothing more of the menu after the clear: only the next two prompts.
    assert audio_of(sent[cleared:]) == mulaw(tone(3)) + mulaw(tone(2))
    assert [f["text"] for f in call.fields("prompt")] == [
        "Press 1 for hours.",
        "Nine to five.",
        "Goodbye.",
    ]
    kinds = call.kinds()
    assert kinds.index("digit") + 1 == kinds.index("barge_in")
    assert call.fields("digit") == [{"digit": "1"}]


async def test_a_key_during_a_prompt_without_barge_in_does_not_cut_it() -> None:
    call = make_call(LONG, [tone(3)], [tone(2)])
    running = asyncio.create_task(call.run(NO_BARGE))
    await until(lambda: len(call.transport.audio()) >= 4 * 160)
    call.transport.feed(dtmf("1"))
    assert await running == "hangup"
    assert "clearAudio" not in call.transport.events()
    assert "barge_in" not in call.kinds()
    assert [f["text"] for f in call.fields("prompt")] == ["Press 1 for hours.", "Goodbye."]
    assert call.transport.audio() == spoken(LONG) + mulaw(tone(3))  # "1" was ignored


async def test_a_key_pressed_after_the_prompt_played_is_gathered_without_a_clear() -> None:
    call = make_call([tone(2)], [tone(3)], [tone(1)])
    running = asyncio.create_task(call.run(MENU))
    await until(lambda: "played" in call.kinds())
    call.transport.feed(dtmf("1"))
    assert await running == "hangup"
    assert "clearAudio" not in call.transport.events()
    assert call.transport.audio() == mulaw(tone(2)) + mulaw(tone(3)) + mulaw(tone(1))


async def test_the_caller_hanging_up_ends_the_call() -> None:
    call = make_call(LONG)
    running = asyncio.create_task(call.run(GREET))
    await until(lambda: len(call.transport.audio()) >= 2 * 160)
    call.transport.hang_up()
    assert await running == "caller-hangup"
    assert call.control.calls == []
    assert "carrier_closed" in call.kinds()
    assert call.fields("ended") == [{"outcome": "caller-hangup", "underruns": 0}]


async def test_the_carriers_stop_event_ends_the_call() -> None:
    call = make_call(LONG)
    running = asyncio.create_task(call.run(GREET))
    await until(lambda: len(call.transport.audio()) >= 2 * 160)
    call.transport.feed('{"event": "stop"}')
    assert await running == "caller-hangup"
    assert "stopped" in call.kinds()


async def test_bad_carrier_messages_are_dropped_until_too_many() -> None:
    call = make_call(LONG)
    running = asyncio.create_task(call.run(GREET))
    for _ in range(MAX_BAD_MESSAGES - 1):
        call.transport.feed("not json")
    await asyncio.sleep(0.05)
    assert not running.done()
    call.transport.feed(b"binary")
    assert await running == "error:protocol"


async def test_a_mark_never_confirmed_times_out_and_the_call_goes_on() -> None:
    call = make_call([tone(2)], plays_marks=False, mark_timeout=0.2)
    assert await call.run(GREET) == "hangup"
    assert call.fields("mark_timeout") == [{"mark": "utterance-1"}]
    assert call.control.calls == [("hangup", None)]


async def test_stop_lets_the_prompt_finish_then_hangs_up() -> None:
    call = make_call(LONG)
    running = asyncio.create_task(call.run(GREET))
    await until(lambda: len(call.transport.audio()) >= 2 * 160)
    await call.session.stop("shutdown")
    assert await running == "shutdown"
    assert call.transport.audio() == spoken(LONG)  # the whole prompt, not cut
    assert call.transport.events()[-1] == "checkpoint"
    assert call.control.calls == [("hangup", None)]
    assert call.session.hangup_reason == "shutdown"


async def test_audio_ahead_reports_what_is_still_to_play() -> None:
    call = make_call(LONG)
    assert call.session.audio_ahead() == 0.0
    running = asyncio.create_task(call.run(GREET))
    await until(lambda: len(call.transport.audio()) >= 10 * 160)
    assert call.session.audio_ahead() > 0.1  # sent ahead of real time, nothing played yet
    call.transport.hang_up()
    await running


@pytest.mark.parametrize(("accepted", "outcome"), [(True, "transfer"), (False, "hangup")])
async def test_transfer(accepted: bool, outcome: str) -> None:
    call = make_call([tone(2)], transfer_ok=accepted)
    assert await call.run(TRANSFER) == outcome
    assert call.control.calls[0] == ("transfer", "+14155550123")
    assert call.fields("transfer_result") == [{"ok": accepted}]
    kinds = call.kinds()
    assert kinds.index("played") < kinds.index("transfer")  # the prompt played first


async def test_a_broken_socket_ends_the_call_as_carrier_closed() -> None:
    class Broken(FakeTransport):
        async def send_many(self, messages: Any) -> None:
            raise ConnectionResetError("gone")

    call = make_call([tone(2)])
    call.session = CallSession(
        call_id="call-1",
        stream=plivo_stream(),
        transport=Broken(),
        control=call.control,
        tts=call.tts,
        speech=SPEECH,
        max_lead=10.0,
        mark_timeout=1.0,
    )
    assert await call.run(GREET) == "carrier-closed"
