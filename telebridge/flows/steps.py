"""Reading one step of a flow file: its prompt, `set`, `gather`, `webhook`, `transfer`,
routes and `hangup`, checked value by value (the checks across steps are `model.check_flow`).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from yaml.nodes import MappingNode, Node, SequenceNode

from telebridge import e164
from telebridge.dtmf import DTMF_KEYS
from telebridge.flows import template
from telebridge.flows.model import (
    AGENT_TIMEOUT,
    TRANSFER_TIMEOUT,
    WEBHOOK_TIMEOUT,
    Agent,
    Gather,
    Pause,
    Play,
    PromptPart,
    Say,
    Step,
    Transfer,
    VarRoute,
    Webhook,
)
from telebridge.flows.nodes import NodeReader, line_of, scalar
from telebridge.flows.wav import WavError, read_wav

__all__ = ["GATHER_KEYS", "STEP_KEYS", "StepReader"]

STEP_KEYS = (
    "say", "voice", "speed", "language", "play", "pause", "set", "gather", "webhook",
    "transfer", "agent", "routes", "default", "next", "on_error", "hangup",
)  # fmt: skip
AGENT_KEYS = ("url", "listen", "timeout", "barge_in")
GATHER_KEYS = (
    "max_digits", "timeout", "finish_on_key", "retries", "reprompt", "no_input", "invalid",
    "barge_in",
)  # fmt: skip
_DIGIT_ROUTE = re.compile(r"[0-9*#A-D]+")


class StepReader(NodeReader):
    """Builds `Step`s from their nodes; with `base_dir`, `play:` files are looked up and checked."""

    def read_step(self, sid: str, line: int, node: Node) -> Step:
        keys = self.pairs(node, sid, "a step", STEP_KEYS, "step key")
        if keys is None:
            return Step(sid, line)
        # Step's keyword arguments, filled key by key; the types follow from each reader.
        fields: dict[str, object] = {}
        prompt: list[PromptPart] = []
        lines = {key: ln for key, (ln, _) in keys.items()}
        for key, (_, value) in keys.items():
            if key == "say" and (text := self.template(value, sid, "say")) is not None:
                prompt.append(Say(text))
            elif key == "play" and (path := self.text(value, sid, "play")) is not None:
                self.check_audio(path, line_of(value), sid)
                prompt.append(Play(path))
            elif key == "pause" and (seconds := self.number(value, sid, "pause", 0, 60)):
                prompt.append(Pause(seconds))
            elif key in ("voice", "language", "default", "next", "on_error"):
                fields[key] = self.text(value, sid, key)
            elif key == "speed":
                fields[key] = self.number(value, sid, "speed", 0.5, 2.0)
            elif key == "set":
                fields[key] = self.read_set(value, sid)
            elif key == "gather":
                fields[key] = self.read_gather(value, sid)
            elif key == "webhook":
                fields[key] = self.read_webhook(value, sid)
            elif key == "transfer":
                fields[key] = self.read_transfer(value, sid)
            elif key == "agent":
                fields[key] = self.read_agent(value, sid)
            elif key == "routes":
                fields["routes"], fields["var_routes"], route_lines = self.read_routes(value, sid)
                lines.update({f"routes.{k}": ln for k, ln in route_lines.items()})
            elif key == "hangup":
                fields[key] = self.read_hangup(value, sid)
        return Step(sid, line, prompt=tuple(prompt), lines=lines, **fields)  # type: ignore[arg-type]

    def read_set(self, node: Node, sid: str) -> dict[str, str]:
        values: dict[str, str] = {}
        for var, (line, value) in (self.pairs(node, sid, "set") or {}).items():
            if not template.is_variable_name(var):
                self.error(line, sid, f"set: {var!r} is not a variable name")
            text = self.template(value, sid, f"set: {var}")
            if text is not None:
                values[var] = text
        return values

    def read_gather(self, node: Node, sid: str) -> Gather | None:
        keys = self.pairs(node, sid, "gather", GATHER_KEYS)
        if keys is None:
            return None
        options: dict[str, object] = {}
        for key, (_, value) in keys.items():
            what = f"gather: {key}"
            if key in ("max_digits", "retries"):
                low, high = (1, 64) if key == "max_digits" else (0, 10)
                number = self.number(value, sid, what, low, high, whole=True)
                options[key] = None if number is None else int(number)
            elif key == "timeout":
                options[key] = self.number(value, sid, what, 0, 600)
            elif key == "barge_in":
                options[key] = self.flag(value, sid, what)
            elif key == "finish_on_key":
                key_text = self.text(value, sid, what)
                if key_text is not None and (len(key_text) != 1 or key_text not in DTMF_KEYS):
                    self.error(line_of(value), sid, f"{what} must be one key such as '#'")
                options[key] = key_text
            else:
                options[key] = self.template(value, sid, what)
        return Gather(**{k: v for k, v in options.items() if v is not None})  # type: ignore[arg-type]

    def read_webhook(self, node: Node, sid: str) -> Webhook | None:
        keys = self.pairs(node, sid, "webhook", ("url", "timeout"))
        if keys is None:
            return None
        if "url" not in keys:
            self.error(line_of(node), sid, "webhook needs a 'url'")
            return None
        url = self.text(keys["url"][1], sid, "webhook: url")
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                self.error(keys["url"][0], sid, f"webhook url {url!r} must be http:// or https://")
        timeout = self.timeout(keys, sid, "webhook", 60, WEBHOOK_TIMEOUT)
        return Webhook(url, timeout) if url is not None and timeout is not None else None

    def read_agent(self, node: Node, sid: str) -> Agent | None:
        keys = self.pairs(node, sid, "agent", AGENT_KEYS)
        if keys is None:
            return None
        if "url" not in keys:
            self.error(line_of(node), sid, "agent needs a 'url' (ws:// or wss://)")
            return None
        url = self.template(keys["url"][1], sid, "agent: url")
        if url is not None:
            parts = urlsplit(url)
            fixed = "{{" not in (parts.scheme + parts.netloc)
            if fixed and (parts.scheme not in ("ws", "wss") or not parts.netloc):
                self.error(keys["url"][0], sid, f"agent url {url!r} must be ws:// or wss://")
        flags: dict[str, bool] = {}
        for flag in ("listen", "barge_in"):
            if (
                flag in keys
                and (value := self.flag(keys[flag][1], sid, f"agent: {flag}")) is not None
            ):
                flags[flag] = value
        timeout = self.timeout(keys, sid, "agent", 60, AGENT_TIMEOUT)
        if url is None or timeout is None:
            return None
        return Agent(url, timeout=timeout, **flags)

    def read_transfer(self, node: Node, sid: str) -> Transfer | None:
        keys = self.pairs(node, sid, "transfer", ("to", "timeout"))
        if keys is None:
            return None
        if "to" not in keys:
            self.error(line_of(node), sid, "transfer needs 'to' (a number such as +14155550123)")
            return None
        to = self.template(keys["to"][1], sid, "transfer: to")
        # A file holds numbers in the canonical form only: "4155550123" could be a national
        # number missing its country code, which read as E.164 would ring someone abroad.
        if to is not None and "{{" not in to and not e164.is_e164(to):
            self.error(keys["to"][0], sid, f"transfer number {to!r} is not E.164: {e164.RULE}")
        timeout = self.timeout(keys, sid, "transfer", 600, TRANSFER_TIMEOUT)
        return Transfer(to, timeout) if to is not None and timeout is not None else None

    def read_routes(
        self, node: Node, sid: str
    ) -> tuple[dict[str, str], tuple[VarRoute, ...], dict[str, int]]:
        if isinstance(node, SequenceNode):
            read = [self.read_var_route(item, sid) for item in node.value]
            return {}, tuple(route for route in read if route is not None), {}
        routes: dict[str, str] = {}
        lines: dict[str, int] = {}
        for key, (line, value) in (self.pairs(node, sid, "routes") or {}).items():
            if not _DIGIT_ROUTE.fullmatch(key):
                self.error(line, sid, f"route key {key!r} must be keys 0-9, *, # (or a list form)")
            target = self.text(value, sid, f"route {key!r}")
            if target is not None:
                routes[key] = target
                lines[key] = line
        return routes, (), lines

    def read_var_route(self, node: Node, sid: str) -> VarRoute | None:
        keys = self.pairs(node, sid, "a route", ("when", "next"))
        if keys is None:
            return None
        if "when" not in keys or "next" not in keys:
            self.error(line_of(node), sid, "a route in list form needs 'when' and 'next'")
            return None
        when: list[tuple[str, str]] = []
        for var, (line, value) in (self.pairs(keys["when"][1], sid, "when") or {}).items():
            if not template.is_variable_name(var):
                self.error(line, sid, f"when: {var!r} is not a variable name")
            text = self.text(value, sid, f"when: {var}")
            if text is not None:
                when.append((var, text))
        target = self.text(keys["next"][1], sid, "next")
        if not when or target is None:
            if not when:
                self.error(line_of(node), sid, "'when' must name at least one variable")
            return None
        return VarRoute(tuple(when), target, line_of(node))

    def read_hangup(self, node: Node, sid: str) -> str | None:
        if isinstance(node, MappingNode):
            keys = self.pairs(node, sid, "hangup", ("reason",)) or {}
            if "reason" in keys:
                return self.text(keys["reason"][1], sid, "hangup: reason")
            return "completed"
        value = scalar(node)
        if not isinstance(value, bool):
            self.error(line_of(node), sid, "hangup must be true or {reason: ...}")
            return None
        return "completed" if value else None

    def check_audio(self, path: str, line: int, sid: str) -> None:
        if self.base_dir is None:
            return
        full = self.base_dir / path
        try:
            read_wav(full, header_only=True)
        except WavError as exc:
            if exc.kind == "missing":
                self.error(line, sid, f"audio file {str(full)!r} not found")
            elif exc.kind == "unreadable":
                self.error(
                    line, sid, f"audio file {str(full)!r} is not a readable WAV file: {exc.detail}"
                )
            else:
                self.error(line, sid, f"audio file {str(full)!r} must be 16-bit mono PCM WAV")
