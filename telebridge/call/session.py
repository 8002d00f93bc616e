"""One call: a carrier stream, a TTS stream and a flow, wired together.

The session is the only place that knows all three. It runs three tasks per call: the reader
(carrier messages -> events), the sender (`Playout.run`: queued frames -> paced carrier messages)
and the flow. It implements the flow runner's `CallPort`: speech goes Waves -> `Speaker` ->
`Playout` -> carrier; keys come back from the reader into the `KeyBuffer` and may cut a prompt
off (barge-in). Its own job is the call's lifecycle: running, stopping, hanging up, transferring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from telebridge.call.agent import Conversation
from telebridge.call.events import (
    CallerAudio,
    CallEvent,
    Cleared,
    Digit,
    Played,
    ProtocolError,
    Started,
    Stopped,
)
from telebridge.call.keys import KeyBuffer
from telebridge.call.outside import TRANSFER_CLOSE_WAIT, CallNotLive, OutsideControl
from telebridge.call.playout import SEND_BATCH_FRAMES, Playout
from telebridge.call.ports import (
    CallControl,
    CallObserver,
    CarrierStream,
    Transport,
    TransportClosed,
)
from telebridge.call.speaker import MAX_ATTEMPTS, RETRY_PAUSE, RETRY_WINDOW, Speaker, speech_for
from telebridge.call.state import CallLifecycle, CallState
from telebridge.flows import Flow, FlowIO, FlowRecorder, FlowRunner, SpeechOverrides
from telebridge.flows.ports import AgentEnd, AgentLink
from telebridge.tts import SpeechOptions, Synthesizer
from telebridge.tts.errors import WavesAuthError, WavesForbiddenError

__all__ = [
    "APOLOGY",
    "MAX_ATTEMPTS",
    "MAX_BAD_MESSAGES",
    "RETRY_PAUSE",
    "RETRY_WINDOW",
    "SEND_BATCH_FRAMES",
    "STOP_SPEECH_WAIT",
    "TRANSFER_CLOSE_WAIT",
    "CallNotLive",
    "CallSession",
    "CallState",
    "speech_for",
]

logger = logging.getLogger(__name__)

# Carrier messages that break the protocol before the call is given up as hostile.
MAX_BAD_MESSAGES = 50
# On shutdown the prompt being synthesised may finish, for at most this long.
STOP_SPEECH_WAIT = 10.0
# Spoken by the carrier's own TTS when Waves cannot speak for the bridge.
APOLOGY = "We are sorry, we cannot continue this call right now. Please call again later."


class CallSession(OutsideControl):
    """A call in progress. Create it once the carrier stream has started; then `await run()`."""

    def __init__(
        self,
        *,
        call_id: str,
        stream: CarrierStream,
        transport: Transport,
        control: CallControl,
        tts: Synthesizer,
        speech: SpeechOptions,
        max_lead: float,
        mark_timeout: float,
        observer: CallObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.call_id = call_id
        self.outcome: str | None = None
        self.hangup_reason: str | None = None
        self._lifecycle = CallLifecycle()
        self._stream = stream
        self._transport = transport
        self._control = control
        self._observer = observer
        self._keys = KeyBuffer()
        self._playout = Playout(
            call_id=call_id,
            stream=stream,
            transport=transport,
            max_lead=max_lead,
            mark_timeout=mark_timeout,
            clock=clock,
            emit=self._emit,
        )
        self._speaker = Speaker(
            call_id=call_id,
            stream=stream,
            tts=tts,
            speech=speech,
            playout=self._playout,
            keys=self._keys,
            clock=clock,
            emit=self._emit,
        )
        self._closed = asyncio.Event()
        self._flow_task: asyncio.Task[str] | None = None
        self._runner: FlowRunner | None = None
        self._stop_reason: str | None = None
        # What a stop ends with once the speech under way has played (default: a hangup).
        self._stop_action: Callable[[], Awaitable[str]] | None = None
        self._announcements: set[asyncio.Task[None]] = set()
        self._bad_messages = 0
        self._clock = clock
        self._conversation: Conversation | None = None  # the agent step under way
        self.ended_by: dict[str, str] = {}  # who ended the call from outside, and why

    @property
    def step(self) -> str | None:
        """The flow step being run (None before the flow starts)."""
        return self._runner.step if self._runner is not None else None

    @property
    def state(self) -> CallState:
        return self._lifecycle.state

    # --- running ----------------------------------------------------------------------

    async def run(
        self,
        flow: Flow,
        variables: dict[str, str],
        *,
        recorder: FlowRecorder | None = None,
        io: FlowIO | None = None,
    ) -> str:
        """Run the flow until it ends or the caller goes; returns the call's outcome."""
        runner = FlowRunner(flow, self, variables=variables, recorder=recorder, io=io)
        self._runner = runner
        reader = asyncio.create_task(self._read_loop(), name=f"read:{self.call_id}")
        sender = asyncio.create_task(self._playout.run(), name=f"send:{self.call_id}")
        flow_task = asyncio.create_task(self._run_flow(runner), name=f"flow:{self.call_id}")
        self._flow_task = flow_task
        tasks = (reader, sender, flow_task)
        try:
            done, _ = await asyncio.wait(
                {reader, flow_task, sender}, return_when=asyncio.FIRST_COMPLETED
            )
            if reader in done and self.state is CallState.ENDING:
                # We hung up and the carrier closed: let the flow finish its own bookkeeping.
                await asyncio.wait({flow_task}, timeout=5)
                done = {flow_task} if flow_task.done() else done
            if flow_task in done and flow_task.cancelled() and self._stop_reason:
                # Stopped from outside (shutdown): the prompt under way plays out, then hang up.
                await self._speaker.finish_speaking(STOP_SPEECH_WAIT)
                await self._finish_announcements(STOP_SPEECH_WAIT)
                if self._stop_action is not None:
                    self.outcome = await self._stop_action()
                else:
                    await self.hangup(self._stop_reason)
                    self.outcome = self._stop_reason
            elif flow_task in done:
                self.outcome = flow_task.result()
            elif reader in done:
                self.outcome = reader.result()
            else:
                exc = sender.exception()
                self.outcome = "carrier-closed" if isinstance(exc, TransportClosed) else "error"
                if exc is not None and not isinstance(exc, TransportClosed):
                    logger.error("call %s: sender failed: %r", self.call_id, exc)
        finally:
            self._lifecycle.move_to(CallState.ENDED)
            for task in (*tasks, *self._announcements):
                task.cancel()
            self._speaker.cancel()
            await asyncio.gather(*tasks, *self._announcements, return_exceptions=True)
            await self._transport.close()
            self._emit("ended", outcome=self.outcome, underruns=self._playout.underruns)
        return self.outcome or "ended"

    async def _run_flow(self, runner: FlowRunner) -> str:
        outcome = await runner.run()
        failure = self._speaker.failure
        if failure is not None:
            # The runner reports a failed port as an error outcome; the cause was speech.
            if isinstance(failure, WavesAuthError | WavesForbiddenError):
                # A configuration error, logged loudly once by the guard: here, just the call.
                logger.warning("call %s: ending politely, Waves refuses the key", self.call_id)
            else:
                logger.error("call %s: speech failed: %s", self.call_id, failure)
            await self._end_politely()
            return f"error:tts {failure.kind}"
        if outcome == "transfer":
            # The carrier now runs the transfer and closes the stream itself.
            await self._await_close(TRANSFER_CLOSE_WAIT)
        elif outcome != "hangup":
            await self.hangup(outcome)
        return outcome

    async def stop(self, reason: str) -> None:
        """End the call from outside (shutdown): what is playing finishes, then the call ends."""
        self._stop_reason = reason
        self._speaker.stopping = True
        if self._flow_task is not None and not self._flow_task.done():
            self._flow_task.cancel()

    async def _end_politely(self) -> None:
        """Waves cannot speak: let what was queued play, then the carrier apologises and ends."""
        self._speaker.finish_partial()
        await self.wait_played()
        if self.state is CallState.STREAMING:
            self._lifecycle.move_to(CallState.ENDING)
        self._emit("apology")
        try:
            spoken = await self._control.end_with_message(APOLOGY)
        except Exception as exc:
            logger.error("call %s: carrier apology failed: %s", self.call_id, exc)
            spoken = False
        if spoken:
            await self._await_close(TRANSFER_CLOSE_WAIT)
        else:
            with contextlib.suppress(Exception):
                await self._control.hangup()
        await self._transport.close()

    async def _await_close(self, limit: float) -> None:
        try:
            async with asyncio.timeout(limit):
                await self._closed.wait()
        except TimeoutError:
            logger.warning("call %s: carrier kept the stream after a transfer", self.call_id)

    # --- carrier -> session -----------------------------------------------------------

    async def _read_loop(self) -> str:
        try:
            return await self._read_messages()
        finally:
            self._closed.set()

    async def _read_messages(self) -> str:
        while True:
            try:
                message = await self._transport.receive()
            except TransportClosed:
                self._emit("carrier_closed")
                if self._conversation is not None:
                    self._conversation.end_reason = "caller-hangup"
                return "caller-hangup" if self.state is CallState.STREAMING else "completed"
            try:
                events = self._stream.receive(message)
            except ProtocolError as exc:
                self._bad_messages += 1
                if self._bad_messages <= 5:
                    logger.warning("call %s: dropped a bad carrier message: %s", self.call_id, exc)
                if self._bad_messages >= MAX_BAD_MESSAGES:
                    logger.error("call %s: too many bad carrier messages, ending", self.call_id)
                    return "error:protocol"
                continue
            for event in events:
                if self._handle(event):
                    self._emit("stopped")
                    return "caller-hangup" if self.state is CallState.STREAMING else "completed"

    def _handle(self, event: CallEvent) -> bool:
        """Apply one event; True when the stream is over."""
        if isinstance(event, CallerAudio):
            if self._conversation is not None:
                self._conversation.caller_audio(event.payload)
            return False
        if isinstance(event, Digit):
            if self._conversation is not None:
                self._emit("digit", digit=event.digit)
                self._conversation.digit(event.digit)
            else:
                self._on_digit(event.digit)
        elif isinstance(event, Played):
            self._emit("played", mark=event.name)
            self._playout.played(event.name)
        elif isinstance(event, Cleared):
            self._emit("cleared")
        elif isinstance(event, Stopped):
            return True
        elif isinstance(event, Started):
            logger.warning("call %s: ignoring a second start", self.call_id)
        return False

    def _on_digit(self, digit: str) -> None:
        self._emit("digit", digit=digit)
        playing = self._speaker.speaking or self._playout.busy()
        if self._keys.press(digit, prompt_playing=playing):
            # A key cut the prompt off: stop synthesis, drop queued audio, clear the carrier.
            self._emit("barge_in")
            self._speaker.cut()
            self._playout.clear()

    # --- CallPort ---------------------------------------------------------------------

    async def say(self, text: str, *, barge_in: bool, overrides: SpeechOverrides) -> None:
        await self._speaker.say(text, barge_in=barge_in, overrides=overrides)

    async def play(self, pcm: bytes, sample_rate: int, *, barge_in: bool) -> None:
        await self._speaker.play(pcm, sample_rate, barge_in=barge_in)

    async def pause(self, seconds: float) -> None:
        await self._speaker.pause(seconds)

    def audio_ahead(self) -> float:
        """Seconds of audio queued here or at the carrier that have not played yet."""
        return self._playout.ahead()

    async def wait_played(self) -> bool:
        return await self._playout.wait_played(lambda: self._keys.interrupted)

    def take_digits(self) -> str:
        return self._keys.take()

    async def next_digit(self, timeout: float) -> str | None:  # noqa: ASYNC109
        return await self._keys.next_digit(timeout)

    async def transfer(self, to: str, timeout: float) -> bool:  # noqa: ASYNC109
        await self.wait_played()
        self._emit("transfer", to=to)
        try:
            ok = await self._control.transfer(to, timeout)
        except Exception as exc:
            logger.error("call %s: transfer to %s failed: %s", self.call_id, to, exc)
            ok = False
        self._emit("transfer_result", ok=ok)
        return ok

    async def hangup(self, reason: str) -> None:
        if self.state is not CallState.STREAMING:
            return
        await self.wait_played()
        self._lifecycle.move_to(CallState.ENDING)
        self.hangup_reason = reason
        self._emit("hangup", reason=reason)
        try:
            await self._control.hangup()
        except Exception as exc:
            logger.error("call %s: carrier hangup failed: %s", self.call_id, exc)
        await self._transport.close()

    async def converse(
        self, link: AgentLink, start: dict[str, Any], *, listen: bool, barge_in: bool
    ) -> AgentEnd:
        conversation = Conversation(
            call_id=self.call_id,
            link=link,
            stream=self._stream,
            speaker=self._speaker,
            playout=self._playout,
            send_digits=self._send_digits,
            cut=self._cut,
            emit=self._emit,
            clock=self._clock,
            listen=listen,
            barge_in=barge_in,
        )
        self._conversation = conversation
        self._stream.decode_caller_audio = listen
        try:
            return await conversation.run(start)
        finally:
            self._stream.decode_caller_audio = False
            self._conversation = None

    async def _send_digits(self, digits: str) -> bool:
        messages = self._stream.send_digits(digits)
        if messages:
            self._playout.urgent(messages)
            return True
        try:
            return await self._control.send_digits(digits)
        except Exception as exc:
            logger.error("call %s: sending DTMF failed: %s", self.call_id, exc)
            return False

    def _cut(self) -> None:
        self._speaker.cut()
        self._playout.clear()

    # --- observation ------------------------------------------------------------------

    def _emit(self, kind: str, **fields: Any) -> None:
        logger.debug("call %s: %s %s", self.call_id, kind, fields)
        if self._observer is not None:
            try:
                self._observer(self.call_id, kind, fields)
            except Exception:
                logger.exception("call %s: observer failed", self.call_id)
