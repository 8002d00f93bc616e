"""The browser phone in a real browser: it places a call on a flow, the audio the page received
is the stand-in's audio for the flow's first prompt byte for byte, and keys from the dial pad
(clicked, or typed on the keyboard) route the flow."""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.browser.conftest import MakeServed, page_errors, screenshot, set_viewport, wait_for
from tests.e2e.conftest import l16_of

RATE = 16000
GREETING = "Hello from the test line."
HOLD = "Please hold while we find someone who can help you with that today."
MENU = "Press 1 for hours, or 2 to hear this again. This prompt is long enough to be cut off."

HEARD = """
const h = window.telebridgePhone.heard();
const b = new Uint8Array(h.buffer, h.byteOffset, h.byteLength);
let s = "";
for (let i = 0; i < b.length; i += 0x8000) {
  s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
}
return btoa(s);
"""


def heard(driver: WebDriver) -> bytes:
    return base64.b64decode(driver.execute_script(HEARD))


def heard_once(condition: Callable[[bytes], bool]) -> Callable[[WebDriver], bytes | None]:
    """A wait condition: what the page heard, once `condition(heard)` holds."""

    def check(driver: WebDriver) -> bytes | None:
        got = heard(driver)
        return got if condition(got) else None

    return check


def by_testid(driver: WebDriver, name: str):
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{name}"]')


def call_state(driver: WebDriver) -> str:
    return str(by_testid(driver, "call-state").text)


def place(driver: WebDriver, url: str, flow: str) -> None:
    driver.get(f"{url}/console/phone")
    place_on_this_page(driver, flow)


def place_on_this_page(driver: WebDriver, flow: str) -> None:
    assert call_state(driver) == "idle"
    assert driver.execute_script("return window.telebridgePhone.rate") == RATE
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f'option[value="{flow}"]'))
    Select(by_testid(driver, "flow-select")).select_by_value(flow)
    by_testid(driver, "call-button").click()


def steps_of_last_call(url: str, flow: str) -> list[str]:
    calls = httpx.get(f"{url}/console/api/history", params={"flow": flow}).json()["calls"]
    return list(calls[0]["steps"]) if calls and calls[0].get("outcome") else []


def timeline_kinds(url: str, flow: str) -> list[str]:
    """The timeline kinds of the last browser call on `flow` (none until it has ended)."""
    calls = httpx.get(f"{url}/console/api/history", params={"flow": flow}).json()["calls"]
    if not calls or not calls[0].get("outcome"):
        return []
    assert calls[0]["carrier"] == "browser"
    one = httpx.get(f"{url}/console/api/calls/browser/{calls[0]['call_id']}").json()
    return [entry["kind"] for entry in one["timeline"]]


def test_phone_hears_the_first_prompt_byte_for_byte(served: MakeServed, browser: WebDriver) -> None:
    bridge = served(telebridge_console="local")
    place(browser, bridge.url, "greet")
    expected = l16_of(GREETING, RATE)
    got = wait_for(browser, heard_once(lambda h: len(h) >= len(expected)))
    assert got[: len(expected)] == expected
    # The flow hangs up after its greeting: the bridge closes the stream.
    wait_for(browser, lambda d: call_state(d) == "ended")
    assert heard(browser)[: len(expected)] == expected
    # The page answered the prompt's mark once it had played it.
    assert wait_for(browser, lambda d: "mark" in timeline_kinds(bridge.url, "greet"))
    assert page_errors(browser) == []


