"""`WAVES_TRANSPORT=auto`'s switch, with scripted transports: when a prompt moves to SSE, when it
must not (audio already heard, a refused key), the probing back-off and the way back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from telebridge.tts import SpeechOptions
from telebridge.tts.errors import TTSError, WavesAuthError, WavesConnectionError
from telebridge.tts.switch import TransportSwitch

EMILY = SpeechOptions(voice_id="emily")


class Scripted:
    """A transport that answers each prompt with `audio`, or fails as told."""

    def __init__(self, name: str, audio: bytes = b"") -> None:
        self.name = name
        self.audio = audio
        self.fail_before: TTSError | None = None  # raised before any audio
        self.fail_after: TTSError | None = None  # raised after the audio
        self.probe_failures: list[TTSError] = []  # raised by the next probes, first first
        self.asked: list[str] = []
        self.probes = 0
        self.prewarmed = 0

    def synthesize(
        self,
        text: str,
        *,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None = None,
    ) -> AsyncIterator[bytes]:
        return self._speak(text)

    async def _speak(self, text: str) -> AsyncIterator[bytes]:
        self.asked.append(text)
        if self.fail_before is not None:
            raise self.fail_before
        yield self.audio
        if self.fail_after is not None:
            raise self.fail_after

    async def probe(self) -> None:
        self.probes += 1
        if self.probe_failures:
            raise self.probe_failures.pop(0)

    async def prewarm(self, n: int = 1) -> None:
        self.prewarmed += n


async def speak(switch: TransportSwitch, text: str = "Hello.") -> bytes:
    chunks = switch.synthesize(text, sample_rate=8000, options=EMILY)
    return b"".join([chunk async for chunk in chunks])


@pytest.fixture
def pair() -> tuple[Scripted, Scripted]:
    return Scripted("websocket", b"ws-audio"), Scripted("sse", b"sse-audio")


async def test_the_websocket_is_used_while_it_works(pair: tuple[Scripted, Scripted]) -> None:
    ws, sse = pair
    switch = TransportSwitch(ws, sse)
    assert await speak(switch) == b"ws-audio"
    assert (ws.asked, sse.asked, switch.transport) == (["Hello."], [], "websocket")
    await switch.prewarm(2)
    assert ws.prewarmed == 2


async def test_a_websocket_that_cannot_open_moves_this_prompt_and_the_next_to_sse(
    pair: tuple[Scripted, Scripted],
) -> None:
    ws, sse = pair
    seen: list[str] = []
    switch = TransportSwitch(ws, sse, on_switch=seen.append, retry_first=60)
    ws.fail_before = WavesConnectionError("Waves refused the connection (HTTP 503)")
    assert await speak(switch, "One.") == b"sse-audio"  # the failed prompt itself, over SSE
    assert await speak(switch, "Two.") == b"sse-audio"
    assert ws.asked == ["One."]  # the second prompt did not try the WebSocket first
    assert sse.asked == ["One.", "Two."]
    assert (switch.transport, switch.switches, seen) == ("sse", 1, ["sse"])
    await switch.aclose()


async def test_a_failure_after_audio_is_not_retried_over_sse(
    pair: tuple[Scripted, Scripted],
) -> None:
    ws, sse = pair
    switch = TransportSwitch(ws, sse)
    ws.fail_after = WavesConnectionError("gone")
    chunks = switch.synthesize("Hello.", sample_rate=8000, options=EMILY)
    heard = [await anext(chunks)]
    with pytest.raises(WavesConnectionError):
        heard.append(await anext(chunks))
    assert heard == [b"ws-audio"]  # never the start of the prompt twice
    assert sse.asked == []
    assert switch.transport == "websocket"  # it did open: not a reason to move
    await switch.aclose()


async def test_a_refused_key_is_no_reason_to_switch(pair: tuple[Scripted, Scripted]) -> None:
    ws, sse = pair
    switch = TransportSwitch(ws, sse)
    ws.fail_before = WavesAuthError("Waves refused the API key (HTTP 401)")
    with pytest.raises(WavesAuthError):
        await speak(switch)
    assert (sse.asked, switch.transport, switch.switches) == ([], "websocket", 0)


async def test_probes_back_off_and_the_websocket_is_taken_back(
    pair: tuple[Scripted, Scripted],
) -> None:
    ws, sse = pair
    seen: list[str] = []
    switch = TransportSwitch(ws, sse, on_switch=seen.append, retry_first=0.02, retry_max=0.05)
    ws.probe_failures = [WavesConnectionError("still down")] * 3
    switch.websocket_failed(WavesConnectionError("down"))
    switch.websocket_failed(WavesConnectionError("down again"))  # already on SSE: no-op
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5):
        while switch.transport != "websocket":
            await asyncio.sleep(0.005)
    # Waits of 0.02, 0.04, then 0.05 (the cap) twice, before the fourth probe opened.
    assert loop.time() - started >= 0.02 + 0.04 + 0.05 + 0.05 - 0.01
    assert ws.probes == 4
    assert seen == ["sse", "websocket"] and switch.switches == 2
    ws.fail_before = None
    assert await speak(switch) == b"ws-audio"


async def test_a_probe_refused_for_another_reason_hands_prompts_back_to_the_websocket(
    pair: tuple[Scripted, Scripted],
) -> None:
    # A refused key (or a limit) is not a transport failure: prompts meet it where it is.
    ws, sse = pair
    switch = TransportSwitch(ws, sse, retry_first=0.01)
    ws.probe_failures = [WavesAuthError("Waves refused the API key (HTTP 401)")]
    switch.websocket_failed(WavesConnectionError("down"))
    async with asyncio.timeout(5):
        while switch.transport != "websocket":
            await asyncio.sleep(0.005)
    assert ws.probes == 1


async def test_aclose_stops_probing(pair: tuple[Scripted, Scripted]) -> None:
    ws, sse = pair
    switch = TransportSwitch(ws, sse, retry_first=0.01)
    ws.probe_failures = [WavesConnectionError("down")] * 1000
    switch.websocket_failed(WavesConnectionError("down"))
    await asyncio.sleep(0.05)
    await switch.aclose()
    probes = ws.probes
    await asyncio.sleep(0.05)
    assert ws.probes == probes and switch.transport == "sse"
