"""Fakes of what a flow runner talks to: a scripted call, a recorder, and a tiny local
webhook server."""

import asyncio
import contextlib
import json
import socket
from typing import Any

from telebridge.flows.loader import parse_flow
from telebridge.flows.model import Flow
from telebridge.flows.ports import AgentEnd, AgentLink
from telebridge.flows.runner import SpeechOverrides

CALL = {"caller": "+15550001111", "callee": "+15550002222", "call_id": "c-1", "carrier": "plivo"}


class FakePort:
    """A call that records what the runner asks and presses keys as scripted.

    `presses` answer `next_digit` in turn: a key at once, or None for a timeout (a real wait).
    `during` lists (text fragment, keys): the keys are pressed while the first prompt containing
    the fragment plays, each entry used once.
    """

    def __init__(
        self,
        presses: list[str | None] | None = None,
        during: list[tuple[str, str]] | None = None,
        transfer_ok: bool = True,
    ) -> None:
        self.presses = list(presses or [])
        self.during = list(during or [])
        self.transfer_ok = transfer_ok
        self.log: list[tuple[Any, ...]] = []
        self.overrides: list[SpeechOverrides] = []
        self.buffer = ""
        self.interrupted = False
        self.waiting = asyncio.Event()  # set once the runner waits for a key
        self.agent_end = AgentEnd("next")  # what an agent step's conversation ends with
        self.agent_starts: list[dict[str, Any]] = []

    async def say(self, text: str, *, barge_in: bool, overrides: SpeechOverrides) -> None:
        self.log.append(("say", text, barge_in))
        self.overrides.append(overrides)
        for i, (fragment, keys) in enumerate(self.during):
            if fragment in text:
                del self.during[i]
                self.buffer += keys
                self.interrupted = self.interrupted or barge_in
                break

    async def play(self, pcm: bytes, sample_rate: int, *, barge_in: bool) -> None:
        self.log.append(("play", len(pcm), sample_rate, barge_in))

    async def pause(self, seconds: float) -> None:
        self.log.append(("pause", seconds))

    async def wait_played(self) -> bool:
        self.log.append(("wait_played",))
        interrupted, self.interrupted = self.interrupted, False
        return not interrupted

    def take_digits(self) -> str:
        keys, self.buffer = self.buffer, ""
        return keys

    async def next_digit(self, timeout: float) -> str | None:  # noqa: ASYNC109 (the port's shape)
        self.log.append(("next_digit", timeout))
        self.waiting.set()
        key = self.presses.pop(0) if self.presses else None
        if key is None:
            await asyncio.sleep(timeout)
        return key

    async def transfer(self, to: str, timeout: float) -> bool:  # noqa: ASYNC109
        self.log.append(("transfer", to, timeout))
        return self.transfer_ok

    async def hangup(self, reason: str) -> None:
        self.log.append(("hangup", reason))

    async def converse(
        self, link: AgentLink, start: dict[str, Any], *, listen: bool, barge_in: bool
    ) -> AgentEnd:
        self.log.append(("converse", start["step"]))
        self.agent_starts.append(start)
        return self.agent_end

    def said(self) -> list[str]:
        return [entry[1] for entry in self.log if entry[0] == "say"]

    def calls(self, kind: str) -> list[tuple[Any, ...]]:
        return [entry for entry in self.log if entry[0] == kind]


class Recorder:
    def __init__(self) -> None:
        self.steps: list[str] = []
        self.digits: list[tuple[str, str]] = []
        self.vars: list[dict[str, str]] = []
        self.webhooks: list[tuple[str, bool, str]] = []

    def step_entered(self, step: str) -> None:
        self.steps.append(step)

    def digits_collected(self, step: str, digits: str) -> None:
        self.digits.append((step, digits))

    def vars_set(self, values: dict[str, str]) -> None:
        self.vars.append(values)

    def webhook_result(self, step: str, ok: bool, detail: str) -> None:
        self.webhooks.append((step, ok, detail))


def make_flow(text: str, name: str = "test") -> Flow:
    flow, problems = parse_flow(text, name)
    assert flow is not None, [str(p) for p in problems]
    return flow


class Hook:
    """A tiny HTTP/1.1 server on 127.0.0.1: answers per path, records each request."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.url = ""
        self._handlers: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            method, target, _ = (await reader.readline()).decode().split(" ", 2)
            path = target.partition("?")[0]
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, value = line.decode().split(":", 1)
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((method, path, headers, json.loads(body)))
            if path == "/slow":  # never answers; returns once the client gives up
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await reader.read()
                return
            status, payload = self.answers[path]
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        finally:
            writer.close()
            self._handlers.discard(task)

    async def stop(self) -> None:
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        number: int = sock.getsockname()[1]
    return number  # nothing listens there once the socket is closed
