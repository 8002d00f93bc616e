"""Signing keys shared by processes with the same settings: one instance answers, another streams.

Behind a load balancer the answer webhook and the stream WebSocket of one call may reach two
different instances. With no `TELEBRIDGE_SECRET`, both derive the stream-token key from the
carrier credentials they share, so the token one minted opens the stream on the other.
"""

from __future__ import annotations

from typing import Any

import httpx

from telebridge.server import WS_MAX_MESSAGE, Bridge, create_app
from telebridge.settings import load_settings
from telebridge.simulator.bridge import SIM_PLIVO_AUTH_TOKEN
from telebridge.simulator.plivo import PlivoCall
from telebridge.simulator.serving import ServedApp
from telebridge.tts import WavesClient
from tests.e2e.conftest import MakeBridge, mulaw_of

GREETING = "Hello from the test line."


class BalancedPlivoCall(PlivoCall):
    """A Plivo call whose stream the load balancer sends to another instance than its answer."""

    def __init__(self, answer_base: str, stream_base: str, **kwargs: Any) -> None:
        super().__init__(answer_base, SIM_PLIVO_AUTH_TOKEN, **kwargs)
        self._from = answer_base.replace("http://", "ws://")
        self._to = stream_base.replace("http://", "ws://")

    async def answer(self, http: httpx.AsyncClient) -> str | None:
        url = await super().answer(http)
        assert url is not None and url.startswith(self._from + "/plivo/stream?token=")
        return self._to + url[len(self._from) :]


async def test_a_stream_token_minted_by_one_instance_streams_on_another(
    make_bridge: MakeBridge, tts: WavesClient
) -> None:
    first = await make_bridge()
    assert first.settings.telebridge_secret is None  # the keys come from the carrier credentials
    second = Bridge.from_settings(load_settings(None, **first.settings.model_dump()))
    second.tts = tts
    started: list[str] = []

    def on_event(call_id: str, kind: str, fields: dict[str, Any]) -> None:
        if kind == "started":
            started.append(call_id)

    second.observers.append(on_event)
    async with ServedApp(create_app(second), ws_max_size=WS_MAX_MESSAGE) as served:
        call = BalancedPlivoCall(first.url, served.url)
        result = await first.run(call)

    assert result.violations == []
    assert result.heard == mulaw_of(GREETING)
    assert started == [result.call_id]  # the second instance ran the call
