"""Fakes for the call core's tests: a carrier socket, carrier control, Waves, and a clock.

`FakeTransport` records what the session sends and feeds it carrier messages; with
`plays_marks` it answers each Plivo checkpoint at once, as a carrier that has played everything.
`FakeSynth` speaks from a script per request: PCM chunks, pauses, clock steps and failures.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from telebridge.call.events import WireMessage
from telebridge.call.ports import TransportClosed
from telebridge.carriers.plivo import PlivoStream
from telebridge.carriers.vonage import VonageStream
from telebridge.tts import SpeechOptions

SPEECH = SpeechOptions(voice_id="emily")

PLIVO_START = json.dumps(
    {
        "event": "start",
        "start": {
            "callId": "call-1",
            "streamId": "stream-1",
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        },
    }
)


def plivo_stream() -> PlivoStream:
    """A Plivo stream that has started."""
    stream = PlivoStream()
    stream.receive(PLIVO_START)
    return stream


def vonage_stream(rate: int = 16000) -> VonageStream:
    """A Vonage stream that has connected."""
    stream = VonageStream(rate)
    stream.receive(
        json.dumps(
            {"event": "websocket:connected", "content-type": f"audio/l16;rate={rate}", "uuid": "C"}
        )
    )
    return stream


def dtmf(digit: str) -> str:
    return json.dumps({"event": "dtmf", "dtmf": {"digit": digit}})


def played(name: str) -> str:
    return json.dumps({"event": "playedStream", "streamId": "stream-1", "name": name})


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeTransport:
    """The carrier's socket: `writes` holds each `send_many` call's messages."""

    def __init__(self, *, plays_marks: bool = True) -> None:
        self.plays_marks = plays_marks
        self.writes: list[list[WireMessage]] = []
        self.closed = False
        self._incoming: asyncio.Queue[str | bytes | None] = asyncio.Queue()

    @property
    def sent(self) -> list[WireMessage]:
        return [m for write in self.writes for m in write]

    def feed(self, message: str | bytes) -> None:
        """A message from the carrier."""
        self._incoming.put_nowait(message)

    def hang_up(self) -> None:
        """The carrier closes the stream."""
        self._incoming.put_nowait(None)

    async def receive(self) -> str | bytes:
        message = await self._incoming.get()
        if message is None:
            self._incoming.put_nowait(None)  # closed stays closed
            raise TransportClosed("closed")
        return message

    async def send_many(self, messages: Sequence[WireMessage]) -> None:
        if self.closed:
            raise TransportClosed("closed")
        self.writes.append(list(messages))
        for message in messages:
            if self.plays_marks and isinstance(message, str):
                data = json.loads(message)
                if data.get("event") == "checkpoint":
                    self.feed(played(data["name"]))

    async def close(self, code: int = 1000) -> None:
        self.closed = True
        self.hang_up()

    # --- reading what was sent (Plivo) ------------------------------------------------

    def events(self) -> list[str]:
        """The event of each Plivo message sent, in order."""
        return [json.loads(m)["event"] for m in self.sent if isinstance(m, str)]

    def audio(self) -> bytes:
        """Every μ-law byte sent in playAudio messages, in order."""
        return audio_of(self.sent)


def audio_of(messages: Sequence[WireMessage]) -> bytes:
    """The μ-law bytes of the playAudio messages among Plivo `messages`, in order."""
    return b"".join(payload(m) for m in messages if is_play(m))


def is_play(message: WireMessage) -> bool:
    return isinstance(message, str) and json.loads(message)["event"] == "playAudio"


def payload(message: WireMessage) -> bytes:
    assert isinstance(message, str)
    return base64.b64decode(json.loads(message)["media"]["payload"])


@dataclass
class FakeControl:
    """The carrier's REST control of the call; hanging up closes the stream."""

    transport: FakeTransport
    apology_spoken: bool = True
    transfer_ok: bool = True
    calls: list[tuple[str, Any]] = field(default_factory=list)

    async def hangup(self) -> None:
        self.calls.append(("hangup", None))
        self.transport.hang_up()

    async def transfer(self, to: str, timeout: float) -> bool:  # noqa: ASYNC109
        self.calls.append(("transfer", to))
        if self.transfer_ok:
            self.transport.hang_up()
        return self.transfer_ok

    async def send_digits(self, digits: str) -> bool:
        self.calls.append(("send_digits", digits))
        return True

    async def end_with_message(self, text: str) -> bool:
        self.calls.append(("end_with_message", text))
        if self.apology_spoken:
            self.transport.hang_up()
        return self.apology_spoken


# One request's script: a PCM chunk is yielded, a float is slept, a callable is called (to move
# a clock), an exception is raised (a copy of it).
Script = Sequence[bytes | float | Callable[[], None] | BaseException]


class FakeSynth:
    """A `Synthesizer` that plays one script per request, the last one again when they run out."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.requests: list[tuple[str, int, SpeechOptions, str | None]] = []

    def synthesize(
        self,
        text: str,
        *,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None = None,
    ) -> AsyncIterator[bytes]:
        self.requests.append((text, sample_rate, options, request_id))
        script = self.scripts.pop(0) if len(self.scripts) > 1 else self.scripts[0]
        return self._play(script)

    @staticmethod
    async def _play(script: Script) -> AsyncIterator[bytes]:
        for item in script:
            if isinstance(item, bytes):
                yield item
            elif isinstance(item, float):
                await asyncio.sleep(item)
            elif isinstance(item, BaseException):
                raise copy.copy(item)  # a fresh one each time: tracebacks do not pile up
            else:
                item()


def tone(frames: int, rate: int = 8000, level: int = 3000) -> bytes:
    """`frames` 20 ms frames of a square wave, PCM16LE (never silence, so never all 0xff μ-law)."""
    samples = rate // 50 * frames
    one = level.to_bytes(2, "little", signed=True)
    other = (-level).to_bytes(2, "little", signed=True)
    return b"".join(one if (i // 8) % 2 else other for i in range(samples))
