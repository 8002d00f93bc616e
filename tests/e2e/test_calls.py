"""Calls end to end on every carrier: the same flows, the same exact audio, the same behaviour.

Real server on a loopback port, real WebSockets, the Waves stand-in, simulated carriers that speak
each carrier's documented protocol and record every departure from it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from telebridge.simulator.bridge import LocalBridge
from telebridge.simulator.carrier import CallScript, SimulatedCall
from telebridge.tts.standin import StandinServer
from tests.e2e.conftest import MakeBridge, l16_of, mulaw_of

MENU = "Press 1 for hours, or 2 to hear this again. This prompt is long enough to be cut off."
LONG = (
    "This is a long prompt that keeps talking for several seconds, so that the pacer has "
    "to hold audio back and the lead stays bounded while the carrier plays it out in real time."
)


@dataclass(frozen=True)
class Carrier:
    name: str
    rate: int = 8000

    def call(self, lb: LocalBridge, script: CallScript | None = None) -> SimulatedCall:
        if self.name == "plivo":
            return lb.plivo_call(script)
        return lb.vonage_call(script)

    def audio(self, text: str) -> bytes:
        return mulaw_of(text) if self.name == "plivo" else l16_of(text, self.rate)

    @property
    def bytes_per_second(self) -> int:
        return 8000 if self.name == "plivo" else self.rate * 2

    @property
    def ended_by(self) -> str:
        # Plivo: REST DELETE (the fake API then ends the call); Vonage without REST
        # credentials: the bridge closes the socket, which ends a call whose NCCO ends in connect.
        return "rest-hangup" if self.name == "plivo" else "bridge-closed"

    def settings(self) -> dict[str, object]:
        return {"vonage_audio_rate": self.rate} if self.name == "vonage" else {}


CARRIERS = [
    Carrier("plivo"),
    Carrier("vonage", 8000),
    Carrier("vonage", 16000),
    Carrier("vonage", 24000),
]


@pytest.fixture(params=CARRIERS, ids=lambda c: f"{c.name}-{c.rate}")
def carrier(request: pytest.FixtureRequest) -> Carrier:
    param: Carrier = request.param
    return param


async def released(lb: LocalBridge) -> None:
    """The bridge lets go of every call shortly after the carrier's side has closed."""
    assert lb.bridge is not None
    for _ in range(100):
        if not lb.bridge.calls:
            return
        await asyncio.sleep(0.02)
    assert lb.bridge.calls == {}


async def test_caller_hears_exactly_the_greeting(make_bridge: MakeBridge, carrier: Carrier) -> None:
    lb = await make_bridge(**carrier.settings())
    result = await lb.run(carrier.call(lb))

    assert result.violations == []
    assert [p.mark for p in result.prompts] == ["utterance-1"]
    assert result.heard == carrier.audio("Hello from the test line.")
    assert result.marks_played == ["utterance-1"]
    assert result.ended_by == carrier.ended_by
    # The bridge ended the call only after the carrier confirmed the goodbye had played.
    played_at = next(e["at"] for e in result.timeline if e["event"] == "played")
    closed_at = next(e["at"] for e in result.timeline if e["event"] == "closed")
    assert played_at <= closed_at
    await released(lb)


async def test_key_during_prompt_clears_and_routes(
    make_bridge: MakeBridge, carrier: Carrier
) -> None:
    lb = await make_bridge(telebridge_flow="menu", **carrier.settings())
    result = await lb.run(carrier.call(lb, CallScript(digits="1", press_after=0.5)))

    assert result.violations == []
    events = [e["event"] for e in result.timeline]
    assert events.index("digit") < events.index("clear")
    first, *rest = result.prompts
    assert first.mark is None and carrier.audio(MENU).startswith(first.audio)
    assert [p.audio for p in rest] == [carrier.audio("Nine to five."), carrier.audio("Goodbye.")]
    tail = carrier.audio("Nine to five.") + carrier.audio("Goodbye.")
    heard_menu = result.heard[: len(result.heard) - len(tail)]
    assert result.heard.endswith(tail)
    assert carrier.audio(MENU).startswith(heard_menu)
    assert 0.3 < len(heard_menu) / carrier.bytes_per_second < 0.8
    await released(lb)
    assert lb.bridge is not None and lb.bridge.calllog is not None
    record = await asyncio.to_thread(lb.bridge.calllog.get, carrier.name, result.call_id)
    assert record is not None
    assert (record.steps, record.digits, record.outcome) == (
        ["menu", "hours", "goodbye"],
        "1",
        "hangup",
    )


