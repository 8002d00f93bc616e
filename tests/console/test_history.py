"""Ended calls in the console: the history with its filters (and refusals of bad ones), and one
call's timeline from the call log, each kind in order with its time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from telebridge.simulator.bridge import LocalBridge
from telebridge.simulator.carrier import CallScript
from tests.console.conftest import KEY, client
from tests.e2e.conftest import MakeBridge

MENU = "Press 1 for hours, or 2 to hear this again. This prompt is long enough to be cut off."


@pytest.fixture
async def calls(make_bridge: MakeBridge) -> tuple[LocalBridge, dict[str, str], datetime]:
    """A bridge that took three calls, one after another: a menu choice by key (plivo), a
    greeting (vonage), and a caller who hung up while held (plivo)."""
    lb = await make_bridge(telebridge_api_key=KEY)
    before = datetime.now(UTC) - timedelta(seconds=1)
    ids = {}
    menu = await lb.run(lb.plivo_call(CallScript(flow="menu", digits="1", press_after=0.5)))
    ids["menu"] = menu.call_id
    ids["greet"] = (await lb.run(lb.vonage_call(CallScript(flow="greet")))).call_id
    held = await lb.run(lb.plivo_call(CallScript(flow="hold", hangup_after=0.5)))
    ids["hold"] = held.call_id
    assert lb.bridge is not None and lb.bridge.calllog is not None
    assert lb.bridge.calllog.flush(10)

    async def recorded() -> bool:  # the stream's end is recorded once the bridge lets go
        return not lb.bridge.calls if lb.bridge else False

    async with asyncio.timeout(10):
        while not await recorded():
            await asyncio.sleep(0.02)
    return lb, ids, before


async def history(http: httpx.AsyncClient, **params: str) -> list[str]:
    response = await http.get("/console/api/history", params=params)
    assert response.status_code == 200, response.text
    return [call["call_id"] for call in response.json()["calls"]]


async def test_history_filters_calls_newest_first(
    calls: tuple[LocalBridge, dict[str, str], datetime],
) -> None:
    lb, ids, before = calls
    menu, greet, hold = ids["menu"], ids["greet"], ids["hold"]
    async with client(lb, key=KEY) as http:
        assert await history(http) == [hold, greet, menu]
        first = (await http.get("/console/api/history")).json()["calls"][0]
        assert "notes" not in first and "webhooks" not in first
        assert first["flow"] == "hold" and first["outcome"] == "caller-hangup"
        assert (first["from"], first["to"]) == ("+14155550100", "+14155550199")
        assert await history(http, carrier="plivo") == [hold, menu]
        assert await history(http, carrier="vonage") == [greet]
        assert await history(http, flow="menu") == [menu]
        assert await history(http, outcome="hangup") == [greet, menu]
        assert await history(http, outcome="caller") == [hold]
        assert await history(http, outcome="hang%") == []  # a wildcard is a plain character
        assert await history(http, carrier="plivo", flow="hold") == [hold]
        assert await history(http, limit="2") == [hold, greet]
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert await history(http, since=later) == []
        assert await history(http, since=before.isoformat()) == [hold, greet, menu]
        earlier = before.isoformat().replace("+00:00", "Z")
        assert await history(http, until=earlier) == []
        assert await history(http, since=earlier, until=later) == [hold, greet, menu]
        naive = before.replace(tzinfo=None).isoformat()  # taken as UTC
        assert await history(http, since=naive) == [hold, greet, menu]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("limit", "0"),
        ("limit", "1001"),
        ("limit", "ten"),
        ("limit", "-1"),
        ("since", "yesterday"),
        ("until", "2024-13-01T00:00:00Z"),
        ("carrier", "plivo;drop"),
        ("flow", "a b"),
        ("outcome", "x" * 129),
    ],
)
async def test_history_refuses_bad_filters_by_name(
    make_bridge: MakeBridge, name: str, value: str
) -> None:
    lb = await make_bridge(telebridge_api_key=KEY)
    async with client(lb, key=KEY) as http:
        response = await http.get("/console/api/history", params={name: value})
        assert response.status_code == 400
        assert response.json()["error"].startswith(f"{name}:")


async def test_a_calls_timeline_shows_what_happened_in_order(
    calls: tuple[LocalBridge, dict[str, str], datetime],
) -> None:
    lb, ids, _ = calls
    async with client(lb, key=KEY) as http:
        response = await http.get(f"/console/api/calls/plivo/{ids['menu']}")
        assert response.status_code == 200
        body = response.json()
        call, timeline = body["call"], body["timeline"]
    assert call["call_id"] == ids["menu"] and call["steps"] == ["menu", "hours", "goodbye"]
    assert call["outcome"] == "hangup" and call["digits"] == "1"
    times = [entry["at"] for entry in timeline]
    assert times == sorted(times) and all(t.endswith("Z") for t in times)
    shown = [
        (e["kind"], e["step"])
        for e in timeline
        if e["kind"] in ("started", "step", "prompt", "barge_in", "digits", "hangup", "ended")
    ]
    assert shown == [
        ("started", None),
        ("step", "menu"), ("prompt", "menu"), ("barge_in", "menu"), ("digits", "menu"),
        ("step", "hours"), ("prompt", "hours"),
        ("step", "goodbye"), ("prompt", "goodbye"), ("hangup", "goodbye"),
        ("ended", None),
    ]  # fmt: skip
    prompts = [e for e in timeline if e["kind"] == "prompt"]
    assert [p["text"] for p in prompts] == [MENU, "Nine to five.", "Goodbye."]
    assert all(isinstance(p["ttfb_ms"], float) and p["ttfb_ms"] >= 0 for p in prompts)
    assert next(e for e in timeline if e["kind"] == "digits")["digits"] == "1"
    marks = [e["mark"] for e in timeline if e["kind"] == "mark"]
    assert marks == ["utterance-2", "utterance-3"]  # the menu was cut off before its mark
    assert next(e for e in timeline if e["kind"] == "hangup")["reason"] is not None
    ended = next(e for e in timeline if e["kind"] == "ended")
    assert ended["kind"] == "ended" and ended["outcome"] == "hangup"
    started = timeline[0]
    assert started["flow"] == "menu" and started["direction"] == "inbound"


async def test_a_transfer_shows_in_the_timeline(make_bridge: MakeBridge) -> None:
    # The fake Plivo API ends the stream as soon as it is asked to transfer.
    lb = await make_bridge(telebridge_api_key=KEY)
    result = await lb.run(lb.plivo_call(CallScript(flow="transfer")))
    async with client(lb, key=KEY) as http:

        async def timeline() -> list[dict[str, object]]:
            found = await http.get(f"/console/api/calls/plivo/{result.call_id}")
            entries: list[dict[str, object]] = found.json()["timeline"]
            return entries if entries[-1]["kind"] == "ended" else []

        async with asyncio.timeout(10):
            while not (entries := await timeline()):
                await asyncio.sleep(0.05)
    kinds = [e["kind"] for e in entries]
    assert kinds.index("mark") < kinds.index("transfer")  # "Connecting." played first
    transfer = entries[kinds.index("transfer")]
    assert transfer["to"] == "+14155550123" and transfer["step"] == "agent"


async def test_an_unknown_call_is_404(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_api_key=KEY)
    async with client(lb, key=KEY) as http:
        for path in ("/console/api/calls/plivo/nope", "/console/api/calls/twilio/x",
                     "/console/api/calls/plivo/a%20b"):  # fmt: skip
            response = await http.get(path)
            assert response.status_code == 404 and "error" in response.json()
