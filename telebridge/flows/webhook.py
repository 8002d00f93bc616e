"""The webhook step's exchange: the call state a flow POSTs, and reading the answer (`vars`,
`say`, `next`) into a `WebhookAnswer`, or a `WebhookFailed` naming what was wrong. The HTTP
itself goes through the `FlowIO` it is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from telebridge.flows.model import Flow, Webhook
from telebridge.flows.ports import FetchFailed, FlowIO

__all__ = ["WebhookAnswer", "WebhookFailed", "call_webhook", "public_part"]


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    values: dict[str, str]
    say: str | None
    next: str | None
    detail: str


class WebhookFailed(Exception):
    """No usable answer (no answer, non-2xx, not the JSON expected); the text says which."""


async def call_webhook(
    io: FlowIO, flow: Flow, step: str, spec: Webhook, variables: dict[str, str]
) -> WebhookAnswer:
    """POST the call state for `step` to `spec.url` and read the answer."""
    payload = {
        "call_id": variables.get("call_id", ""),
        "carrier": variables.get("carrier", ""),
        "caller": variables.get("caller", ""),
        "callee": variables.get("callee", ""),
        "flow": flow.name,
        "step": step,
        "vars": dict(variables),
    }
    where = public_part(spec.url)
    try:
        status, content = await io.post_json(spec.url, payload, spec.timeout)
    except FetchFailed as exc:
        raise WebhookFailed(f"{where}: {exc}") from None
    if not 200 <= status < 300:
        raise WebhookFailed(f"{where}: HTTP {status}")
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        raise WebhookFailed(f"{where}: the answer is not JSON") from None
    return _read_answer(body, flow, where, f"HTTP {status}")


def _read_answer(body: object, flow: Flow, where: str, detail: str) -> WebhookAnswer:
    if not isinstance(body, dict):
        raise WebhookFailed(f"{where}: the answer is not a JSON object")
    raw_vars = body.get("vars", {})
    if not isinstance(raw_vars, dict):
        raise WebhookFailed(f"{where}: 'vars' is not an object")
    values: dict[str, str] = {}
    for name, value in raw_vars.items():
        if isinstance(value, bool):
            values[name] = "true" if value else "false"
        elif value is None:
            values[name] = ""
        elif isinstance(value, str | int | float):
            values[name] = str(value)
        else:
            raise WebhookFailed(f"{where}: var {name!r} is not a plain value")
    say, nxt = body.get("say"), body.get("next")
    if say is not None and not isinstance(say, str):
        raise WebhookFailed(f"{where}: 'say' is not text")
    if nxt is not None and (not isinstance(nxt, str) or nxt not in flow.steps):
        raise WebhookFailed(f"{where}: 'next' names no step of the flow: {nxt!r}")
    return WebhookAnswer(values, say, nxt, detail)


def public_part(url: str) -> str:
    """The URL without credentials, query or fragment, which may carry secrets."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
