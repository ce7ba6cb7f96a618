"""The pages in a real browser: headless Chromium opens the detections page served by waitress over a log made
by a real `fieldear listen` run, reviews events with the mouse and the keyboard, and the reviews table holds
them. Every page is screenshotted to out/screenshots/."""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.web.browser import (
    ServedApp,
    chromium_driver,
    copy_log,
    require_chromium,
    screenshot_dir,
    wait_for,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def site(demo_log, tmp_path_factory):
    require_chromium()
    pytest.importorskip("flask")
    from runtime.web.app import create_app
    from runtime.web.settings import WebSettings

    db = copy_log(demo_log, tmp_path_factory.mktemp("browser") / "data")
    app = create_app(WebSettings(db=db), status_state=None)
    driver = chromium_driver()
    try:
        with ServedApp(app) as served:
            yield served.url, driver, db
    finally:
        driver.quit()


def reviews(db) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT event_id, verdict, label, reviewer FROM reviews ORDER BY id").fetchall()
    finally:
        conn.close()


def severe_console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_review_in_the_browser(site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    url, driver, db = site
    driver.get(url + "/detections")
    rows = driver.find_elements(By.CSS_SELECTOR, "tr.event")
    assert len(rows) >= 4
    ids = [int(r.get_attribute("data-id")) for r in rows]
    # every row's spectrogram was rendered on the server and decoded by the browser
    wait_for(lambda: driver.execute_script(
        "return Array.from(document.querySelectorAll('img.spec')).every(i => i.complete && i.naturalWidth > 0)"),
        what="spectrogram images")
    assert driver.find_elements(By.CSS_SELECTOR, "tr.event audio")
    driver.save_screenshot(str(screenshot_dir() / "detections.png"))

    # 1. the mouse: confirm the first row
    rows[0].find_element(By.CSS_SELECTOR, 'button[data-action="confirm"]').click()
    wait_for(lambda: "confirm by" in rows[0].find_element(By.CSS_SELECTOR, ".verdict").text, what="confirm saved")
    assert reviews(db) == [(ids[0], "confirm", rows[0].get_attribute("data-label"), "web")]

    # 2. the keyboard: j to the second row, r rejects it (with a reviewer name typed in the header)
    name = driver.find_element(By.ID, "reviewer")
    name.send_keys("ana")
    name.send_keys(Keys.TAB)  # change event: stored in localStorage
    driver.find_element(By.TAG_NAME, "h1").click()
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys("j")
    body.send_keys("r")
    wait_for(lambda: len(reviews(db)) == 2, what="reject saved")
    assert reviews(db)[1] == (ids[1], "reject", "background", "ana")
    assert "selected" in rows[1].get_attribute("class")

    # 3. l focuses the relabel choice of the selected row; pick background, Enter sends it
    body.send_keys("j")
    body.send_keys("l")
    select = rows[2].find_element(By.CSS_SELECTOR, "select.relabel")
    assert driver.switch_to.active_element == select
    Select(select).select_by_visible_text("background")
    select.send_keys(Keys.ENTER)
    wait_for(lambda: len(reviews(db)) == 3, what="relabel saved")
    assert reviews(db)[2] == (ids[2], "relabel", "background", "ana")
    wait_for(lambda: "relabel → background by ana" in rows[2].find_element(By.CSS_SELECTOR, ".verdict").text,
             what="verdict shown")
    driver.save_screenshot(str(screenshot_dir() / "detections-reviewed.png"))

    # 4. the filter shows what is left to review, and the state survives a reload
    driver.get(url + "/detections?review=unreviewed")
    left = [int(r.get_attribute("data-id")) for r in driver.find_elements(By.CSS_SELECTOR, "tr.event")]
    assert left == ids[3:]
    assert severe_console_errors(driver) == []


def test_every_page_renders_and_live_refreshes(site):
    from selenium.webdriver.common.by import By

    url, driver, db = site
    for page in ("counts", "health"):
        driver.get(f"{url}/{page}")
        assert driver.find_elements(By.CSS_SELECTOR, "svg.chart")
        driver.save_screenshot(str(screenshot_dir() / f"{page}.png"))
    driver.get(url + "/live")
    assert driver.find_element(By.ID, "st-running").text == "NOT running"  # the listen run has ended
    assert "dBFS" in driver.find_element(By.ID, "st-level").text
    wait_for(lambda: "updated" in driver.find_element(By.ID, "refreshed").text, timeout=15, what="live refresh")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#st-events tr")) >= 4
    driver.save_screenshot(str(screenshot_dir() / "live.png"))
    assert severe_console_errors(driver) == []
