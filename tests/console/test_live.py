"""Live calls in the console, end to end: a simulated call held open on the `hold` flow shows in
/console/api/live and in the event stream, is spoken to and hung up through the desk; and the
feed's figures on their own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from telebridge.console.feed import LiveFeed
from telebridge.simulator.bridge import LocalBridge
from telebridge.simulator.carrier import CallScript, SimResult
from tests.console.conftest import KEY, client, until
from tests.e2e.conftest import MakeBridge, mulaw_of

HOLD = "Please hold while we find someone who can help you with that today."
SAID = "Hello from the console."


def hold_call(lb: LocalBridge) -> tuple[str, asyncio.Task[SimResult]]:
    call = lb.plivo_call(CallScript(flow="hold"))
    return call.result.call_id, asyncio.create_task(lb.run(call))


async def live_call(http: httpx.AsyncClient, call_id: str) -> dict[str, Any] | None:
    calls = (await http.get("/console/api/live")).json()["calls"]
    return next((c for c in calls if c["call_id"] == call_id), None)


async def test_a_live_call_shows_and_is_spoken_to_and_hung_up(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_api_key=KEY)
    async with client(lb, key=KEY) as http:
        call_id, task = hold_call(lb)

        async def heard() -> dict[str, Any] | None:
            call = await live_call(http, call_id)
            return call if call and call["first_audio_ms"] is not None else None

        call = await until(heard)
        assert call["carrier"] == "plivo" and call["flow"] == "hold" and call["step"] == "wait"
        assert call["direction"] == "inbound" and call["state"] == "streaming"
        assert call["from"] == "+14155550100" and call["to"] == "+14155550199"
        assert call["barge_ins"] == 0 and call["started_at"].endswith("+00:00")
        assert 0 < call["first_audio_ms"] < 10_000 and call["seconds"] >= 0

        said = await http.post(f"/console/api/calls/{call_id}/say", json={"text": SAID})
        assert said.status_code == 202 and said.json()["call_id"] == call_id
        ended = await http.post(f"/console/api/calls/{call_id}/hangup", json={"reason": "done"})
        assert ended.status_code == 202

        result = await asyncio.wait_for(task, 30)
        assert result.violations == []
        assert [p.audio for p in result.prompts] == [mulaw_of(HOLD), mulaw_of(SAID)]
        assert await until(lambda: _gone(http, call_id))

        record = (await http.get(f"/console/api/calls/plivo/{call_id}")).json()
        kinds = [e["kind"] for e in record["timeline"]]
        # In time order: the carrier's hangup callback may be stamped before the bridge's last
        # notes, so the end is not always the last entry.
        assert kinds[0] == "started" and "ended" in kinds
        ended_by = [e for e in record["timeline"] if e["kind"] == "ended_by"]
        assert len(ended_by) == 1 and {"by": "api", "reason": "done"}.items() <= ended_by[0].items()


async def _gone(http: httpx.AsyncClient, call_id: str) -> bool:
    return await live_call(http, call_id) is None


async def test_actions_answer_as_the_call_api_does(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_api_key=KEY)
    async with client(lb, key=KEY) as http:
        unknown = await http.post("/console/api/calls/no-such-call/say", json={"text": "hi"})
        assert unknown.status_code == 404 and "error" in unknown.json()
        gone = await http.post("/console/api/calls/no-such-call/hangup", json={})
        assert gone.status_code == 404
        bad_id = await http.post("/console/api/calls/a%20b/hangup", json={})
        assert bad_id.status_code == 404
        for path in ("/console/api/calls/x/say", "/console/api/calls/x/hangup"):
            form = await http.post(path, data={"text": "hi"})  # what another site's form sends
            assert form.status_code == 415 and "application/json" in form.json()["error"]
            plain = await http.post(path, content=b'{"text": "hi"}')
            assert plain.status_code == 415
            typed = await http.post(
                path, content=b'{"text": "hi"}', headers={"Content-Type": "text/plain"}
            )
            assert typed.status_code == 415
        empty = await http.post("/console/api/calls/x/say", json={})
        assert empty.status_code == 400 and "text" in empty.json()["error"]
        huge = await http.post("/console/api/calls/x/say", json={"text": "a" * 70_000})
        assert huge.status_code == 413


async def sse_calls(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The `calls` events of an event stream, parsed."""
    event = ""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if event == "calls":
                yield json.loads("\n".join(data))
            event, data = "", []
        elif line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())


async def test_the_event_stream_sends_the_calls_and_each_change(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_api_key=KEY)
    async with (
        client(lb, key=KEY) as http,
        http.stream("GET", "/console/api/events") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_calls(response)
        async with asyncio.timeout(20):
            assert await anext(events) == {"calls": []}
            call_id, task = hold_call(lb)
            async for snapshot in events:
                if any(c["call_id"] == call_id for c in snapshot["calls"]):
                    break
            (shown,) = snapshot["calls"]
            assert shown["carrier"] == "plivo" and shown["flow"] == "hold"
            async for snapshot in events:  # the step and first audio follow
                if snapshot["calls"] and snapshot["calls"][0]["first_audio_ms"] is not None:
                    break
            assert snapshot["calls"][0]["step"] == "wait"
            hung = await http.post(f"/console/api/calls/{call_id}/hangup", json={})
            assert hung.status_code == 202
            async for snapshot in events:
                if not snapshot["calls"]:
                    break
            await task


async def test_the_feed_keeps_first_audio_and_barge_ins_per_call() -> None:
    now = [100.0]
    feed = LiveFeed(clock=lambda: now[0])
    desk_view = [{"call_id": "a", "carrier": "plivo"}, {"call_id": "queued-1"}]
    feed("a", "started", {"carrier": "plivo", "flow": "menu"})
    assert feed.version == 1
    now[0] += 0.25
    feed("a", "first_audio", {"added_ms": 3.0})
    now[0] += 1.0
    feed("a", "first_audio", {"added_ms": 2.0})  # later prompts: not the call's first audio
    feed("a", "barge_in", {})
    feed("a", "barge_in", {})
    feed("a", "play", {"seconds": 1.0})  # not a change of what is shown
    feed("b", "barge_in", {})  # a call that never started here
    assert feed.version == 5
    calls = feed.snapshot(desk_view)["calls"]
    assert calls[0] == {"call_id": "a", "carrier": "plivo", "seconds": 1.2,
                        "first_audio_ms": 250.0, "barge_ins": 2}  # fmt: skip
    assert calls[1] == {"call_id": "queued-1", "seconds": None, "first_audio_ms": None,
                        "barge_ins": 0}  # fmt: skip
    waiter = asyncio.create_task(feed.wait_change(feed.version, 30))
    await asyncio.sleep(0)
    assert not waiter.done()
    feed("a", "ended", {"outcome": "hangup"})
    await asyncio.wait_for(waiter, 5)
    assert feed.snapshot(desk_view)["calls"][0]["barge_ins"] == 0
    await asyncio.wait_for(feed.wait_change(0, 30), 5)  # out of date already: at once
