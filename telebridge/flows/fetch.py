"""The flow runner's I/O edge: the webhook step's HTTP POST, the audio files `play` reads and
the agent step's WebSocket (`agent_socket`).

`HttpFlowIO` implements the runner's `FlowIO` port. The server gives each call one, on its shared
HTTP client; without a client it opens its own and `aclose()` closes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import httpx

from telebridge.flows.agent_socket import open_agent
from telebridge.flows.ports import AgentLink, AgentUnavailable, FetchFailed, FlowRunError
from telebridge.flows.wav import WavError, read_wav

# An idle pooled connection is given up after this long: below the 5 s after which uvicorn,
# Node's http server and Apache close one, so a webhook is never sent on a connection the
# application's server is closing at that moment (an httpx.ReadError, and a failed step).
KEEPALIVE_S = 2.0


def webhook_client() -> httpx.AsyncClient:
    """An HTTP client for the applications' webhooks (a call's `fetch` steps)."""
    return httpx.AsyncClient(limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S))


class HttpFlowIO:
    def __init__(
        self, http: httpx.AsyncClient | None = None, *, agent_secret: str | None = None
    ) -> None:
        self._http = http
        self._agent_secret = agent_secret
        self._own: httpx.AsyncClient | None = None

    async def post_json(
        self,
        url: str,
        payload: Mapping[str, object],
        timeout: float,  # noqa: ASYNC109
    ) -> tuple[int, bytes]:
        client = self._http
        if client is None:
            client = self._own = self._own or webhook_client()
        try:
            # Both clocks: httpx's covers connect/read, asyncio's the whole exchange.
            async with asyncio.timeout(timeout):
                response = await client.post(url, json=payload, timeout=timeout)
        except (TimeoutError, httpx.TimeoutException):
            raise FetchFailed(f"no answer within {timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise FetchFailed(type(exc).__name__) from None
        return response.status_code, response.content

    async def load_audio(self, path: Path) -> tuple[bytes, int]:
        try:
            return await asyncio.to_thread(read_wav, path)
        except WavError as exc:
            if exc.kind == "format":
                raise FlowRunError(f"{path}: not 16-bit mono PCM WAV") from None
            raise FlowRunError(f"{path}: cannot read audio: {exc.detail}") from None

    async def open_agent(self, url: str, timeout: float) -> AgentLink:  # noqa: ASYNC109
        if self._agent_secret is None:
            raise AgentUnavailable("TELEBRIDGE_AGENT_SECRET is not set")
        return await open_agent(url, timeout, self._agent_secret)

    async def aclose(self) -> None:
        if self._own is not None:
            await self._own.aclose()
            self._own = None
