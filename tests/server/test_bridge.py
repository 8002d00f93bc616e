"""Bridge without a server: admission (busy), readiness, drain with fake calls, and the prefetch
of a flow's first prompt."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

import pytest

from telebridge.call.session import CallSession, speech_for
from telebridge.flows.ports import AgentEnd, AgentLink
from telebridge.flows.runner import FlowRunner, SpeechOverrides
from telebridge.server import Bridge
from telebridge.server.bridge import PENDING_HOLD_S
from telebridge.server.stream import call_variables
from telebridge.settings import Settings
from telebridge.tokens import StreamGrant
from telebridge.tts import SpeechOptions, Synthesizer
from telebridge.tts.cache import PromptCache
from telebridge.tts.errors import WavesAuthError
from telebridge.tts.guard import WavesGuard

FLOWS = Path(__file__).resolve().parents[2] / "config" / "flows"


def make_bridge(**overrides: Any) -> Bridge:
    values: dict[str, Any] = {
        "telebridge_public_url": "https://bridge.example",
        "telebridge_flows_dir": FLOWS,
        "telebridge_flow": "demo",
        **overrides,
    }
    return Bridge.from_settings(Settings(**values))


def grant(call_id: str = "CALL-1", flow: str = "demo", **variables: str) -> StreamGrant:
    return StreamGrant(
        carrier="plivo",
        call_id=call_id,
        flow=flow,
        caller="+15550001111",
        callee="+15550002222",
        variables=variables,
    )


def refused(bridge: Bridge, reason: str) -> float:
    return bridge.metrics.refused.labels("plivo", reason)._value.get()  # type: ignore[attr-defined,no-any-return]


class FakeCall:
    """A live call for drain: it ends by itself after `ends_after` s, or soon after `stop`."""

    def __init__(self, bridge: Bridge, call_id: str, ends_after: float | None) -> None:
        self.bridge = bridge
        self.call_id = call_id
        self.stopped: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        if ends_after is not None:
            self._end_in(ends_after)

    def _end_in(self, seconds: float) -> None:
        async def end() -> None:
            await asyncio.sleep(seconds)
            self.bridge.remove_call(self.call_id)

        self._tasks.append(asyncio.create_task(end()))

    async def stop(self, reason: str) -> None:
        self.stopped.append(reason)
        self._end_in(0.01)

    def audio_ahead(self) -> float:
        return 0.0


def add_fake(bridge: Bridge, call_id: str, ends_after: float | None) -> FakeCall:
    call = FakeCall(bridge, call_id, ends_after)
    bridge.add_call(call_id, cast(CallSession, call), grant(call_id))
    return call


# --- busy ---------------------------------------------------------------------------------


def test_busy_at_capacity_counts_live_and_answered_calls() -> None:
    bridge = make_bridge(telebridge_max_calls=2)
    assert not bridge.busy("plivo")
    bridge.stream_url("/plivo/stream", grant("A"))  # answered, stream not started yet
    assert not bridge.busy("plivo")
    add_fake(bridge, "B", None)
    assert bridge.busy("plivo")
    assert refused(bridge, "capacity") == 1
    bridge.remove_call("B")
    assert not bridge.busy("plivo")


def test_a_started_stream_is_no_longer_pending() -> None:
    bridge = make_bridge(telebridge_max_calls=1)
    bridge.stream_url("/plivo/stream", grant("A"))
    add_fake(bridge, "A", None)
    assert bridge.pending == {} and list(bridge.calls) == ["A"]


def test_busy_while_draining() -> None:
    bridge = make_bridge()
    bridge.draining = True
    assert bridge.busy("plivo")
    assert refused(bridge, "draining") == 1 and refused(bridge, "capacity") == 0


def test_answered_calls_whose_token_expired_no_longer_count() -> None:
    bridge = make_bridge(telebridge_max_calls=1)
    bridge.stream_url("/plivo/stream", grant("A"))
    assert bridge.busy("plivo")
    bridge.pending["A"] = time.monotonic() - 1  # its stream token expired unused
    assert not bridge.busy("plivo")
    assert bridge.pending == {}


def test_an_answered_call_counts_only_while_its_stream_may_start() -> None:
    # Its stream may start on another process of a cluster: this one cannot know.
    bridge = make_bridge(telebridge_max_calls=1, telebridge_token_ttl=600)
    before = time.monotonic()
    bridge.stream_url("/plivo/stream", grant("A"))
    assert bridge.pending["A"] <= time.monotonic() + PENDING_HOLD_S
    assert bridge.pending["A"] >= before + PENDING_HOLD_S


# --- ready --------------------------------------------------------------------------------


class NoSpeech:
    """A synthesizer never asked to speak."""

    def stream(self, text: str, *, sample_rate: int, options: SpeechOptions) -> Any:
        raise AssertionError("not used")


def test_not_ready_while_waves_refuses_the_key() -> None:
    bridge = make_bridge()
    assert bridge.ready
    bridge.guard = WavesGuard(cast(Synthesizer, NoSpeech()), max_in_flight=1, queue_timeout=1.0)
    assert bridge.ready
    bridge.guard.observe_failure(WavesAuthError("401 from Waves"))
    assert bridge.guard.state == "refused"
    assert not bridge.ready


def test_not_ready_while_draining() -> None:
    bridge = make_bridge()
    bridge.draining = True
    assert not bridge.ready


def test_consecutive_waves_errors_make_unready_until_audio_is_heard() -> None:
    bridge = make_bridge()
    bridge.notify("C", "started", {"carrier": "plivo", "flow": "demo"})
    for _ in range(2):
        bridge.notify("C", "tts_error", {"error": "timeout", "attempt": 1})
    assert bridge.ready
    bridge.notify("C", "first_audio", {"added_ms": 1.0})  # a success resets the count
    for _ in range(2):
        bridge.notify("C", "tts_error", {"error": "timeout", "attempt": 1})
    assert bridge.ready
    bridge.notify("C", "tts_error", {"error": "timeout", "attempt": 1})
    assert not bridge.ready
    bridge.notify("C", "first_audio", {"added_ms": 1.0})
    assert bridge.ready


# --- drain --------------------------------------------------------------------------------


async def test_drain_lets_calls_that_end_in_time_finish() -> None:
    bridge = make_bridge()
    calls = [add_fake(bridge, f"C{i}", 0.05 * (i + 1)) for i in range(2)]
    started = time.monotonic()
    await bridge.drain(5.0)
    assert time.monotonic() - started < 1.0
    assert bridge.draining and bridge.calls == {}
    assert [c.stopped for c in calls] == [[], []]


async def test_drain_stops_the_calls_still_running_at_its_timeout() -> None:
    bridge = make_bridge()
    quick = add_fake(bridge, "quick", 0.01)
    stuck = add_fake(bridge, "stuck", None)  # ends only when stopped
    started = time.monotonic()
    await bridge.drain(0.2)
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 2.0
    assert bridge.calls == {}
    assert quick.stopped == [] and stuck.stopped == ["shutdown"]


async def test_drain_without_calls_returns_at_once() -> None:
    bridge = make_bridge()
    await asyncio.wait_for(bridge.drain(30.0), 1.0)
    assert bridge.draining


# --- prefetch -----------------------------------------------------------------------------


class RecordingCache(PromptCache):
    """A prompt cache that records what it is asked to start early."""

    def __init__(self) -> None:
        super().__init__(cast(Synthesizer, NoSpeech()), max_bytes=1)
        self.asked: list[tuple[str, int, SpeechOptions]] = []

    def prefetch(self, text: str, *, sample_rate: int, options: SpeechOptions) -> None:
        self.asked.append((text, sample_rate, options))


class FirstWords:
    """A call port that hears the flow's first prompt, then ends the call."""

    def __init__(self) -> None:
        self.said: list[tuple[str, SpeechOverrides]] = []

    async def say(self, text: str, *, barge_in: bool, overrides: SpeechOverrides) -> None:
        self.said.append((text, overrides))
        raise asyncio.CancelledError  # the caller hung up: the runner stops here

    async def play(self, pcm: bytes, sample_rate: int, *, barge_in: bool) -> None: ...
    async def pause(self, seconds: float) -> None: ...
    async def wait_played(self) -> bool:
        return True

    def take_digits(self) -> str:
        return ""

    async def next_digit(self, timeout: float) -> str | None:  # noqa: ASYNC109
        return None

    async def transfer(self, to: str, timeout: float) -> bool:  # noqa: ASYNC109
        return False

    async def hangup(self, reason: str) -> None: ...

    async def converse(
        self, link: AgentLink, start: dict[str, Any], *, listen: bool, barge_in: bool
    ) -> AgentEnd:
        raise NotImplementedError


