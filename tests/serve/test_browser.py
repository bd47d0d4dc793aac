"""The web page end to end in headless Chromium, against a real server: a user's list with reasons and history,
a click that changes it, the fallback for an unknown user, the item view with similar items, errors shown in
the page, text from the API never parsed as HTML, a narrow screen without horizontal scroll, and Swagger UI
served offline. One browser and one server for the module; screenshots go to $OMNIREC_SCREENSHOT_DIR
(default: a temporary folder)."""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

from omnirec.bundle import Bundle
from omnirec.models import Markov
from tests.serve.conftest import free_port, start_server

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: the browser test is skipped")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="Debian's chromium and chromium-driver are not installed: the browser test is skipped")
KEY = "browser-key"
WIDE, NARROW, HEIGHT = 1280, 400, 900
# No outside connections: a page that needs a CDN (fonts, scripts) shows up broken here.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--window-size={WIDE},{HEIGHT}")
QUOTED = re.compile(r"“([^”]+)”")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory, tiny_dataset, tiny_split):
    folder = tmp_path_factory.mktemp("browser")
    Bundle.create(Markov().fit(tiny_split.train_data()), tiny_dataset).save(folder / "bundle")
    port = free_port()
    server = start_server(folder / "bundle", folder / "events.db", port, KEY)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("OMNIREC_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait(browser, condition, timeout: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(condition)


def js(browser, script: str, *args):
    return browser.execute_script(script, *args)


def texts(browser, selector: str) -> list[str]:
    """The texts of every match, read in one script call (the list may be re-rendering)."""
    return js(browser, "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", selector)


def visible(browser, element_id: str) -> bool:
    return js(browser, "const e = document.getElementById(arguments[0]); return !!e && !e.hidden", element_id)


def resize(browser, width: int, height: int = HEIGHT) -> None:
    browser.set_window_size(width, height)
    wait(browser, lambda b: js(b, "return window.innerWidth") == width, 5)


def open_page(browser, base_url: str, width: int = WIDE) -> None:
    resize(browser, width)
    browser.get(base_url + "/")
    wait(browser, lambda b: "markov" in texts(b, "#fact-model")[0])
    js(browser, "window.alerts = []; window.alert = (m) => window.alerts.push(String(m))")  # the page never alerts


def ask(browser, user: str, key: str = KEY, items: int = 10) -> list[str]:
    """Fill the form, ask, and return the listed ids once `items` cards are shown."""
    from selenium.webdriver.common.by import By

    for field, value in (("user", user), ("key", key)):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    js(browser, "document.getElementById('list').replaceChildren()")
    browser.find_element(By.CSS_SELECTOR, "#ask button[type=submit]").click()
    idle = "return !document.getElementById('go').disabled"
    wait(browser, lambda b: len(texts(b, "#list .item")) == items and js(b, idle))
    return texts(browser, "#list .item")


def screenshot(browser, path: Path, width: int) -> None:
    """The whole page at `width` px wide, as tall as its content (at most 4,000 px)."""
    resize(browser, width)
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": width, "height": min(int(size["height"]), 4000), "scale": 1}
    shot = browser.execute_cdp_cmd("Page.captureScreenshot",
                                   {"format": "png", "captureBeyondViewport": True, "clip": clip})
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 10_000


def no_horizontal_scroll(browser) -> bool:
    return js(browser, "return document.documentElement.scrollWidth <= window.innerWidth")


def test_header_names_the_model_and_catalogue_and_links_the_docs(browser, base_url):
    open_page(browser, base_url)
    assert "120 items" in texts(browser, "#fact-items")[0]
    assert "300" in texts(browser, "#fact-users")[0]
    assert js(browser, "return document.getElementById('docs-link').href") == base_url + "/docs"
    assert visible(browser, "intro") and not visible(browser, "result")


def test_list_shows_titles_reasons_history_and_reacts_to_a_click(browser, base_url, tiny_dataset, shots):
    from selenium.webdriver.common.by import By

    open_page(browser, base_url)
    user = tiny_dataset.users.labels[3]
    before = ask(browser, user)
    assert texts(browser, "#badge") == [f"Personal picks for {user}"] and not visible(browser, "why")
    titles, reasons = texts(browser, "#list .title"), texts(browser, "#list .reason")
    history = texts(browser, "#history a")
    assert all(titles) and all(t != i for t, i in zip(titles, before))  # the tiny catalogue titles every item
    assert all(reasons) and any("which you interacted with" in r for r in reasons)
    assert history and all(history) and set(texts(browser, "#list .tag")) <= {"model", "cooccurrence", "popular"}
    assert all(QUOTED.findall(r)[0] in history for r in reasons if "which you interacted with" in r)
    browser.find_element(By.CSS_SELECTOR, "#list li button.fb").click()  # feedback on the first item
    wait(browser, lambda b: texts(b, "#list .item") not in ([], before) and len(texts(b, "#list .item")) == 10)
    after, history_after = texts(browser, "#list .item"), texts(browser, "#history a")
    assert before[0] not in after and history_after[0] == titles[0]  # the clicked item is now the newest seen
    assert titles[0] in texts(browser, "#notice-text")[0] and not visible(browser, "status")
    cited = [QUOTED.findall(r) for r in texts(browser, "#list .reason") if "which you interacted with" in r]
    assert cited and all(quotes and quotes[0] in history_after for quotes in cited)
    screenshot(browser, shots / "web_page_1280.png", WIDE)
    assert js(browser, "return window.alerts") == []
    browser.refresh()
    assert browser.find_element(By.ID, "key").get_attribute("value") == KEY  # kept in sessionStorage


def test_unknown_user_gets_the_fallback_badge_and_the_reason(browser, base_url):
    open_page(browser, base_url)
    ask(browser, "nobody-at-all")
    assert texts(browser, "#badge") == ["Popular — fallback"] and visible(browser, "why")
    why = texts(browser, "#why")[0]
    assert "'nobody-at-all' is not known" in why and "most popular" in why
    assert all("popular" in r for r in texts(browser, "#list .reason"))
    assert texts(browser, "#history a") == [] and visible(browser, "history-empty")


def test_a_title_opens_the_item_view_with_similar_items_and_back_returns(browser, base_url, tiny_dataset, shots):
    from selenium.webdriver.common.by import By

    open_page(browser, base_url)
    listed = ask(browser, tiny_dataset.users.labels[5])
    title = texts(browser, "#list .title")[0]
    browser.find_element(By.CSS_SELECTOR, "#list .title").click()
    wait(browser, lambda b: texts(b, "#item-title") == [title] and len(texts(b, "#similar .item")) > 0)
    assert visible(browser, "item-view") and not visible(browser, "result")
    assert texts(browser, "#item-id") == [listed[0]] and texts(browser, "#item-text")[0].startswith(title)
    assert texts(browser, "#item-interactions")[0].replace(",", "").isdigit()
    similar = texts(browser, "#similar .reason")
    assert all("this item" in r for r in similar) and listed[0] not in texts(browser, "#similar .item")
    screenshot(browser, shots / "web_item_page.png", WIDE)
    second = texts(browser, "#similar .title")[0]
    browser.find_element(By.CSS_SELECTOR, "#similar .title").click()  # similar items open in turn
    wait(browser, lambda b: texts(b, "#item-title") == [second] and len(texts(b, "#similar .item")) > 0)
    browser.find_element(By.ID, "back").click()  # straight back to the list, past both item views
    wait(browser, lambda b: visible(b, "result") and not visible(b, "item-view"))
    assert texts(browser, "#list .item") == listed and js(browser, "return location.hash") == ""


def test_errors_are_shown_in_the_page_not_in_alerts(browser, base_url, tiny_dataset):
    from selenium.webdriver.common.by import By

    open_page(browser, base_url)
    ask(browser, tiny_dataset.users.labels[7], key="wrong-key")
    browser.find_element(By.CSS_SELECTOR, "#list li button.fb").click()
    wait(browser, lambda b: visible(b, "status"))
    assert "API key" in texts(browser, "#status-title")[0] and "X-API-Key" in texts(browser, "#status-detail")[0]
    deleted = tiny_dataset.users.labels[8]
    assert httpx.delete(f"{base_url}/users/{deleted}", headers={"x-api-key": KEY}).status_code == 200
    ask(browser, deleted)
    assert "deleted" in texts(browser, "#why")[0]
    browser.find_element(By.CSS_SELECTOR, "#list li button.fb").click()
    wait(browser, lambda b: "deleted" in texts(b, "#status-title")[0])
    for status, words in ((409, "idempotency key"), (503, "unavailable")):  # answers the page cannot provoke itself
        js(browser, "window.fetch = async () => new Response('{\"detail\": \"x\"}', {status: arguments[0]})", status)
        browser.find_element(By.CSS_SELECTOR, "#list li button.fb").click()
        wait(browser, lambda b: words in texts(b, "#status-title")[0])
    js(browser, "window.fetch = () => Promise.reject(new TypeError('Failed to fetch'))")
    browser.find_element(By.CSS_SELECTOR, "#ask button[type=submit]").click()
    wait(browser, lambda b: "Could not reach the server" in texts(b, "#status-title")[0])
    assert js(browser, "return window.alerts") == []


def test_narrow_screen_is_one_column_without_horizontal_scroll(browser, base_url, tiny_dataset, shots):
    from selenium.webdriver.common.by import By

    open_page(browser, base_url, NARROW)
    ask(browser, tiny_dataset.users.labels[3])
    left = js(browser, "return [...document.querySelectorAll('#list .card')].map(c => c.getBoundingClientRect().left)")
    assert len(set(left)) == 1 and no_horizontal_scroll(browser)  # one column of cards
    screenshot(browser, shots / "web_page_400.png", NARROW)
    browser.find_element(By.CSS_SELECTOR, "#list .title").click()
    wait(browser, lambda b: len(texts(b, "#similar .item")) > 0)
    assert no_horizontal_scroll(browser)


def test_api_text_is_escaped_and_an_untitled_item_shows_its_id(browser, base_url):
    open_page(browser, base_url)
    answer = {"user": "<b>u</b>", "scenario": "home", "model": "m", "bundle": "b", "personalized": False,
              "reason": "<img src=x onerror=alert(1)>", "history": [{"item": "<i>h</i>", "title": None}],
              "items": [{"item": "<i>i9</i>", "title": None, "score": None, "sources": ["<s>x</s>"],
                         "reason": "<b>r</b>"}]}
    js(browser, "const a = JSON.stringify(arguments[0]); window.fetch = async () => new Response(a)", answer)
    ask(browser, "anyone", items=1)
    assert texts(browser, "#list .title") == ["<i>i9</i>"] and texts(browser, "#list .reason") == ["<b>r</b>"]
    assert texts(browser, "#why") == [answer["reason"]] and texts(browser, "#history a") == ["<i>h</i>"]
    assert texts(browser, "#list .score") == ["no score"] and texts(browser, "#list .tag") == ["<s>x</s>"]
    markup = "#result img, #result b, #result i, #result s, #history i"  # what the data would make if parsed as HTML
    assert js(browser, "return document.querySelectorAll(arguments[0]).length", markup) == 0
    assert js(browser, "return window.alerts") == []


def test_docs_render_swagger_ui_offline(browser, base_url):
    resize(browser, WIDE)
    browser.get(base_url + "/docs")
    rendered = ("return document.querySelector("
                "'.swagger-ui .info .title, .swagger-ui .version-pragma, .swagger-ui .errors-wrapper')")
    wait(browser, lambda b: js(b, rendered))
    title = "".join(texts(browser, ".swagger-ui .info .title"))
    shown = js(browser, "return document.body.innerText")[:300]
    assert "omnirec" in title, f"Swagger UI did not render the API: {shown!r}"
