"""What a screen reader and a keyboard need of the console's pages: every control named, the
landmarks, live regions for what changes by itself, a visible focus, and the dial pad in the
tab order in the order it is drawn."""

from __future__ import annotations

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser.conftest import MakeServed, page_errors, wait_for

# Controls without a name a screen reader could say (a label, aria-label or their text).
UNNAMED = """
const named = (e) => (e.labels && e.labels.length) || e.getAttribute("aria-label")
  || e.getAttribute("aria-labelledby") || (e.tagName === "BUTTON" && e.textContent.trim());
return [...document.querySelectorAll("input, select, textarea, button")]
  .filter((e) => e.type !== "hidden" && !named(e)).map((e) => e.outerHTML);
"""


@pytest.mark.parametrize("page", ["/console", "/console/phone"])
def test_every_control_is_named_and_the_page_has_landmarks(
    served: MakeServed, browser: WebDriver, page: str
) -> None:
    bridge = served(telebridge_console="local")
    browser.get(f"{bridge.url}{page}")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, 'option[value="menu"], svg'))
    assert browser.execute_script(UNNAMED) == []
    assert len(browser.find_elements(By.TAG_NAME, "main")) == 1
    assert browser.find_elements(By.CSS_SELECTOR, "header nav[aria-label]")
    assert browser.find_elements(By.TAG_NAME, "h1")
    live = {e.get_attribute("id") for e in browser.find_elements(By.CSS_SELECTOR, "[aria-live]")}
    assert ("call-state" if page.endswith("phone") else "live-status") in live
    # The first Tab reaches the skip link, drawn with a visible focus ring.
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    focused = browser.switch_to.active_element
    assert focused.get_attribute("class") == "skip-link"
    assert focused.value_of_css_property("outline-style") == "solid"
    assert page_errors(browser) == []


def test_the_dial_pad_is_tabbed_through_in_its_drawn_order(
    served: MakeServed, browser: WebDriver
) -> None:
    bridge = served(telebridge_console="local", telebridge_flow="hold")
    browser.get(f"{bridge.url}/console/phone")
    browser.find_element(By.CSS_SELECTOR, '[data-testid="call-button"]').click()
    wait_for(browser, lambda d: d.find_element(By.ID, "call-state").text == "in-call")
    one = browser.find_element(By.CSS_SELECTOR, '[data-testid="dialpad-1"]')
    browser.execute_script("arguments[0].focus()", one)
    order = []
    for _ in range(12):
        order.append(browser.switch_to.active_element.get_attribute("data-testid"))
        browser.switch_to.active_element.send_keys(Keys.TAB)
    keys = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "star", "0", "hash"]
    assert order == [f"dialpad-{k}" for k in keys]
    browser.find_element(By.CSS_SELECTOR, '[data-testid="hangup-button"]').click()
    assert page_errors(browser) == []
