"""The Dash pages in a real headless Chromium against a real `rmswatch serve` process.

Set RMSWATCH_SAVE_SCREENSHOTS=1 to refresh docs/screenshots/ from these runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from tests.app.fixtures import NAN_STEP, fill_store
from tests.helpers import REPO_ROOT, free_port, require_program, subprocess_env, wait_until

pytestmark = pytest.mark.integration

PAGES = ("oncall", "executive", "slo", "debug", "postmortem")
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import requests

    db = tmp_path_factory.mktemp("store") / "rmswatch.db"
    engine = create_engine(f"sqlite:///{db}")
    fill_store(engine)
    engine.dispose()
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rmswatch",
            "serve",
            "--db",
            f"sqlite:///{db}",
            "--port",
            str(port),
            "--no-scheduler",
        ],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: requests.get(f"{url}/healthz", timeout=2).ok,
            timeout=60,
            what="rmswatch serve to answer /healthz",
        )
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium = require_program("chromium")
    driver_path = require_program("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,900",
        f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
    ):
        options.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: selenium-manager must never try to download a driver
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.downloads_dir = downloads  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()


GRAPH_POINTS_JS = """
// calcdata: what plotly actually drew, whatever the wire encoding of the arrays
return Array.from(document.querySelectorAll('.js-plotly-plot')).map(function (el) {
  var n = 0;
  (el.calcdata || []).forEach(function (trace) {
    trace.forEach(function (point) { if (point && (point.y !== undefined || point.z)) { n += 1; } });
  });
  return {id: el.parentElement ? el.parentElement.id || el.id : el.id, points: n};
});
"""


def _graphs(driver: Any) -> list[dict[str, Any]]:
    return list(driver.execute_script(GRAPH_POINTS_JS))


def _severe(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _load(driver: Any, url: str, expected_graphs: int) -> list[dict[str, Any]]:
    driver.get(url)
    return wait_until(
        lambda: (
            (g := _graphs(driver))
            and len(g) >= expected_graphs
            and all(item["points"] > 0 for item in g)
            and g
        ),
        timeout=45,
        what=f"{url} to draw {expected_graphs} graphs with data",
    )


@pytest.mark.parametrize(
    ("page", "graphs"),
    [("oncall", 4), ("executive", 3), ("slo", 1), ("debug", 4), ("postmortem", 1)],
)
def test_page_loads_without_console_errors_and_its_graphs_hold_data(
    server_url: str, browser: Any, page: str, graphs: int
) -> None:
    query = "?job=resnet-retrain&run=resnet-bad"
    found = _load(browser, f"{server_url}/{page}{query}", graphs)
    assert len(found) >= graphs
    assert _severe(browser) == []
    if os.environ.get("RMSWATCH_SAVE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOTS / f"{page}.png"))


def test_root_leads_to_executive_when_nothing_is_firing(server_url: str, browser: Any) -> None:
    browser.get(server_url + "/")
    wait_until(lambda: browser.current_url.endswith("/executive"), timeout=20)


def test_layer_picker_changes_the_debug_graphs(server_url: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _load(browser, f"{server_url}/debug?run=resnet-good", 4)
    title_js = (
        "return document.getElementById('debug-series')"
        ".querySelector('.js-plotly-plot').layout.title.text"
    )
    assert "conv1.weight" in browser.execute_script(title_js)
    picker = browser.find_element(By.CSS_SELECTOR, "#debug-layer input")
    picker.send_keys("fc.weight")
    picker.send_keys(Keys.ENTER)
    wait_until(
        lambda: "fc.weight" in browser.execute_script(title_js),
        timeout=20,
        what="the series graph to show fc.weight",
    )
    heatmap_title = (
        "return document.getElementById('debug-rms')"
        ".querySelector('.js-plotly-plot').layout.title.text"
    )
    assert "fc.weight" in browser.execute_script(heatmap_title)
    assert _severe(browser) == []


def test_postmortem_export_downloads_a_report_naming_the_first_nonfinite_step(
    server_url: str, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    _load(browser, f"{server_url}/postmortem?run=resnet-bad", 1)
    browser.find_element(By.ID, "pm-export").click()
    downloads: Path = browser.downloads_dir
    report = wait_until(
        lambda: [p for p in downloads.glob("*.html")], timeout=30, what="the report download"
    )[0]
    text = report.read_text(encoding="utf-8")
    assert f"First non-finite step: {NAN_STEP} in fc.weight" in text


def test_text_from_training_jobs_is_shown_not_executed(server_url: str, browser: Any) -> None:
    for page in ("oncall", "executive", "postmortem?run=evil-run"):
        browser.get(f"{server_url}/{page}")
        wait_until(
            lambda: "<script>" in browser.find_element("tag name", "body").text,
            timeout=30,
            what=f"the <script> label shown as text on {page}",
        )
        assert browser.execute_script("return window.__pwned === undefined")


def test_chromium_is_found_without_selenium_manager() -> None:
    assert shutil.which("chromedriver") is None or Path(shutil.which("chromedriver") or "").exists()
