"""The telebridge echo agent: a minimal application for the flow step `agent`, which says back
each key the caller presses. Copy it (with agent_common.py) as the start of your own agent.

Run it:

    TELEBRIDGE_AGENT_SECRET=change-me python examples/agent_echo.py [--host 127.0.0.1] [--port 8765]

and give telebridge the same TELEBRIDGE_AGENT_SECRET and a flow with an agent step
(examples/flows/agent.yaml):

    start: assistant
    steps:
      assistant:
        agent: {url: "ws://127.0.0.1:8765/call", listen: true, timeout: 5}
        next: goodbye
        on_error: sorry
      sorry: {say: "Sorry, our assistant is not available.", hangup: true}
      goodbye: {say: "Goodbye.", hangup: true}

then `TELEBRIDGE_FLOW=examples/flows/agent.yaml telebridge serve` (or, for a simulated call,
`TELEBRIDGE_FLOW=examples/flows/agent.yaml telebridge simulate --carrier plivo --digits 50#`).
When the agent runs behind a proxy or tunnel, set AGENT_PUBLIC_URL to the base URL the bridge
dials (e.g. `wss://agent.example.com`), since the signature covers that URL.

What it does on a call:
- `start`: greets, streaming the greeting as several text pieces of one utterance (as a language
  model would), the last with `last: true`.
- `dtmf`: says "You pressed 5." as a new utterance (`key-1`, `key-2`, ...). Then
  `#` says goodbye and sends `hangup` (the bridge ends the call once the goodbye has played);
  `*` sends `next` with `vars: {"echoed": <the keys pressed before the star>}`, leaving the
  step without a word, so the flow continues at the step's `next`;
  `0` also sends the tone 0 back into the call (`dtmf` with `digits`).
- `interrupted`: a caller who cut an utterance off within its first 500 ms probably pressed a
  key to be heard, so the agent says "Sorry, go ahead."; later than that it stays quiet (it has
  already said most of it). An interrupted apology gets no apology.
- binary frames (caller audio) are counted, not used; `end` logs the reason and that count.
Every event is logged on one line; a malformed message is logged and ignored.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from agent_common import decode, main, verify_signature
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

__all__ = ["GREETING", "SORRY_BELOW_MS", "EchoAgent", "handle", "pieces", "verify_signature"]

log = logging.getLogger("agent_echo")

GREETING = (
    "Hello! You are talking to the telebridge echo agent. Press any key and I will say it back."
)
# An utterance cut off before this much was heard gets a "Sorry, go ahead."
SORRY_BELOW_MS = 500
_KEY_NAMES = {"#": "hash", "*": "star"}


def pieces(text: str, words: int = 3) -> list[str]:
    """`text` in pieces of a few words, spaces kept, so that joined they give `text` back:
    the way a language model streams, which the bridge speaks without waiting for the end."""
    split = text.split(" ")
    return [
        " ".join(split[i : i + words]) + (" " if i + words < len(split) else "")
        for i in range(0, len(split), words)
    ]


class EchoAgent:
    """One call: reads the bridge's messages until `end` or the socket closes."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.call_id = "-"
        self.started = False
        self.done = False  # hangup or next sent: the agent has nothing more to say
        self.digits = ""
        self.keys = 0
        self.sorries = 0
        self.audio_frames = 0

    def _log(self, text: str, *args: Any) -> None:
        log.info("[%s] " + text, self.call_id, *args)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message, separators=(",", ":")))

    async def say(self, text: str, uid: str) -> None:
        """One utterance, streamed as pieces; the last piece carries `last: true`."""
        parts = pieces(text)
        for i, part in enumerate(parts):
            message: dict[str, Any] = {"type": "text", "text": part, "id": uid}
            if i == len(parts) - 1:
                message["last"] = True
            await self.send(message)
        self._log("said %s: %r", uid, text)

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
            self._log(
                "connection closed (%s), %d audio frames",
                exc.rcvd or "no close frame",
                self.audio_frames,
            )

    async def on_message(self, data: dict[str, Any]) -> bool:
        """Handle one message; True when the call is over."""
        kind = data["type"]
        if kind == "start":
            return await self.on_start(data)
        if not self.started:
            self._log("ignored %s before start", kind)
            return False
        if kind == "dtmf":
            await self.on_dtmf(data.get("digit"))
        elif kind == "played":
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

    async def on_start(self, data: dict[str, Any]) -> bool:
        if self.started:
            self._log("ignored a second start")
            return False
        self.started = True
        self.call_id = str(data.get("call_id") or "-")
        audio = data.get("audio") if isinstance(data.get("audio"), dict) else {}
        self._log(
            "start: %s call from %s to %s on %s, audio %s",
            data.get("direction"),
            data.get("caller"),
            data.get("callee"),
            data.get("carrier"),
            audio,
        )
        await self.say(GREETING, "greet")
        return False

    async def on_dtmf(self, digit: object) -> None:
        if not isinstance(digit, str) or len(digit) != 1:
            self._log("ignored a dtmf message without a digit: %r", digit)
            return
        if self.done:
            self._log("key %s after leaving the step, ignored", digit)
            return
        self._log("key %s", digit)
        if digit == "*":
            self.done = True
            await self.send({"type": "next", "vars": {"echoed": self.digits}})
            self._log("next, echoed=%r", self.digits)
            return
        self.digits += digit
        self.keys += 1
        uid = f"key-{self.keys}"
        if digit == "#":
            self.done = True
            await self.say("You pressed hash. Goodbye!", uid)
            await self.send({"type": "hangup", "reason": "caller pressed hash"})
            self._log("hangup")
            return
        await self.say(f"You pressed {_KEY_NAMES.get(digit, digit)}.", uid)
        if digit == "0":
            await self.send({"type": "dtmf", "digits": "0"})
            self._log("sent the tone 0")

    async def on_interrupted(self, uid: object, heard_ms: object) -> None:
        if isinstance(heard_ms, bool) or not isinstance(heard_ms, int | float):
            self._log("interrupted %s, heard_ms missing or not a number: %r", uid, heard_ms)
            return
        self._log("interrupted %s after %d ms", uid, heard_ms)
        apology = isinstance(uid, str) and uid.startswith("sorry-")
        if heard_ms < SORRY_BELOW_MS and not self.done and not apology:
            self.sorries += 1
            await self.say("Sorry, go ahead.", f"sorry-{self.sorries}")


async def handle(ws: ServerConnection) -> None:
    """The server's connection handler: one EchoAgent per call."""
    await EchoAgent(ws).run()


if __name__ == "__main__":
    main("agent_echo", handle)