def test_a_dial_pad_key_routes_the_flow(served: MakeServed, browser: WebDriver) -> None:
    bridge = served(telebridge_console="local")
    place(browser, bridge.url, "menu")
    wait_for(browser, lambda d: call_state(d) == "in-call")
    menu = l16_of(MENU, RATE)
    # Press while the menu is still playing (it is several seconds long): a barge-in.
    wait_for(browser, lambda d: len(heard(d)) >= RATE * 2)
    screenshot(browser, "phone")
    by_testid(browser, "dialpad-1").click()
    hours = l16_of("Nine to five.", RATE)
    got = wait_for(browser, heard_once(lambda h: hours in h))
    start = got.index(hours)
    # What played of the menu before the key is a prefix of it; the clear dropped the rest.
    assert 0 < start < len(menu) and menu.startswith(got[:start])
    wait_for(browser, lambda d: call_state(d) == "ended")
    assert wait_for(browser, lambda d: steps_of_last_call(bridge.url, "menu")) == [
        "menu", "hours", "goodbye",
    ]  # fmt: skip
    assert page_errors(browser) == []


def test_keys_typed_on_the_keyboard_press_dial_pad_keys(
    served: MakeServed, browser: WebDriver
) -> None:
    bridge = served(telebridge_console="local")
    place(browser, bridge.url, "pin")
    wait_for(browser, lambda d: call_state(d) == "in-call")
    ActionChains(browser).send_keys("12#").perform()
    more = l16_of("Got 12. Three more.", RATE)
    wait_for(browser, lambda d: more in heard(d))
    assert by_testid(browser, "call-state").text == "in-call"
    assert browser.find_element(By.ID, "keys-sent").text == "12#"
    by_testid(browser, "hangup-button").click()
    assert call_state(browser) == "ended"
    steps = wait_for(browser, lambda d: steps_of_last_call(bridge.url, "pin"))
    assert steps[:2] == ["code", "more"]
    assert page_errors(browser) == []


def test_a_transfer_is_shown_and_ends_the_call(served: MakeServed, browser: WebDriver) -> None:
    bridge = served(telebridge_console="local")
    place(browser, bridge.url, "transfer")
    wait_for(browser, lambda d: call_state(d) == "ended")
    assert "Transferred to +14155550123" in browser.find_element(By.ID, "phone-note").text
    assert heard(browser).startswith(l16_of("Connecting.", RATE))
    assert page_errors(browser) == []


# Counts what the page sends on its WebSocket (the send itself goes ahead unchanged).
WATCH_SENDS = """
window.sentAudio = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  if (typeof data !== "string") window.sentAudio.push(data.byteLength);
  return send.call(this, data);
};
"""


def test_the_microphone_goes_out_in_20_ms_frames(served: MakeServed, browser: WebDriver) -> None:
    bridge = served(telebridge_console="local")
    browser.get(f"{bridge.url}/console/phone")
    browser.execute_script(WATCH_SENDS)
    browser.find_element(By.ID, "use-mic").click()  # the fake device: a beep, allowed at once
    place_on_this_page(browser, "hold")
    wait_for(browser, lambda d: call_state(d) == "in-call")
    sent = "return window.sentAudio.length >= 25 && window.sentAudio"
    sizes = wait_for(browser, lambda d: d.execute_script(sent))
    assert set(sizes) == {640}
    # Unchecked: the microphone stops; the call goes on.
    browser.find_element(By.ID, "use-mic").click()
    count = len(browser.execute_script("return window.sentAudio"))
    # Half a second later by the bridge's paced audio, nothing more has gone out.
    later = len(heard(browser)) + RATE
    wait_for(browser, lambda d: len(heard(d)) >= min(later, len(l16_of(HOLD, RATE))))
    assert len(browser.execute_script("return window.sentAudio")) <= count + 2
    assert call_state(browser) == "in-call"
    by_testid(browser, "hangup-button").click()
    assert page_errors(browser) == []


def test_the_phone_fits_a_phone_screen(served: MakeServed, browser: WebDriver) -> None:
    bridge = served(telebridge_console="local")
    set_viewport(browser, 375, 700)
    browser.get(f"{bridge.url}/console/phone")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'option[value="menu"]'))
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 375
    screenshot(browser, "phone-narrow")
    browser.get(f"{bridge.url}/console")
    wait_for(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="flow-diagram-menu"]')
    )
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 375
    screenshot(browser, "console-narrow")
    assert page_errors(browser) == []
