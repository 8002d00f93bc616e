"""A whole bridge on loopback: the real server stack, a fake carrier REST API and simulated calls.

`LocalBridge` serves the real app (uvicorn on a free port) with made-up carrier credentials whose
REST calls go to a local fake, so `telebridge simulate`, `make demo` and the end-to-end tests all
exercise the same code a production call does.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from telebridge.call.ports import CallObserver
from telebridge.flows.fetch import KEEPALIVE_S
from telebridge.server import WS_MAX_MESSAGE, Bridge, create_app
from telebridge.settings import Settings, load_settings
from telebridge.simulator.carrier import CallScript, SimResult, SimulatedCall
from telebridge.simulator.fake_plivo_api import FakePlivoApi
from telebridge.simulator.plivo import PlivoCall
from telebridge.simulator.serving import ServedApp, bind_loopback
from telebridge.simulator.vonage import VonageCall
from telebridge.tts import Synthesizer

SIM_PLIVO_AUTH_ID = "MA" + "SIMULATED" + "0" * 9
SIM_PLIVO_AUTH_TOKEN = "simulated-plivo-token"  # made-up credentials for local calls
SIM_VONAGE_SECRET = "simulated-vonage-signature-secret"
# Idle connections to the bridge expire below uvicorn's 5 s keep-alive timeout.
_LIMITS = httpx.Limits(keepalive_expiry=KEEPALIVE_S)


class LocalBridge:
    """The real bridge on a loopback port, with fake carrier APIs beside it."""

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        tts: Synthesizer | None = None,
        observer: CallObserver | None = None,
        **overrides: Any,
    ) -> None:
        self._base_settings = settings
        self._overrides = overrides
        self._tts = tts
        self._observer = observer
        self.plivo_api = FakePlivoApi(SIM_PLIVO_AUTH_ID, SIM_PLIVO_AUTH_TOKEN)
        self._calls: dict[str, SimulatedCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stack = contextlib.AsyncExitStack()
        self.bridge: Bridge | None = None
        self.url = ""

    async def __aenter__(self) -> LocalBridge:
        await self._stack.__aenter__()
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        plivo_api = await self._stack.enter_async_context(ServedApp(self.plivo_api.app()))
        self.plivo_api.on_hangup = self._rest_hangup
        self.plivo_api.on_transfer = self._rest_transfer
        sock = bind_loopback()
        # Closed by the stack however start-up ends (bad settings, a lifespan that fails), not
        # only by the server once it runs; a second close is harmless.
        self._stack.callback(sock.close)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        values: dict[str, Any] = {
            "telebridge_public_url": self.url,
            "plivo_auth_id": SIM_PLIVO_AUTH_ID,
            "plivo_auth_token": SIM_PLIVO_AUTH_TOKEN,
            "plivo_api_url": plivo_api.url,
            "vonage_signature_secret": SIM_VONAGE_SECRET,
        }
        values.update(self._overrides)
        if self._base_settings is not None:
            settings = load_settings(None, **{**self._base_settings.model_dump(), **values})
        else:
            settings = load_settings(None, **values)
        self.bridge = Bridge.from_settings(settings)
        if self._tts is not None:
            self.bridge.tts = self._tts
        if self._observer is not None:
            self.bridge.observers.append(self._observer)
        served = ServedApp(create_app(self.bridge), sock, ws_max_size=WS_MAX_MESSAGE)
        await self._stack.enter_async_context(served)
        self.http = await self._stack.enter_async_context(
            httpx.AsyncClient(timeout=10, limits=_LIMITS)
        )

    def client(self, *, key: str | None = None, timeout: float = 10) -> httpx.AsyncClient:
        """A new HTTP client of this bridge, closed by the caller; with `key`, a Bearer key.

        Its idle connections expire before uvicorn closes them (5 s), so a request after a pause
        never goes out on a connection the server is closing (an `httpx.ReadError`).
        """
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout, limits=_LIMITS
        )

    @property
    def settings(self) -> Settings:
        assert self.bridge is not None
        return self.bridge.settings

    async def _rest_hangup(self, call_id: str) -> None:
        call = self._calls.get(call_id)
        if call is not None:
            await call.end("rest-hangup")

    async def _rest_transfer(self, call_id: str, body: dict[str, Any]) -> None:
        # Plivo moves the A leg to the new XML: the stream (and with it our part) ends.
        call = self._calls.get(call_id)
        if call is not None:
            task = asyncio.create_task(call.end("transferred"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def plivo_call(self, script: CallScript | None = None, **kwargs: Any) -> PlivoCall:
        call = PlivoCall(self.url, SIM_PLIVO_AUTH_TOKEN, script, **kwargs)
        self._calls[call.result.call_id] = call
        return call

    def vonage_call(self, script: CallScript | None = None, **kwargs: Any) -> VonageCall:
        secret = self.settings.vonage_signature_secret
        kwargs.setdefault("rate", self.settings.vonage_audio_rate)
        call = VonageCall(self.url, secret.get_secret_value() if secret else None, script, **kwargs)
        self._calls[call.result.call_id] = call
        return call

    async def run(self, call: SimulatedCall) -> SimResult:
        self._calls[call.result.call_id] = call
        try:
            return await call.run(self.http)
        finally:
            self._calls.pop(call.result.call_id, None)
