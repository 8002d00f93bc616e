"""Tests for telebridge.call.speaker: the retry policy, and what each prompt queues."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from telebridge.call.audio import FrameEncoder
from telebridge.call.events import Played
from telebridge.call.keys import KeyBuffer
from telebridge.call.playout import Playout
from telebridge.call.speaker import MAX_ATTEMPTS, RETRY_WINDOW, Speaker, speech_for
from telebridge.flows import SpeechOverrides
from telebridge.tts import (
    SpeechOptions,
    TTSError,
    WavesAuthError,
    WavesConnectionError,
    WavesForbiddenError,
    WavesServerError,
    WavesTruncated,
)
from tests.call.fakes import SPEECH, FakeSynth, FakeTransport, ManualClock, plivo_stream, tone

NO_OVERRIDES = SpeechOverrides()


@dataclass
class Rig:
    speaker: Speaker
    playout: Playout
    keys: KeyBuffer
    transport: FakeTransport
    clock: ManualClock
    events: list[tuple[str, dict[str, Any]]]

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


@asynccontextmanager
async def rig(tts: FakeSynth) -> AsyncIterator[Rig]:
    events: list[tuple[str, dict[str, Any]]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append((kind, fields))

    stream, transport, clock, keys = plivo_stream(), FakeTransport(), ManualClock(), KeyBuffer()
    playout = Playout(
        call_id="call-1",
        stream=stream,
        transport=transport,
        max_lead=10.0,
        mark_timeout=1.0,
        clock=clock,
        emit=emit,
    )
    speaker = Speaker(
        call_id="call-1",
        stream=stream,
        tts=tts,
        speech=SPEECH,
        playout=playout,
        keys=keys,
        clock=clock,
        emit=emit,
    )

    async def read() -> None:  # the session's part: the carrier's reports reach the playout
        while True:
            for event in stream.receive(await transport.receive()):
                if isinstance(event, Played):
                    playout.played(event.name)

    tasks = [asyncio.create_task(playout.run()), asyncio.create_task(read())]
    try:
        yield Rig(speaker, playout, keys, transport, clock, events)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def mulaw(pcm: bytes) -> bytes:
    encoder = FrameEncoder(src_rate=8000, dst_rate=8000, codec="mulaw")
    return encoder.feed(pcm) + encoder.flush()


async def played_out(r: Rig) -> None:
    assert await asyncio.wait_for(r.playout.wait_played(lambda: r.keys.interrupted), 2)
    assert "mark_timeout" not in r.kinds()


async def test_a_prompt_is_queued_whole_then_marked() -> None:
    pcm = tone(7) + b"\x01\x02\x03"  # not a whole frame: the tail is padded
    tts = FakeSynth([pcm[:1001], pcm[1001:]])
    async with rig(tts) as r:
        await r.speaker.say("Hello.", barge_in=False, overrides=NO_OVERRIDES)
        await played_out(r)
    assert r.transport.audio() == mulaw(pcm)
    assert r.transport.events()[-1] == "checkpoint"
    assert r.playout.last_mark == "utterance-1"
    assert r.kinds()[0] == "prompt" and "tts_error" not in r.kinds()
    [(text, rate, options, request_id)] = tts.requests
    assert (text, rate, options, request_id) == ("Hello.", 8000, SPEECH, "call-1-1")


async def test_a_failure_before_any_audio_is_retried() -> None:
    tts = FakeSynth([WavesServerError("busy")], [tone(3)])
    async with rig(tts) as r:
        await r.speaker.say("Hello.", barge_in=False, overrides=NO_OVERRIDES)
        await played_out(r)
    assert len(tts.requests) == 2
    assert tts.requests[0][3] == tts.requests[1][3]  # the same utterance asked for again
    assert r.transport.audio() == mulaw(tone(3))  # heard once
    assert ("tts_error", {"error": "server_error", "attempt": 1}) in r.events
    assert r.speaker.failure is None


async def test_retries_stop_after_max_attempts() -> None:
    tts = FakeSynth([WavesConnectionError("refused")])
    async with rig(tts) as r:
        with pytest.raises(WavesConnectionError):
            await r.speaker.say("Hello.", barge_in=False, overrides=NO_OVERRIDES)
    assert len(tts.requests) == MAX_ATTEMPTS == 3
    assert [f["attempt"] for k, f in r.events if k == "tts_error"] == [1, 2, 3]
    assert isinstance(r.speaker.failure, WavesConnectionError)
    assert r.transport.audio() == b""


async def test_no_retry_once_the_caller_heard_some_of_the_prompt() -> None:
    tts = FakeSynth([tone(2), WavesTruncated("cut")], [tone(5)])
    async with rig(tts) as r:
        with pytest.raises(WavesTruncated):
            await r.speaker.say("Hello.", barge_in=False, overrides=NO_OVERRIDES)
        r.speaker.finish_partial()  # what the session does before apologising
        await played_out(r)
    assert len(tts.requests) == 1
    assert r.transport.audio() == mulaw(tone(2))  # the start, once, never repeated
    assert isinstance(r.speaker.failure, WavesTruncated)


@pytest.mark.parametrize("refusal", [WavesAuthError("401"), WavesForbiddenError("403")])
async def test_a_refused_key_is_not_retried(refusal: TTSError) -> None:
    tts = FakeSynth([refusal], [tone(3)])
    async with rig(tts) as r:
        with pytest.raises(type(refusal)):
            await r.speaker.say("Hello.", barge_in=False, overrides=NO_OVERRIDES)
    assert len(tts.requests) == 1
    assert type(r.speaker.failure) is type(refusal)


async def test_no_retry_once_the_retry_window_has_passed() -> None:
    clock_box: list[ManualClock] = []
    tts = FakeSynth([lambda: clock_box[0].advance(RETRY_WINDOW), WavesServerError("slow")])
    async with rig(tts) as r:
        clock_box.append(r.clock)
        with pytest.raises(WavesServerError):
            await r.speaker.say("Hello.", barge_in=False, overrides=NO_OVERRIDES)
    assert len(tts.requests) == 1


async def test_a_failure_that_is_not_a_tts_error_is_raised_but_not_kept() -> None:
    tts = FakeSynth([ValueError("bug")])
    async with rig(tts) as r:
        with pytest.raises(ValueError, match="bug"):
            await r.speaker.say("Hello.", barge_in=False, overrides=NO_OVERRIDES)
    assert [f["error"] for k, f in r.events if k == "tts_error"] == ["ValueError"] * 3
    assert r.speaker.failure is None


async def test_a_barge_in_prompt_is_skipped_when_a_key_is_waiting() -> None:
    tts = FakeSynth([tone(3)])
    async with rig(tts) as r:
        r.keys.press("1", prompt_playing=False)
        await r.speaker.say("Menu.", barge_in=True, overrides=NO_OVERRIDES)
        await r.speaker.play(tone(3), 8000, barge_in=True)
        assert tts.requests == [] and r.playout.last_mark is None
        await r.speaker.say("Please listen.", barge_in=False, overrides=NO_OVERRIDES)
        assert len(tts.requests) == 1


async def test_cut_stops_synthesis_and_the_prompt_returns() -> None:
    tts = FakeSynth([tone(2), 5.0, tone(2)])
    async with rig(tts) as r:
        saying = asyncio.create_task(r.speaker.say("Long.", barge_in=True, overrides=NO_OVERRIDES))
        await asyncio.sleep(0.05)
        assert r.speaker.speaking
        r.speaker.cut()
        await asyncio.wait_for(saying, 1)
        assert not r.speaker.speaking
    assert r.playout.last_mark is None  # a cut prompt gets no mark


async def test_play_resamples_and_pause_queues_silence() -> None:
    async with rig(FakeSynth([b""])) as r:
        pcm16k = tone(4, rate=16000)
        await r.speaker.play(pcm16k, 16000, barge_in=False)
        await r.speaker.pause(0.1)
        await played_out(r)
    encoder = FrameEncoder(src_rate=16000, dst_rate=8000, codec="mulaw")
    expected = encoder.feed(pcm16k) + encoder.flush()
    assert r.transport.audio() == expected + b"\xff" * 5 * 160
    assert ("play", {"seconds": round(len(expected) / 160 * 0.02, 3)}) in r.events
    assert r.transport.events().count("checkpoint") == 2
    assert r.playout.last_mark == "utterance-2"


def test_speech_for_puts_a_steps_settings_over_the_bridges() -> None:
    base = SpeechOptions(voice_id="emily", model="m", language="en", speed=1.0)
    assert speech_for(base, SpeechOverrides()) == base
    assert speech_for(base, SpeechOverrides(voice="raj", speed=1.5, language="hi")) == (
        SpeechOptions(voice_id="raj", model="m", language="hi", speed=1.5)
    )
    assert speech_for(base, SpeechOverrides(speed=0.0)).speed == 0.0  # 0 is a value, not unset
