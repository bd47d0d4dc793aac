"""The web page end to end in headless Chromium: ask for a user's list, see reasons, click, watch it change."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from omnirec.bundle import Bundle
from omnirec.models import Markov
from tests.serve.conftest import free_port, start_server

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: the browser test is skipped")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="Debian's chromium and chromium-driver are not installed: the browser test is skipped")
KEY = "browser-key"


def texts(browser, css_class: str) -> list[str]:
    """The listed rows' texts of one kind, read in one script call (the list may be re-rendering)."""
    return browser.execute_script(f"return [...document.querySelectorAll('#list .{css_class}')].map(e => e.textContent)")


def test_page_shows_reasons_and_reacts_to_a_click(tmp_path, tiny_dataset, tiny_split):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    Bundle.create(Markov().fit(tiny_split.train_data()), tiny_dataset).save(tmp_path / "bundle")
    port = free_port()
    server = start_server(tmp_path / "bundle", tmp_path / "events.db", port, KEY)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        user = tiny_dataset.users.labels[3]
        browser.find_element(By.ID, "user").send_keys(user)
        browser.find_element(By.ID, "key").send_keys(KEY)
        browser.find_element(By.CSS_SELECTOR, "#ask button").click()
        wait = WebDriverWait(browser, 20)
        wait.until(lambda b: len(texts(b, "item")) == 10)
        before, reasons = texts(browser, "item"), texts(browser, "reason")
        assert all(reasons) and any("which you interacted with" in r for r in reasons)
        browser.find_element(By.CSS_SELECTOR, "#list li button.fb").click()  # feedback on the first item
        wait.until(lambda b: texts(b, "item") not in ([], before))
        after = texts(browser, "item")
        assert before[0] not in after and len(after) == 10
        shot = Path(os.environ.get("OMNIREC_SCREENSHOT_DIR", tmp_path)) / "web_page.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        browser.quit()
        server.kill()
        server.wait()
