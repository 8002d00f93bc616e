"""The carrier-agnostic interpreter of call flows.

`FlowRunner` walks a `Flow` and talks to the call only through `CallPort` (speech, audio, keys,
transfer, hangup), so the same flow runs unchanged on every carrier and against test fakes. The
ports it talks through are in flows/ports.py, the webhook step's exchange in flows/webhook.py.

Within one step the parts run in this order:

1. `set`: each value is a template, rendered in order (later ones see earlier ones).
2. `webhook`: POST the call state; the answer's `vars` are merged, its `say` is spoken before the
   step's own prompt, its `next` is remembered. On failure (timeout, non-2xx, not the JSON we
   expect, or a `next` naming no step) the step jumps to `on_error` at once; without `on_error`
   the failure is logged and the step carries on.
3. The prompt: `say`, `play` and `pause` in the order they are written in the step.
4. `gather`: see `FlowRunner._collect`. Keys pressed during the prompt count and cut it off, unless
   `barge_in: false`, which plays the prompt out and ignores keys pressed meanwhile. With `retries`,
   no input or a key no digit route matches asks again: the `no_input` / `invalid` text, then the
   `reprompt` text (or the prompt again). The last attempt's keys become `{{digits}}`.
5. `transfer`: after the prompt has played. Accepted: the flow ends with "transfer". Refused or a
   bad number: go to `on_error`, or end with "error:transfer failed".
   `agent`: after the prompt is queued, the call is the application's (`CallPort.converse`)
   until it sends `next` (merge its vars, go to its step or the step's routes), `hangup` or
   `transfer`, or closes the socket cleanly (the routes). A socket that cannot be opened or
   breaks goes to `on_error`, or ends the flow with "error:agent ...".
6. Routing, first match wins: the digit routes (`routes: {"1": step}`, only with a gather), then
   the list routes (`routes: [{when: {var: value, ...}, next: step}]`, all pairs must be equal),
   then the webhook's `next`, then `default` (or `next`; a step has one or the other).
7. No route chose a step: `hangup` ends the call (outcome "hangup"), else the flow has ended
   ("ended") and the caller of `run` ends the call.

Variables: `caller`, `callee`, `call_id`, `carrier` (given at call start), `flow`, `digits`, the
flow's top-level `vars:` defaults, variables given at call start, `set` and webhook `vars`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from telebridge import e164
from telebridge.flows import template
from telebridge.flows.model import (
    TRANSFER_TIMEOUT,
    Agent,
    Flow,
    Gather,
    Pause,
    Play,
    PromptPart,
    Say,
    Step,
    Transfer,
    Webhook,
)
from telebridge.flows.ports import (
    AgentEnd,
    AgentUnavailable,
    CallPort,
    FetchFailed,
    FlowIO,
    FlowRecorder,
    FlowRunError,
    NullRecorder,
    SpeechOverrides,
)
from telebridge.flows.webhook import WebhookAnswer, WebhookFailed, call_webhook

# The ports' names are re-exported: callers of the runner import them from here or the face.
__all__ = ["CallPort", "FetchFailed", "FlowIO", "FlowRecorder", "FlowRunError", "FlowRunner",
           "NullRecorder", "SpeechOverrides", "opening_prompt", "start_variables",
           "step_overrides"]  # fmt: skip

logger = logging.getLogger(__name__)


def start_variables(flow: Flow, variables: dict[str, str]) -> dict[str, str]:
    """A call's variables when its flow starts: `flow`, `digits`, the flow's defaults, then the
    variables given at call start (caller, callee, call_id, carrier and the call's own)."""
    return {"flow": flow.name, "digits": "", **flow.defaults, **variables}


def step_overrides(step: Step) -> SpeechOverrides:
    return SpeechOverrides(step.voice, step.speed, step.language)


def opening_prompt(flow: Flow, variables: dict[str, str]) -> tuple[str, SpeechOverrides] | None:
    """What the flow says first, and how, when it is known before the call runs (no `set` or
    webhook before it, every variable it names given): the server starts synthesising it while
    the carrier opens the stream. The runner renders that same text with the same variables."""
    step = flow.steps[flow.start]
    if step.set or step.webhook or not step.prompt or not isinstance(step.prompt[0], Say):
        return None
    text = step.prompt[0].text
    values = start_variables(flow, variables)
    if not set(template.names(text)) <= values.keys():
        return None
    return template.render(text, values), step_overrides(step)


@dataclass(frozen=True, slots=True)
class _Goto:
    step: str


@dataclass(frozen=True, slots=True)
class _End:
    outcome: str


@dataclass(frozen=True, slots=True)
class _Spoken:
    """Speech from a webhook answer: spoken as is, never read as a template."""

    text: str


_Part = PromptPart | _Spoken


class FlowRunner:
    """Runs one flow on one call. Single use: `run()` once, then read `variables`."""

    def __init__(
        self,
        flow: Flow,
        port: CallPort,
        *,
        variables: dict[str, str],
        recorder: FlowRecorder | None = None,
        io: FlowIO | None = None,
        max_steps: int = 1000,
    ) -> None:
        self.flow = flow
        self.variables = start_variables(flow, variables)
        self.state: Literal["ready", "running", "done"] = "ready"
        self.step: str | None = None  # the step being run, for logs
        self._port = port
        self._recorder: FlowRecorder = recorder or NullRecorder()
        self._io = io
        self._max_steps = max_steps
        self._audio: dict[Path, tuple[bytes, int]] = {}

    @property
    def _tag(self) -> str:
        return f"call {self.variables.get('call_id', '?')} flow {self.flow.name!r}"

    async def run(self) -> str:
        """Run the flow to its end: "hangup", "transfer", "ended" or "error:<detail>"."""
        if self.state != "ready":
            raise RuntimeError(f"FlowRunner.run() called when {self.state}")
        self.state = "running"
        try:
            outcome = await self._walk()
        except Exception as exc:  # CancelledError is not an Exception: it propagates.
            logger.exception("%s failed in step %r", self._tag, self.step)
            outcome = f"error:{exc or type(exc).__name__}"
        finally:
            self.state = "done"
        logger.info("%s ended at step %r: %s", self._tag, self.step, outcome)
        return outcome

    async def _walk(self) -> str:
        step_id = self.flow.start
        for _ in range(self._max_steps):
            step = self.flow.steps.get(step_id)
            if step is None:
                raise FlowRunError(f"no step {step_id!r}")
            result = await self._run_step(step)
            if isinstance(result, _End):
                return result.outcome
            step_id = result.step
        logger.error("%s entered %d steps: stopping a runaway loop", self._tag, self._max_steps)
        return "error:too many steps"

    async def _run_step(self, step: Step) -> _Goto | _End:
        self.step = step.id
        self._recorder.step_entered(step.id)
        logger.debug("%s enters step %r", self._tag, step.id)
        if step.set:
            self._assign(step)
        prompt: list[_Part] = []
        webhook_next: str | None = None
        if step.webhook is not None:
            try:
                answer = await self._call_webhook(step, step.webhook)
            except WebhookFailed as exc:
                self._recorder.webhook_result(step.id, False, str(exc))
                if step.on_error is not None:
                    logger.warning(
                        "%s webhook failed (%s): going to %r", self._tag, exc, step.on_error
                    )
                    return _Goto(step.on_error)
                logger.warning("%s webhook failed (%s): carrying on", self._tag, exc)
            else:
                self._recorder.webhook_result(step.id, True, answer.detail)
                if answer.values:
                    self.variables.update(answer.values)
                    self._recorder.vars_set(dict(answer.values))
                if answer.say:
                    prompt.append(_Spoken(answer.say))
                webhook_next = answer.next
        prompt.extend(step.prompt)
        if step.gather is not None:
            await self._gather(step, step.gather, prompt)
        else:
            await self._queue(step, prompt, barge_in=False)
        if step.transfer is not None:
            return await self._transfer(step, step.transfer)
        if step.agent is not None and (ended := await self._agent(step, step.agent)) is not None:
            return ended
        target = self._route(step, webhook_next)
        if target is not None:
            return _Goto(target)
        if step.hangup is not None:
            await self._port.hangup(step.hangup)
            return _End("hangup")
        return _End("ended")

    def _assign(self, step: Step) -> None:
        values: dict[str, str] = {}
        for var, text in step.set.items():
            values[var] = self.variables[var] = self._render(text, step)
        self._recorder.vars_set(values)

    def _render(self, text: str, step: Step) -> str:
        return template.render(text, self.variables, where=f"{self._tag} step {step.id!r}")

    def _route(self, step: Step, webhook_next: str | None) -> str | None:
        if step.gather is not None and (target := step.routes.get(self.variables["digits"])):
            return target
        for route in step.var_routes:
            if all(self.variables.get(var, "") == value for var, value in route.when):
                return route.next
        return webhook_next or step.default or step.next

    # --- prompts and keys ----------------------------------------------------------------

    async def _queue(self, step: Step, parts: Sequence[_Part], *, barge_in: bool) -> str:
        """Queue the prompt; with barge-in, stop at the first key and return the keys so far."""
        overrides = step_overrides(step)
        keys = ""
        for part in parts:
            if isinstance(part, Say | _Spoken):
                text = self._render(part.text, step) if isinstance(part, Say) else part.text
                if text.strip():
                    await self._port.say(text, barge_in=barge_in, overrides=overrides)
            elif isinstance(part, Play):
                pcm, rate = await self._load_audio(part.path)
                await self._port.play(pcm, rate, barge_in=barge_in)
            elif isinstance(part, Pause):
                await self._port.pause(part.seconds)
            if barge_in:
                keys += self._port.take_digits()
                if keys:  # a key cut the prompt off: queue no more of it
                    break
        return keys

    async def _gather(self, step: Step, gather: Gather, prompt: list[_Part]) -> None:
        parts: list[_Part] = prompt
        digits = ""
        for attempt in range(gather.retries + 1):
            digits = await self._collect(step, gather, parts)
            if digits:
                self._recorder.digits_collected(step.id, digits)
            if digits and (not step.routes or digits in step.routes):
                break
            if attempt < gather.retries:
                lead = gather.invalid if digits else gather.no_input
                logger.info("%s step %r: %s, asking again", self._tag, step.id,
                            f"unrouted keys {digits!r}" if digits else "no input")  # fmt: skip
                again: list[_Part] = [Say(gather.reprompt)] if gather.reprompt else list(prompt)
                parts = ([Say(lead)] if lead else []) + again
        self.variables["digits"] = digits

    async def _collect(self, step: Step, gather: Gather, parts: Sequence[_Part]) -> str:
        """One attempt at input: prompt, then keys until enough, the finish key, or a timeout.

        Keys pressed before the prompt are stale and dropped. The timeout runs from the end of
        the prompt's playback, for each key in turn.
        """
        self._port.take_digits()
        keys = await self._queue(step, parts, barge_in=gather.barge_in)
        await self._port.wait_played()
        late = self._port.take_digits()
        if gather.barge_in:
            keys += late
        elif late:
            logger.debug("%s ignored keys %r during an uninterruptible prompt", self._tag, late)
        digits, done = _accept("", keys, gather)
        while not done:
            key = await self._port.next_digit(gather.timeout)
            if key is None:
                break
            digits, done = _accept(digits, key, gather)
        return digits

    async def _load_audio(self, path: str) -> tuple[bytes, int]:
        full = Path(path) if Path(path).is_absolute() else (self.flow.base_dir or Path()) / path
        if full not in self._audio:
            self._audio[full] = await self._need_io().load_audio(full)
        return self._audio[full]

    # --- transfer and webhook ------------------------------------------------------------

    async def _transfer(self, step: Step, spec: Transfer) -> _Goto | _End:
        rendered = self._render(spec.to, step)
        await self._port.wait_played()  # let "connecting you" finish first
        # Read as `telebridge call` reads numbers: variables come from carriers (Plivo's
        # {{caller}} has no "+") and webhooks, not from a file checked beforehand.
        to = e164.parse(rendered)
        if to is not None:
            if await self._port.transfer(to, spec.timeout):
                return _End("transfer")
            logger.warning("%s transfer to %s was not accepted", self._tag, to)
        else:
            logger.error("%s step %r: %r is not an E.164 number", self._tag, step.id, rendered)
        if step.on_error is not None:
            return _Goto(step.on_error)
        return _End("error:transfer failed")

    async def _agent(self, step: Step, spec: Agent) -> _Goto | _End | None:
        """Run the agent step: where to go, or None for the step's routes to decide."""
        url = self._render(spec.url, step)
        try:
            link = await self._need_io().open_agent(url, spec.timeout)
        except AgentUnavailable as exc:
            return self._agent_failed(step, f"agent unavailable: {exc}")
        start = {
            "type": "start",
            "call_id": self.variables.get("call_id", ""),
            "carrier": self.variables.get("carrier", ""),
            "direction": self.variables.get("direction") or "inbound",
            "caller": self.variables.get("caller", ""),
            "callee": self.variables.get("callee", ""),
            "flow": self.flow.name,
            "step": step.id,
            "vars": dict(self.variables),
        }
        end: AgentEnd = await self._port.converse(
            link, start, listen=spec.listen, barge_in=spec.barge_in
        )
        if end.kind == "error":
            return self._agent_failed(step, end.detail)
        if end.kind == "hangup":
            await self._port.hangup(end.detail or "agent-hangup")
            return _End("hangup")
        if end.kind == "transfer" and end.to is not None:
            if await self._port.transfer(end.to, TRANSFER_TIMEOUT):
                return _End("transfer")
            logger.warning("%s transfer to %s asked by the agent was not accepted", self._tag,
                           end.to)  # fmt: skip
            return self._agent_failed(step, "transfer failed")
        if end.vars:
            self.variables.update(end.vars)
            self._recorder.vars_set(dict(end.vars))
        if end.step is not None:
            if end.step not in self.flow.steps:
                return self._agent_failed(step, f"agent named no such step {end.step!r}")
            return _Goto(end.step)
        return None

    def _agent_failed(self, step: Step, detail: str) -> _Goto | _End:
        if step.on_error is not None:
            logger.warning("%s step %r: %s; going to %r", self._tag, step.id, detail,
                           step.on_error)  # fmt: skip
            return _Goto(step.on_error)
        logger.warning("%s step %r: %s", self._tag, step.id, detail)
        return _End(f"error:{detail}")

    async def _call_webhook(self, step: Step, spec: Webhook) -> WebhookAnswer:
        return await call_webhook(self._need_io(), self.flow, step.id, spec, self.variables)

    def _need_io(self) -> FlowIO:
        if self._io is None:
            raise FlowRunError("this flow needs HTTP or audio files, and the runner has no FlowIO")
        return self._io


def _accept(digits: str, keys: str, gather: Gather) -> tuple[str, bool]:
    """Add `keys` to `digits`; done when the finish key came or there are enough digits."""
    for key in keys:
        if key == gather.finish_on_key:
            return digits, True
        digits += key
        if len(digits) >= gather.max_digits:
            return digits, True
    return digits, False
