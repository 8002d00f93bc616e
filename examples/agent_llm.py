"""A telebridge agent that answers with a language model: any OpenAI-compatible chat completions
endpoint (OpenAI, a vLLM or llama.cpp server, Ollama's /v1, ...), streamed token by token into
the call, so the caller hears the start of the answer while the model is still writing it.

Run it:

    export TELEBRIDGE_AGENT_SECRET=change-me        # the same value telebridge has
    export OPENAI_API_KEY=sk-...                    # sent as `Authorization: Bearer`
    export OPENAI_BASE_URL=https://api.openai.com/v1   # the default
    export OPENAI_MODEL=gpt-4o-mini                 # the default
    export AGENT_SYSTEM_PROMPT="You are ..."        # optional
    python examples/agent_llm.py [--host 127.0.0.1] [--port 8765]

with a telebridge flow that hands the call over (examples/flows/agent.yaml):

    start: assistant
    steps:
      assistant:
        agent: {url: "ws://127.0.0.1:8765/call", listen: true, timeout: 5}
        next: goodbye
        on_error: sorry
      sorry: {say: "Sorry, our assistant is not available.", hangup: true}
      goodbye: {say: "Goodbye.", hangup: true}

and `TELEBRIDGE_FLOW=examples/flows/agent.yaml telebridge serve`, or a simulated call:
`TELEBRIDGE_FLOW=examples/flows/agent.yaml telebridge simulate --carrier plivo --digits '#*'`
(the simulated caller presses one key per prompt). AGENT_PUBLIC_URL: see agent_common.py;
OPENAI_TIMEOUT (seconds, default 20): the longest wait to connect or between two chunks.

The conversation:
- On `start` the model is asked for a greeting. Each token is sent as it arrives as a `text`
  piece of the reply's utterance (`r1`, `r2`, ...), then an empty piece with `last: true`.
- There is no speech recognition here, so the caller's keys are the user's input: digits are
  collected until `#`, then "The caller pressed: 123" is the user's message and the answer is
  streamed the same way. `*` leaves the step (`next`): the flow goes on at the step's `next`.
- A new turn (`#`) while a reply is still streaming or playing cuts it off: the HTTP stream is
  cancelled, the open utterance is ended, and `clear` stops what is queued at the bridge.
- On `interrupted`, the reply in the history is trimmed to roughly what the caller heard, so
  that the model does not believe it said what was never heard: the utterance is assumed to last
  len(text) / 15 characters per second, the text is cut at heard_ms / that duration (back to a
  word boundary) and marked with "…". A rough estimate, but the model only needs the gist.
- The endpoint failing (an error status, a timeout, a broken stream) is logged, and the caller
  hears a short apology instead; the call goes on.
Caller audio (binary frames) is counted and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from agent_common import decode, main
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

__all__ = [
    "APOLOGY",
    "CHARS_PER_SECOND",
    "GREETING_REQUEST",
    "EndpointError",
    "LlmAgent",
    "LlmConfig",
    "delta_content",
    "make_handler",
    "sse_data",
    "stream_tokens",
    "trim_to_heard",
]

log = logging.getLogger("agent_llm")

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly assistant on a phone call. Your words are spoken aloud by a speech "
    "synthesizer: answer in one to three short sentences of plain text, with no lists, markdown "
    "or emoji. The caller cannot speak to you; they answer by pressing keys on their phone, "
    "ending with the hash key. Tell them so when you greet them."
)
GREETING_REQUEST = "(the call has started; greet the caller)"
APOLOGY = "Sorry, I cannot answer right now. Please try again."
# Speech rate assumed to trim an interrupted reply to what was heard (about 150 words a minute).
CHARS_PER_SECOND = 15
MAX_DIGITS = 64
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
# Seconds to connect, and at most between two chunks of the stream.
DEFAULT_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True)
class LlmConfig:
    """Where and how to ask the model."""

    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = None
    model: str = DEFAULT_MODEL
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> LlmConfig:
        return cls(
            base_url=env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
            api_key=env.get("OPENAI_API_KEY") or None,
            model=env.get("OPENAI_MODEL") or DEFAULT_MODEL,
            system_prompt=env.get("AGENT_SYSTEM_PROMPT") or DEFAULT_SYSTEM_PROMPT,
            timeout=float(env.get("OPENAI_TIMEOUT") or DEFAULT_TIMEOUT),
        )


class EndpointError(Exception):
    """The chat completions endpoint answered with something other than a stream of tokens."""


def sse_data(line: str) -> str | None:
    """The payload of an SSE `data:` line; None for blank lines, comments and other fields."""
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def delta_content(payload: str) -> str:
    """The text in one streamed chunk (`choices[0].delta.content`), "" when it has none
    (the role-only first chunk, the finish chunk). Raises EndpointError for an error object or
    something that is not a chunk."""
    try:
        chunk = json.loads(payload)
    except ValueError:
        raise EndpointError(f"not JSON in the stream: {payload[:80]!r}") from None
    if not isinstance(chunk, dict):
        raise EndpointError(f"not a chunk: {payload[:80]!r}")
    if "error" in chunk:
        raise EndpointError(f"error in the stream: {str(chunk['error'])[:200]}")
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""  # e.g. a usage-only chunk
    delta = choices[0].get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else ""


async def stream_tokens(
    client: httpx.AsyncClient, config: LlmConfig, messages: list[dict[str, str]]
) -> AsyncGenerator[str, None]:
    """The reply's tokens as the endpoint streams them. Raises EndpointError or httpx's errors.
    Close it (contextlib.aclosing) to abandon the HTTP stream early."""
    url = config.base_url.rstrip("/") + "/chat/completions"
    headers = {"Accept": "text/event-stream"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    body = {"model": config.model, "messages": messages, "stream": True}
    async with client.stream("POST", url, json=body, headers=headers) as response:
        if not response.is_success:
            detail = (await response.aread())[:300].decode(errors="replace")
            raise EndpointError(f"HTTP {response.status_code}: {detail}")
        async for line in response.aiter_lines():
            payload = sse_data(line)
            if payload is None:
                continue
            if payload == "[DONE]":
                return
            token = delta_content(payload)
            if token:
                yield token
    raise EndpointError("the stream ended without [DONE]")


def trim_to_heard(text: str, heard_ms: float, chars_per_second: float = CHARS_PER_SECOND) -> str:
    """`text` cut to roughly the part a caller heard in `heard_ms`, marked with "…"; unchanged
    when the estimate says all of it was heard."""
    keep = int(heard_ms * chars_per_second / 1000)
    if keep >= len(text):
        return text
    head = text[:keep]
    if not text[keep].isspace() and " " in head:
        head = head.rsplit(" ", 1)[0]  # no half words
    return head.rstrip() + "…"


class LlmAgent:
    """One call: the read loop runs here, each reply streams in its own task."""

    def __init__(self, ws: ServerConnection, config: LlmConfig, client: httpx.AsyncClient) -> None:
        self.ws = ws
        self.config = config
        self.client = client
        self.call_id = "-"
        self.started = False
        self.left = False  # `next` sent: the call has moved on to the flow's next step
        self.history: list[dict[str, str]] = [{"role": "system", "content": config.system_prompt}]
        self.digits = ""
        self.replies = 0
        self.apologies = 0
        self.audio_frames = 0
        self.reply: asyncio.Task[None] | None = None
        self.streaming: str | None = None  # the utterance with pieces sent and no `last` yet
        self.unplayed: set[str] = set()  # utterances sent, neither played nor interrupted
        self.spoken: dict[str, str] = {}  # full text sent, by utterance id
        self.entries: dict[str, dict[str, str]] = {}  # the reply's history entry, by id

    def _log(self, text: str, *args: Any) -> None:
        log.info("[%s] " + text, self.call_id, *args)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message, separators=(",", ":"), ensure_ascii=False))

    async def run(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    self.audio_frames += 1
                    continue
                data = decode(message)
                if data is None:
                    continue
                try:
                    if await self.on_message(data):
                        return
                except ConnectionClosed:
                    raise
                except Exception:  # a bug or an odd message must not end the call
                    log.exception("[%s] failed to handle %.120r", self.call_id, message)
        except ConnectionClosed as exc:
            self._log("connection closed (%s)", exc.rcvd or "no close frame")
        finally:
            # The call is over: nothing more is sent, the HTTP stream is abandoned.
            await self.stop_reply(end_utterance=False)

    async def on_message(self, data: dict[str, Any]) -> bool:
        """Handle one message; True when the call is over."""
        kind = data["type"]
        if kind == "start":
            if self.started:
                self._log("ignored a second start")
            else:
                self.started = True
                self.call_id = str(data.get("call_id") or "-")
                self._log("start: %s call from %s", data.get("direction"), data.get("caller"))
                await self.user_turn(GREETING_REQUEST)
        elif not self.started:
            self._log("ignored %s before start", kind)
        elif kind == "dtmf":
            await self.on_dtmf(data.get("digit"))
        elif kind == "played":
            self.unplayed.discard(str(data.get("id")))
            self._log("played %s", data.get("id"))
        elif kind == "interrupted":
            await self.on_interrupted(data.get("id"), data.get("heard_ms"))
        elif kind == "error":
            self._log("the bridge refused a message: %s", data.get("message"))
        elif kind == "end":
            self._log("end: %s, %d audio frames received", data.get("reason"), self.audio_frames)
            return True
        else:
            self._log("ignored unknown message type %r", kind)
        return False

    async def on_dtmf(self, digit: object) -> None:
        if not isinstance(digit, str) or len(digit) != 1:
            self._log("ignored a dtmf message without a digit: %r", digit)
            return
        if self.left:
            self._log("key %s after leaving the step, ignored", digit)
            return
        if digit == "*":
            # Leave the step: the flow goes on at the step's `next` (e.g. a goodbye).
            self._log("key *: leaving the step")
            self.left = True
            busy = self.reply is not None and not self.reply.done()
            await self.stop_reply()
            if busy or self.unplayed:
                await self.send({"type": "clear"})
            await self.send({"type": "next"})
            return
        if digit != "#":
            self.digits = (self.digits + digit)[-MAX_DIGITS:]
            self._log("key %s (so far %s)", digit, self.digits)
            return
        digits, self.digits = self.digits, ""
        self._log("key # after %r", digits)
        if digits:
            await self.user_turn(f"The caller pressed: {digits}")
        else:
            await self.user_turn("The caller pressed the hash key without any digits.")

    async def on_interrupted(self, uid: object, heard_ms: object) -> None:
        if not isinstance(uid, str):
            self._log("ignored interrupted without an id: %r", uid)
            return
        self.unplayed.discard(uid)
        if uid == self.streaming:
            # The caller cut off a reply that is still being written: stop writing it.
            await self.stop_reply()
        if isinstance(heard_ms, bool) or not isinstance(heard_ms, int | float):
            self._log("interrupted %s, heard_ms missing or not a number: %r", uid, heard_ms)
            return
        entry, text = self.entries.get(uid), self.spoken.get(uid)
        if entry is not None and text is not None:
            entry["content"] = trim_to_heard(text, heard_ms)
            self._log(
                "interrupted %s after %d ms; history keeps %r", uid, heard_ms, entry["content"]
            )
        else:
            self._log("interrupted %s after %d ms", uid, heard_ms)

    async def user_turn(self, text: str) -> None:
        """A new user message: cut off the reply in progress, if any, and answer."""
        busy = self.reply is not None and not self.reply.done()
        await self.stop_reply()
        if busy or self.unplayed:
            await self.send({"type": "clear"})
            self._log("clear")
        self.history.append({"role": "user", "content": text})
        # The request is fixed now (copies: an entry is trimmed later when its reply is cut off),
        # and the reply's place in the history is taken now, before the next message is read.
        messages = [dict(m) for m in self.history]
        entry = {"role": "assistant", "content": ""}
        self.history.append(entry)
        self.replies += 1
        uid = f"r{self.replies}"
        self.entries[uid] = entry
        self.reply = asyncio.create_task(self.answer(uid, messages, entry))

    async def stop_reply(self, end_utterance: bool = True) -> None:
        """Cancel the streaming reply (and its HTTP stream) and end its open utterance, so that
        the bridge's next piece surely starts a new one."""
        task, self.reply = self.reply, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        uid, self.streaming = self.streaming, None
        if uid is not None and end_utterance:
            with contextlib.suppress(ConnectionClosed):
                await self.send({"type": "text", "text": "", "id": uid, "last": True})

    async def answer(self, uid: str, messages: list[dict[str, str]], entry: dict[str, str]) -> None:
        """Stream one reply from the model into the call, as utterance `uid`; what is said
        goes into `entry`, the reply's place in the history."""
        spoken = ""
        try:
            async with contextlib.aclosing(
                stream_tokens(self.client, self.config, messages)
            ) as tokens:
                async for token in tokens:
                    self.streaming = uid
                    self.unplayed.add(uid)
                    await self.send({"type": "text", "text": token, "id": uid})
                    spoken += token
                    entry["content"] = self.spoken[uid] = spoken
            self.streaming = None
            await self.send({"type": "text", "text": "", "id": uid, "last": True})
            self._log("said %s: %r", uid, spoken)
        except asyncio.CancelledError:
            self._log("%s cut off after %r", uid, spoken)
            if spoken:
                entry["content"] = spoken + "…"
            raise
        except (EndpointError, httpx.HTTPError) as exc:
            log.warning(
                "[%s] %s: the endpoint failed: %s: %s", self.call_id, uid, type(exc).__name__, exc
            )
            if self.streaming == uid:
                self.streaming = None
                await self.send({"type": "text", "text": "", "id": uid, "last": True})
            await self.apologise()
        except ConnectionClosed:
            self._log("%s: the connection closed while speaking", uid)
        except Exception:  # a bug here must not go unnoticed in a task nobody awaits
            log.exception("[%s] %s failed", self.call_id, uid)
        finally:
            if not entry["content"]:
                # Nothing was said: the history does not pretend otherwise.
                self.history[:] = [m for m in self.history if m is not entry]
                self.entries.pop(uid, None)

    async def apologise(self) -> None:
        self.apologies += 1
        uid = f"sorry-{self.apologies}"
        self.unplayed.add(uid)
        await self.send({"type": "text", "text": APOLOGY, "id": uid, "last": True})
        self._log("said %s: %r", uid, APOLOGY)


def make_handler(config: LlmConfig) -> Callable[[ServerConnection], Awaitable[None]]:
    """The server's connection handler: one LlmAgent (and one HTTP client) per call."""

    async def handle(ws: ServerConnection) -> None:
        timeout = httpx.Timeout(config.timeout, connect=min(config.timeout, 10.0))
        async with httpx.AsyncClient(timeout=timeout) as client:
            await LlmAgent(ws, config, client).run()

    return handle


if __name__ == "__main__":
    settings = LlmConfig.from_env()
    notes = [f"model {settings.model} at {settings.base_url}"]
    if settings.api_key is None:
        notes.append("OPENAI_API_KEY is not set: requests carry no Authorization header")
    main("agent_llm", make_handler(settings), notes=notes)
