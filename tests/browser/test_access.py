"""Access to the console in a real browser: without the key only the login form is shown and the
API answers 401; logging in with the key shows the console."""

from __future__ import annotations

import httpx
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from tests.browser.conftest import MakeServed, page_errors, screenshot, wait_for

KEY = "console-test-key-0123456789abcdef"
APP = '[data-testid="live-calls"], [data-testid="call-history"], [data-testid="flow-list"]'


def test_without_the_key_only_the_login_form(served: MakeServed, browser: WebDriver) -> None:
    bridge = served(telebridge_api_key=KEY)
    assert httpx.get(f"{bridge.url}/console/api/live").status_code == 401
    assert httpx.get(f"{bridge.url}/console/api/flows").status_code == 401
    assert httpx.get(f"{bridge.url}/console/static/console.js").status_code == 401
    assert httpx.get(f"{bridge.url}/console/phone").status_code == 401

    browser.get(f"{bridge.url}/console")
    field = browser.find_element(By.CSS_SELECTOR, 'input[type="password"]')
    label = browser.find_element(By.CSS_SELECTOR, f'label[for="{field.get_attribute("id")}"]')
    assert label.text == "API key"
    assert not browser.find_elements(By.CSS_SELECTOR, APP)
    screenshot(browser, "login")

    field.send_keys("not-the-key")
    field.submit()
    wait_for(browser, lambda d: "not accepted" in d.find_element(By.TAG_NAME, "body").text)
    assert not browser.find_elements(By.CSS_SELECTOR, APP)

    browser.find_element(By.CSS_SELECTOR, 'input[type="password"]').send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="live-calls"]'))
    # The event stream goes through with the session cookie.
    wait_for(browser, lambda d: d.find_element(By.ID, "live-status").text == "0 live calls")
    wait_for(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="flow-diagram-greet"]')
    )
    # The refusals were meant (401 pages); nothing else went wrong.
    assert page_errors(browser, allow=("status of 401",)) == []
