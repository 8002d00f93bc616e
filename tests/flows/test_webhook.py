"""Tests for the webhook step (telebridge.flows.webhook) through the runner, against a real
local HTTP server."""

import json
import logging

import httpx
import pytest

from telebridge.flows.fetch import HttpFlowIO
from telebridge.flows.runner import FlowRunner
from tests.flows.fakes import CALL, FakePort, Hook, Recorder, make_flow, unused_port


def webhook_flow(url: str, *, on_error: bool = True) -> str:
    return f"""\
start: lookup
steps:
  lookup:
    webhook: {{url: "{url}", timeout: 0.3}}
    say: "Checking done."
    next: confirm
{"    on_error: sorry" if on_error else ""}
  confirm: {{say: "Balance {{{{balance}}}}.", hangup: true}}
  vip: {{say: "Hello VIP.", hangup: true}}
  sorry: {{say: "Sorry.", hangup: true}}
"""


async def run_hook(
    text: str, client: httpx.AsyncClient | None
) -> tuple[FakePort, FlowRunner, Recorder]:
    port = FakePort()
    recorder = Recorder()
    runner = FlowRunner(
        make_flow(text, "bank"),
        port,
        variables=dict(CALL),
        recorder=recorder,
        io=HttpFlowIO(client),
    )
    assert await runner.run() == "hangup"
    return port, runner, recorder


async def test_webhook_posts_call_state_and_applies_the_answer(
    hook: Hook, client: httpx.AsyncClient
) -> None:
    answer = {
        "vars": {"balance": 42, "vip": True, "note": None},
        "say": "{{raw}} text",
        "next": "vip",
    }
    hook.answers["/ivr"] = (200, json.dumps(answer).encode())
    port, runner, recorder = await run_hook(webhook_flow(hook.url + "/ivr"), client)
    [(method, path, headers, body)] = hook.requests
    assert (method, path) == ("POST", "/ivr")
    assert headers["content-type"] == "application/json"
    assert body == {
        "call_id": "c-1",
        "carrier": "plivo",
        "caller": "+15550001111",
        "callee": "+15550002222",
        "flow": "bank",
        "step": "lookup",
        "vars": {**CALL, "flow": "bank", "digits": ""},
    }
    assert port.said() == ["{{raw}} text", "Checking done.", "Hello VIP."]
    assert runner.variables["balance"] == "42"
    assert (runner.variables["vip"], runner.variables["note"]) == ("true", "")
    assert recorder.webhooks == [("lookup", True, "HTTP 200")]
    assert recorder.vars == [{"balance": "42", "vip": "true", "note": ""}]


async def test_webhook_without_next_keeps_the_steps_next(hook: Hook) -> None:
    hook.answers["/ivr"] = (200, b'{"vars": {"balance": "7"}}')
    port, _, _ = await run_hook(webhook_flow(hook.url + "/ivr"), None)  # the runner's own client
    assert port.said() == ["Checking done.", "Balance 7."]


@pytest.mark.parametrize(
    ("path", "status", "payload", "detail"),
    [
        ("/slow", 0, b"", "no answer within 0.3 s"),
        ("/fail", 500, b'{"next": "vip"}', "HTTP 500"),
        ("/notjson", 200, b"<html>hi</html>", "not JSON"),
        ("/list", 200, b"[1, 2]", "not a JSON object"),
        ("/badnext", 200, b'{"next": "nowhere"}', "names no step"),
        ("/badvars", 200, b'{"vars": {"x": [1]}}', "not a plain value"),
    ],
)
async def test_webhook_failures_go_to_on_error(
    hook: Hook, client: httpx.AsyncClient, path: str, status: int, payload: bytes, detail: str
) -> None:
    hook.answers[path] = (status, payload)
    port, runner, recorder = await run_hook(webhook_flow(hook.url + path), client)
    assert port.said() == ["Sorry."]  # straight to on_error: the step's say is skipped
    [(step, ok, text)] = recorder.webhooks
    assert (step, ok) == ("lookup", False)
    assert detail in text
    assert "x" not in runner.variables


async def test_webhook_failure_without_on_error_carries_on(
    hook: Hook, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    hook.answers["/fail"] = (503, b"")
    text = webhook_flow(hook.url + "/fail?token=s3cret", on_error=False)
    with caplog.at_level(logging.WARNING, logger="telebridge.flows.runner"):
        port, _, recorder = await run_hook(text, client)
    assert port.said() == ["Checking done.", "Balance ."]
    assert recorder.webhooks == [("lookup", False, f"{hook.url}/fail: HTTP 503")]
    assert "s3cret" not in caplog.text  # query strings may carry secrets: never logged


async def test_unreachable_webhook_is_a_failure(client: httpx.AsyncClient) -> None:
    port, _, recorder = await run_hook(
        webhook_flow(f"http://127.0.0.1:{unused_port()}/ivr"), client
    )
    assert port.said() == ["Sorry."]
    assert recorder.webhooks[0][1] is False
