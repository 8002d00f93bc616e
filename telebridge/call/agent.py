"""The agent step, run: an application on a WebSocket speaks on the call as it thinks.

`Conversation` joins the application's socket (`AgentLink`, opened by the flow's I/O edge) to
the call: text pieces become utterances that `Speaker.stream` speaks as they arrive (cut into
segments by `text_flush.Segmenter`), one after another; each utterance's mark, once the carrier
confirms it, is reported as `played`; a `clear` (or a key, with barge-in) cuts what is playing
and reports `interrupted` with the milliseconds the caller heard; keys go to the application and
tones come back; caller audio, decoded to PCM16, goes to it in 20 ms frames while listening.

Three tasks: the reader (application -> commands), the writer (one ordered outbox to the
application, bounded) and the speaker (utterances, in order). The step ends with `next`,
`hangup` or `transfer` (after what was said is synthesised), a clean close (like `next`), or a
failure (`error`): a broken socket, 50 refused messages, an outbox the application does not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from telebridge.call import agent_wire as wire
from telebridge.call.audio import mulaw_to_pcm
from telebridge.call.playout import Playout
from telebridge.call.ports import CarrierStream, Emit
from telebridge.call.speaker import Speaker
from telebridge.call.text_flush import Segmenter
from telebridge.flows.ports import AgentClosed, AgentEnd, AgentLink, SpeechOverrides
from telebridge.tts.errors import TTSError
from telebridge.tts.speech import TextSpeech

__all__ = ["CHARS_PER_SECOND", "MAX_BAD_MESSAGES", "MAX_QUEUED_SECONDS", "Conversation"]

logger = logging.getLogger(__name__)

MAX_BAD_MESSAGES = 50
# Text waiting to be spoken is bounded by its speaking time, estimated at this many characters
# a second (about 150 words a minute), plus the audio already queued.
MAX_QUEUED_SECONDS = 30.0
CHARS_PER_SECOND = 15.0
# Messages the application has not read yet (10 s of caller audio) before it is given up on.
MAX_OUTBOX = 500
END_SEND_WAIT = 1.0


@dataclass(eq=False)
class _Utterance:
    id: str
    overrides: SpeechOverrides
    pieces: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    waiting_chars: int = 0  # text received and not yet handed to Waves
    number: int | None = None  # the speaker's utterance number, once its turn has come
    # spoken: synthesised whole, its mark queued; over: played, interrupted or failed
    state: Literal["unspoken", "spoken", "over"] = "unspoken"
    first_piece_at: float = 0.0
    first_sent_at: float | None = None


class Conversation:
    """One agent step on one call. `await run(start)` once; the session feeds it keys and audio."""

    def __init__(
        self,
        *,
        call_id: str,
        link: AgentLink,
        stream: CarrierStream,
        speaker: Speaker,
        playout: Playout,
        send_digits: Callable[[str], Awaitable[bool]],
        cut: Callable[[], None],
        emit: Emit,
        clock: Callable[[], float],
        listen: bool,
        barge_in: bool,
    ) -> None:
        self._call_id = call_id
        self._link = link
        self._stream = stream
        self._speaker = speaker
        self._playout = playout
        self._send_digits = send_digits
        self._cut = cut
        self._emit = emit
        self._clock = clock
        self.listen = listen
        self._barge_in = barge_in
        self._outbox: deque[str | bytes] = deque()
        self._wake_writer = asyncio.Event()
        self._ready: asyncio.Queue[_Utterance] = asyncio.Queue()
        self._open: _Utterance | None = None
        self._live: list[_Utterance] = []  # not yet played or interrupted, in order
        self._cleared_ids: set[str] = set()
        self._ids = itertools.count(1)
        self._bad = 0
        self._end: asyncio.Future[AgentEnd] | None = None
        self._leaving: AgentEnd | None = None  # asked for; effective once the speech is done
        self._watchers: set[asyncio.Task[None]] = set()
        self._audio = bytearray()
        self._frame_bytes = stream.sample_rate // 50 * 2
        self.end_reason = "call-ended"

    # --- running ----------------------------------------------------------------------

    async def run(self, start: dict[str, Any]) -> AgentEnd:
        loop = asyncio.get_running_loop()
        self._end = loop.create_future()
        start = {**start, "audio": {"encoding": "pcm16", "rate": self._stream.sample_rate}}
        self._post(wire.message("start", **{k: v for k, v in start.items() if k != "type"}))
        tasks = [
            asyncio.create_task(self._read(), name=f"agent-read:{self._call_id}"),
            asyncio.create_task(self._write(), name=f"agent-write:{self._call_id}"),
            asyncio.create_task(self._speak(), name=f"agent-speak:{self._call_id}"),
        ]
        self._emit("agent_start", listen=self.listen)
        ended: AgentEnd | None = None
        try:
            ended = await self._end
            return ended
        finally:
            if ended is not None:
                self.end_reason = ended.kind if ended.kind != "error" else f"error: {ended.detail}"
            for task in (*tasks, *self._watchers):
                task.cancel()
            await asyncio.gather(*tasks, *self._watchers, return_exceptions=True)
            await self._goodbye()
            self._emit("agent_end", reason=self.end_reason)

    def _finish(self, end: AgentEnd) -> None:
        if self._end is not None and not self._end.done():
            self._end.set_result(end)

    async def _goodbye(self) -> None:
        """`end`, then close with 1000: best effort, briefly (the step is over either way)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(END_SEND_WAIT):
                await self._link.send(wire.message("end", reason=self.end_reason))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(END_SEND_WAIT):
                await self._link.close(1000)

    # --- application -> bridge --------------------------------------------------------

    async def _read(self) -> None:
        while True:
            try:
                raw = await self._link.receive()
            except AgentClosed as exc:
                await self._closed(exc)
                return
            try:
                command = wire.parse(raw)
            except wire.AgentMessageError as exc:
                self._refuse(str(exc))
                if self._bad >= MAX_BAD_MESSAGES:
                    self._finish(AgentEnd("error", detail="too many invalid messages"))
                    return
                continue
            await self._apply(command)

    def _refuse(self, why: str, **fields: Any) -> None:
        self._bad += 1
        if self._bad <= 5:
            logger.warning("call %s: agent message refused: %s", self._call_id, why)
        self._post(wire.message("error", message=why, **fields))

    async def _apply(self, command: wire.AgentCommand) -> None:
        if self._leaving is not None:
            self._post(wire.message("error", message="the step is ending: message ignored"))
            return
        if isinstance(command, wire.Text):
            self._text(command)
        elif isinstance(command, wire.Clear):
            self._clear("agent")
        elif isinstance(command, wire.SendDigits):
            self._emit("agent_dtmf_out", digits=command.digits)
            if not await self._send_digits(command.digits):
                self._post(wire.message("error", message="the carrier could not play the tones"))
        elif isinstance(command, wire.Hangup):
            self._leave(AgentEnd("hangup", detail=command.reason))
        elif isinstance(command, wire.TransferTo):
            self._leave(AgentEnd("transfer", to=command.to))
        elif isinstance(command, wire.Next):
            self._leave(AgentEnd("next", step=command.step, vars=command.vars))

    def _text(self, piece: wire.Text) -> None:
        utterance = self._open
        if utterance is not None and piece.id is not None and piece.id != utterance.id:
            self._close_open()  # a new id starts a new utterance
            utterance = None
        if utterance is None:
            if piece.id is not None and piece.id in self._cleared_ids:
                return  # the rest of an utterance the application cleared
            if not piece.text and piece.last:
                return
            overrides = SpeechOverrides(piece.voice, piece.speed, piece.language)
            uid = piece.id or f"u{next(self._ids)}"
            utterance = _Utterance(uid, overrides, first_piece_at=self._clock())
            self._open = utterance
            self._live.append(utterance)
            self._ready.put_nowait(utterance)
        if piece.text:
            if self._queued_seconds() + len(piece.text) / CHARS_PER_SECOND > MAX_QUEUED_SECONDS:
                self._refuse(
                    f"too much speech queued (over {MAX_QUEUED_SECONDS:g} s): text refused",
                    id=utterance.id,
                )
                self._bad -= 1  # not the application's protocol error: it may go on
            else:
                utterance.waiting_chars += len(piece.text)
                utterance.pieces.put_nowait(piece.text)
        if piece.last:
            self._close_open()

    def _close_open(self) -> None:
        if self._open is not None:
            self._open.pieces.put_nowait(None)
            self._open = None

    def _queued_seconds(self) -> float:
        chars = sum(u.waiting_chars for u in self._live)
        return chars / CHARS_PER_SECOND + self._playout.ahead()

    def _leave(self, end: AgentEnd) -> None:
        """Leave once what was said is synthesised (hangup and transfer then wait for it to
        play, as the flow's own do)."""
        self._leaving = end
        self._close_open()
        self._ready.put_nowait(_LEAVE)

    async def _closed(self, exc: AgentClosed) -> None:
        if exc.normal:
            logger.info("call %s: agent closed the socket", self._call_id)
            self._leave(AgentEnd("next"))
            return
        logger.warning("call %s: agent socket broke (%s)", self._call_id, exc)
        self._leaving = AgentEnd("error", detail=f"agent connection broke ({exc})")
        self._close_open()
        self._ready.put_nowait(_LEAVE)

    # --- speaking ---------------------------------------------------------------------

    async def _speak(self) -> None:
        while True:
            utterance = await self._ready.get()
            if utterance is _LEAVE:
                if self._leaving is not None and self._leaving.kind == "error":
                    await self._playout.wait_played(lambda: False)
                self._finish(self._leaving or AgentEnd("next"))
                return
            if utterance.state == "over":
                continue
            try:
                number, whole = await self._speaker.stream(
                    functools.partial(self._feed, utterance=utterance),
                    utterance.overrides,
                    on_start=functools.partial(_numbered, utterance),
                    on_first_chunk=functools.partial(self._first_audio, utterance),
                )
            except TTSError as exc:
                logger.error("call %s: agent speech failed: %s", self._call_id, exc)
                self._post(wire.message("error", message=f"speech failed: {exc}", id=utterance.id))
                self._drop(utterance)
                continue
            if not whole or _over(utterance):
                continue  # cut off: `interrupted` was sent by the clear
            utterance.state = "spoken"
            future = self._playout.mark_future(f"utterance-{number}")
            if future is None:
                self._played(utterance)
            else:
                task = asyncio.create_task(self._watch(utterance, future))
                self._watchers.add(task)
                task.add_done_callback(self._watchers.discard)

    async def _feed(self, speech: TextSpeech, utterance: _Utterance) -> None:
        loop = asyncio.get_running_loop()
        segmenter = Segmenter()
        while True:
            due = segmenter.due()
            try:
                async with asyncio.timeout_at(due):
                    piece = await utterance.pieces.get()
            except TimeoutError:
                for segment in segmenter.expire(loop.time()):
                    await self._send_segment(speech, utterance, segment)
                continue
            if piece is None:
                for segment in segmenter.finish():
                    await self._send_segment(speech, utterance, segment, flush=False)
                await speech.finish()
                return
            utterance.waiting_chars -= len(piece)
            for segment in segmenter.feed(piece, loop.time()):
                await self._send_segment(speech, utterance, segment)

    async def _send_segment(
        self, speech: TextSpeech, utterance: _Utterance, text: str, *, flush: bool = True
    ) -> None:
        if utterance.first_sent_at is None:
            utterance.first_sent_at = self._clock()
            held = (utterance.first_sent_at - utterance.first_piece_at) * 1000
            self._emit("agent_text_sent", id=utterance.id, held_ms=round(held, 3))
        await speech.send(text)
        if flush:
            await speech.flush()

    def _first_audio(self, utterance: _Utterance, number: int, at: float) -> None:
        sent = utterance.first_sent_at if utterance.first_sent_at is not None else at
        self._emit(
            "agent_first_audio",
            id=utterance.id,
            text_to_audio_ms=round((at - utterance.first_piece_at) * 1000, 3),
            waves_ms=round((at - sent) * 1000, 3),
        )

    async def _watch(self, utterance: _Utterance, future: asyncio.Future[bool]) -> None:
        if await asyncio.shield(future) and utterance.state == "spoken":
            self._played(utterance)

    def _played(self, utterance: _Utterance) -> None:
        self._drop(utterance)
        self._post(wire.message("played", id=utterance.id))

    def _drop(self, utterance: _Utterance) -> None:
        utterance.state = "over"
        if utterance in self._live:
            self._live.remove(utterance)
        if utterance.number is not None:
            self._playout.forget(utterance.number)

    def _clear(self, by: str) -> None:
        """Stop speaking now: the carrier's queue, the synthesis under way, the queued text."""
        live = [u for u in self._live if u.state != "over"]
        report = []
        for utterance in live:
            number = utterance.number
            heard = self._playout.heard(number) if number is not None else 0.0
            report.append((utterance.id, round(heard * 1000)))
            if utterance is self._open:
                if len(self._cleared_ids) >= 100:
                    self._cleared_ids.pop()  # a long call: only recent ids can still arrive
                self._cleared_ids.add(utterance.id)
                self._close_open()
            self._drop(utterance)
        self._cut()
        self._emit("agent_clear", by=by, interrupted=len(report))
        for uid, heard_ms in report:
            self._post(wire.message("interrupted", id=uid, heard_ms=heard_ms))

    # --- call -> application ----------------------------------------------------------

    def digit(self, digit: str) -> None:
        """A key the caller pressed (barge-in first, when on and something is playing)."""
        if self._barge_in and any(u.state != "over" for u in self._live):
            self._emit("barge_in")
            self._clear("key")
        self._post(wire.message("dtmf", digit=digit))

    def caller_audio(self, payload: bytes) -> None:
        """Caller audio in the carrier's encoding: PCM16 to the application, 20 ms a frame."""
        if not self.listen:
            return
        pcm = mulaw_to_pcm(payload) if self._stream.codec == "mulaw" else payload
        buffer = self._audio
        buffer += pcm
        size = self._frame_bytes
        while len(buffer) >= size:
            self._post(bytes(buffer[:size]))
            del buffer[:size]

    def _post(self, message: str | bytes) -> None:
        # Nothing waiting before it: straight to the socket when it needs no waiting (the order
        # holds: the writer has written all it took, since it writes before its first await).
        if not self._outbox and self._link.send_now(message):
            return
        if len(self._outbox) >= MAX_OUTBOX:
            if self._end is not None and not self._end.done():
                logger.warning("call %s: the agent does not read its messages", self._call_id)
                self._finish(AgentEnd("error", detail="agent does not read its messages"))
            return
        self._outbox.append(message)
        self._wake_writer.set()

    async def _write(self) -> None:
        while True:
            while self._outbox:
                try:
                    await self._link.send(self._outbox.popleft())
                except AgentClosed:
                    return  # the reader sees the close and ends the step
            self._wake_writer.clear()
            await self._wake_writer.wait()


def _numbered(utterance: _Utterance, number: int) -> None:
    utterance.number = number


def _over(utterance: _Utterance) -> bool:
    return utterance.state == "over"  # (read after an await: a clear may have dropped it)


_LEAVE = _Utterance("", SpeechOverrides())  # in the queue: leave once what precedes is spoken
