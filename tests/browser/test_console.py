"""The console in a real browser: a live call placed by a simulated carrier appears in the live
table (updated from the event stream), is hung up with the row's button, and its timeline shows
the steps and prompts once it has ended; the flows are listed and drawn."""

from __future__ import annotations

from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from telebridge.simulator.carrier import CallScript
from tests.browser.conftest import MakeServed, page_errors, screenshot, wait_for
from tests.e2e.conftest import mulaw_of

HOLD = "Please hold while we find someone who can help you with that today."
SAID = "A word from the console."


def by_testid(name: str) -> tuple[str, str]:
    return By.CSS_SELECTOR, f'[data-testid="{name}"]'


def shown_timeline(driver: WebDriver) -> WebElement | None:
    panel = driver.find_element(*by_testid("call-timeline"))
    return panel if panel.is_displayed() else None


def test_console_lists_a_live_call_then_shows_its_timeline(
    served: MakeServed, browser: WebDriver
) -> None:
    bridge = served(telebridge_console="local", telebridge_flow="hold")
    call, ended = bridge.place(lambda lb: lb.plivo_call(CallScript(caller="14155550100")))
    browser.get(f"{bridge.url}/console")

    row_css = f'[data-testid="live-calls"] tr[data-call-id="{call.result.call_id}"]'

    def live_row(driver: WebDriver) -> WebElement | None:
        rows = driver.find_elements(By.CSS_SELECTOR, row_css)
        # The row is there once the first event has arrived; the step once the flow is in it.
        return rows[0] if rows and "wait" in rows[0].text else None

    row: WebElement = wait_for(browser, live_row)
    assert "plivo" in row.text and "hold" in row.text and "14155550100" in row.text
    # Time in call is kept up to date by the event stream (at least every second).
    first = row.find_element(By.CSS_SELECTOR, ".cell-seconds").text
    wait_for(
        browser, lambda d: d.find_element(By.CSS_SELECTOR, f"{row_css} .cell-seconds").text != first
    )
    screenshot(browser, "console-live")

    # Say: the dialog's text is spoken into the call, cutting the hold message short.
    row.find_element(By.XPATH, ".//button[text()='Say']").click()
    dialog = browser.find_element(By.ID, "say-dialog")
    assert browser.switch_to.active_element == dialog.find_element(By.ID, "say-text")
    browser.switch_to.active_element.send_keys(SAID)
    dialog.find_element(By.ID, "say-interrupt").click()
    dialog.find_element(By.XPATH, ".//button[text()='Say it']").click()
    wait_for(browser, lambda d: not dialog.is_displayed())
    said = mulaw_of(SAID)
    wait_for(browser, lambda d: said in b"".join(p.audio for p in list(call.result.prompts)))

    row.find_element(By.XPATH, ".//button[text()='Hang up']").click()
    result = ended.result(30)
    assert result.ended_by == "rest-hangup"
    wait_for(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, row_css))

    # The history reloads once a live call has gone; its row opens the timeline.
    history_row = f'[data-testid="call-history"] tr[data-call-id="{call.result.call_id}"] button'
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, history_row))[0].click()
    timeline = wait_for(browser, shown_timeline)
    kinds = [e.get_attribute("data-kind") for e in timeline.find_elements(By.CSS_SELECTOR, "li")]
    assert "step" in kinds and "prompt" in kinds, kinds
    steps = timeline.find_elements(By.CSS_SELECTOR, 'li[data-kind="step"] .event-where')
    assert [s.text for s in steps][:1] == ["wait"]
    prompts = [p.text for p in timeline.find_elements(By.CSS_SELECTOR, 'li[data-kind="prompt"]')]
    assert HOLD in prompts[0] and "Waves first byte" in prompts[0], prompts
    assert any(SAID in p for p in prompts[1:]), prompts
    browser.execute_script("arguments[0].scrollIntoView()", timeline)
    screenshot(browser, "console-timeline")
    assert page_errors(browser) == []


def test_console_draws_each_flow_with_its_routes(served: MakeServed, browser: WebDriver) -> None:
    bridge = served(telebridge_console="local")
    browser.get(f"{bridge.url}/console")
    diagram = wait_for(browser, lambda d: d.find_elements(*by_testid("flow-diagram-menu")))[0]
    flow = diagram.find_element(By.XPATH, "ancestor::article")
    labels = {t.text for t in diagram.find_elements(By.CSS_SELECTOR, ".flow-edge-label")}
    parts = {part for label in labels for part in label.split(", ")}
    assert {"1", "2"} <= parts and any("default" in part for part in parts), labels
    nodes = {t.text for t in diagram.find_elements(By.CSS_SELECTOR, ".flow-node-id")}
    assert nodes == {"menu", "hours", "goodbye"}
    # The same routes as text, for screen readers.
    listed = flow.find_element(By.CSS_SELECTOR, ".flow-steps").get_attribute("textContent") or ""
    assert "1 → hours" in listed and "2 → menu" in listed and "next → goodbye" in listed
    listed_flows = browser.find_element(*by_testid("flow-list"))
    assert listed_flows.find_elements(*by_testid("flow-diagram-greet"))
    browser.execute_script("arguments[0].scrollIntoView()", flow)
    screenshot(browser, "console-flows")
    assert page_errors(browser) == []