async def test_no_key_takes_the_default_after_the_timeout(
    make_bridge: MakeBridge, carrier: Carrier
) -> None:
    lb = await make_bridge(telebridge_flow="menu", **carrier.settings())
    result = await lb.run(carrier.call(lb))
    assert [p.audio for p in result.prompts] == [carrier.audio(MENU), carrier.audio("Goodbye.")]
    played = next(e["at"] for e in result.timeline if e["event"] == "played")
    # The gather timeout (2 s) counts from when the menu finished playing.
    assert 1.9 < result.prompts[1].first_audio_at - played < 2.6


@pytest.mark.parametrize("lead_ms", [500, 100])  # 100: shorter than a batch of frames
async def test_lead_stays_bounded_on_a_long_prompt(
    make_bridge: MakeBridge, carrier: Carrier, lead_ms: int
) -> None:
    lb = await make_bridge(
        telebridge_flow="long", telebridge_max_lead_ms=lead_ms, **carrier.settings()
    )
    result = await lb.run(carrier.call(lb))
    assert result.violations == []
    assert result.heard == carrier.audio(LONG)
    assert len(result.heard) / carrier.bytes_per_second > 5
    assert 0.8 * lead_ms / 1000 < result.max_lead <= lead_ms / 1000 + 0.03


async def test_call_variables_fill_templates(make_bridge: MakeBridge, carrier: Carrier) -> None:
    lb = await make_bridge(**carrier.settings())
    result = await lb.run(carrier.call(lb, CallScript(flow="vars", caller="14155550100")))
    assert result.heard == carrier.audio(f"Hello 14155550100, this is {carrier.name}.")


async def test_concurrent_calls_each_hear_their_own_audio(
    make_bridge: MakeBridge, carrier: Carrier
) -> None:
    lb = await make_bridge(telebridge_flow="vars", **carrier.settings())
    calls = [carrier.call(lb, CallScript(caller=f"1415555{i:04d}")) for i in range(6)]
    results = await asyncio.gather(*(lb.run(c) for c in calls))
    for i, result in enumerate(results):
        assert result.violations == []
        assert result.heard == carrier.audio(f"Hello 1415555{i:04d}, this is {carrier.name}.")
        assert result.ended_by == carrier.ended_by


async def test_caller_hanging_up_mid_prompt_releases_the_call(
    make_bridge: MakeBridge, carrier: Carrier
) -> None:
    lb = await make_bridge(telebridge_flow="long", **carrier.settings())
    result = await lb.run(carrier.call(lb, CallScript(hangup_after=0.5)))
    assert result.ended_by == "caller-hangup"
    await released(lb)
    assert [r for r in lb.plivo_api.requests if r.method == "DELETE"] == []


async def test_unknown_flow_is_refused_politely(make_bridge: MakeBridge, carrier: Carrier) -> None:
    lb = await make_bridge(**carrier.settings())
    result = await lb.run(carrier.call(lb, CallScript(flow="nope")))
    assert result.answer_status == 200
    assert result.stream_opened_at is None


async def test_a_prompt_heard_before_plays_without_waves(
    make_bridge: MakeBridge, carrier: Carrier, standin: StandinServer
) -> None:
    lb = await make_bridge(**carrier.settings())
    first = await lb.run(carrier.call(lb))
    asked = len(standin.requests)
    second = await lb.run(carrier.call(lb))
    assert first.heard == second.heard == carrier.audio("Hello from the test line.")
    assert len(standin.requests) == asked  # from the cache: Waves was not asked again
    assert second.stream_opened_at is not None and second.first_audio_at is not None
    # How fast is the benchmarks' to say (bench.latency); this only catches a wait for Waves
    # or a timer, with room for a loaded machine.
    assert second.first_audio_at - second.stream_opened_at < 0.2