async def first_words(bridge: Bridge, g: StreamGrant) -> tuple[str, SpeechOptions]:
    """What the runner says first on the call `g` (with the variables the stream gives it)."""
    port = FirstWords()
    runner = FlowRunner(bridge.flows.get(g.flow), port, variables=call_variables(g, g.call_id))
    with pytest.raises(asyncio.CancelledError):
        await runner.run()
    text, overrides = port.said[0]
    return text, speech_for(bridge.speech(), overrides)


async def test_prefetch_asks_for_what_the_runner_says_first(tmp_path: Path) -> None:
    (tmp_path / "greet.yaml").write_text(
        "start: hi\n"
        "steps:\n"
        "  hi:\n"
        '    say: "Hello {{name}}, you called {{callee}} on {{carrier}} from {{caller}}."\n'
        "    voice: lukas\n"
        "    speed: 1.25\n"
        "    hangup: true\n"
    )
    bridge = make_bridge(telebridge_flows_dir=tmp_path, telebridge_flow="greet")
    cache = bridge.tts = RecordingCache()
    g = grant(flow="greet", name="Ada")
    bridge.prefetch(g, 8000)
    text, options = await first_words(bridge, g)
    assert cache.asked == [(text, 8000, options)]
    assert text == "Hello Ada, you called +15550002222 on plivo from +15550001111."
    assert (options.voice_id, options.speed) == ("lukas", 1.25)


def test_prefetch_skips_a_prompt_only_known_once_the_call_runs(tmp_path: Path) -> None:
    (tmp_path / "greet.yaml").write_text(
        'start: hi\nsteps:\n  hi:\n    say: "Hello {{name}}."\n    hangup: true\n'
    )
    bridge = make_bridge(telebridge_flows_dir=tmp_path, telebridge_flow="greet")
    cache = bridge.tts = RecordingCache()
    bridge.prefetch(grant(flow="greet"), 8000)  # no `name`: the runner would say something else
    bridge.prefetch(grant(flow="gone"), 8000)  # an unknown flow is no error here
    assert cache.asked == []
