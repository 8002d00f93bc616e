"""Browser fixtures: Debian's headless Chromium under Selenium, the real bridge (with the Waves
stand-in) served from an event loop on its own thread so a test can drive the blocking browser,
and screenshots into the test run's artefacts."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from telebridge.simulator.bridge import LocalBridge
from telebridge.simulator.carrier import SimResult, SimulatedCall
from telebridge.tts import WavesClient
from telebridge.tts.standin import Faults, StandinServer
from tests.e2e.conftest import FLOWS

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
)
VIEWPORT = (1000, 700)  # the page's size in screenshots
ROOT = Path(__file__).resolve().parents[2]
WAIT = 20.0  # seconds a condition may take on a busy 2-core machine

T = TypeVar("T")


class ServedBridge:
    """A `LocalBridge` and the Waves stand-in on an event loop of their own (a thread)."""

    def __init__(self, tmp_path: Path, overrides: dict[str, Any]) -> None:
        self._values: dict[str, Any] = {
            "waves_api_key": None,
            "telebridge_flows_dir": FLOWS,
            "telebridge_flow": "greet",
            "telebridge_db": tmp_path / "calls.db",
            "telebridge_mark_timeout": 2.0,
            **overrides,
        }
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bridge", daemon=True)
        self._stack = contextlib.AsyncExitStack()
        self._thread.start()
        self.lb: LocalBridge = self.run(self._enter())
        self.url = self.lb.url

    async def _enter(self) -> LocalBridge:
        stack = self._stack
        standin = await stack.enter_async_context(StandinServer(faults=Faults()))
        tts = await stack.enter_async_context(
            WavesClient(standin.url, standin.api_key, first_chunk_timeout=1.2)
        )
        return await stack.enter_async_context(LocalBridge(tts=tts, **self._values))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT) -> T:
        """Run `coro` on the bridge's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def place(
        self, make: Callable[[LocalBridge], SimulatedCall]
    ) -> tuple[SimulatedCall, concurrent.futures.Future[SimResult]]:
        """Start a simulated carrier call (made by `make`); its result arrives when it ends."""

        async def create() -> SimulatedCall:
            return make(self.lb)

        call = self.run(create())
        return call, asyncio.run_coroutine_threadsafe(self.lb.run(call), self.loop)

    def close(self) -> None:
        try:
            self.run(self._stack.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(WAIT)
            self.loop.close()


MakeServed = Callable[..., ServedBridge]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[MakeServed]:
    """Start bridges (settings as keyword overrides) that stop at the end of the test."""
    bridges: list[ServedBridge] = []

    def make(**overrides: Any) -> ServedBridge:
        bridge = ServedBridge(tmp_path, overrides)
        bridges.append(bridge)
        return bridge

    yield make
    for bridge in reversed(bridges):
        bridge.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Debian's Chromium, headless, with a fresh profile, a fake microphone and autoplay."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.fail(
                f"{path} is missing: the browser tests need Debian's packages chromium and "
                f"chromium-driver (apt-get install {package})"
            )
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        set_viewport(driver, *VIEWPORT)
        yield driver
    finally:
        with contextlib.suppress(WebDriverException):
            driver.quit()


def set_viewport(driver: WebDriver, width: int, height: int) -> None:
    """Size the window so that the page (the window less its frame) is `width` x `height`."""
    frame = driver.execute_script("return [outerWidth - innerWidth, outerHeight - innerHeight]")
    driver.set_window_size(width + frame[0], height + frame[1])


def wait_for(
    driver: WebDriver, condition: Callable[[WebDriver], T | None], timeout: float = WAIT
) -> T:
    """The first truthy value of `condition(driver)` within `timeout` seconds."""
    result = WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    assert result is not None  # `until` returns only a truthy value
    return result


def page_errors(driver: WebDriver, *, allow: tuple[str, ...] = ()) -> list[str]:
    """Errors logged since the last look (script errors, loads CSP refused), beyond the missing
    favicon and messages containing any of `allow`."""
    allowed = ("favicon.ico", *allow)
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [
        e["message"]
        for e in entries
        if e.get("level") == "SEVERE" and not any(a in e.get("message", "") for a in allowed)
    ]


def artefacts() -> Path:
    folder = Path(os.environ.get("TELEBRIDGE_ARTEFACTS") or ROOT / "test-artefacts") / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(driver: WebDriver, name: str) -> Path:
    """Save what the browser shows now as `<artefacts>/browser/<name>.png`."""
    path = artefacts() / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot for {name}"
    return path
