"""Headless Chromium for browser tests: Debian's chromium + chromedriver, never a download."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import require_program, wait_until


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
    trace.forEach(function (p) { if (p && (p.y !== undefined || p.z)) { n += 1; } });
  });
  return {id: el.parentElement ? el.parentElement.id || el.id : el.id, points: n};
});
"""


def plotted_graphs(driver: Any) -> list[dict[str, Any]]:
    return list(driver.execute_script(GRAPH_POINTS_JS))


def severe_console_entries(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def load_page(
    driver: Any, url: str, expected_graphs: int, *, empty_states: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """Open `url` and wait until at least `expected_graphs` graphs are drawn and every one holds
    data, except those named in `empty_states` (graphs that must show an empty-state message)."""
    driver.get(url)

    def drawn() -> list[dict[str, Any]] | None:
        graphs = plotted_graphs(driver)
        if len(graphs) < expected_graphs:
            return None
        with_data = [g for g in graphs if g["id"] not in empty_states]
        return graphs if all(g["points"] > 0 for g in with_data) else None

    return wait_until(drawn, timeout=45, what=f"{url} to draw {expected_graphs} graphs with data")


PANELS_JS = """
// every graph: what it drew, whether it says something instead (an annotation), and whether it
// is an error figure; plus the error panels and empty graphs a person would see
var graphs = Array.from(document.querySelectorAll('.js-plotly-plot')).map(function (el) {
  var n = 0;
  (el.calcdata || []).forEach(function (trace) {
    trace.forEach(function (p) { if (p && (p.y !== undefined || p.z)) { n += 1; } });
  });
  var layout = el.layout || {};
  var holder = el.closest('[id]');
  return {id: holder ? holder.id : '', points: n,
          says: (layout.annotations || []).map(function (a) { return a.text || ''; }).join(' | '),
          error: layout.meta === 'rmswatch-error'};
});
return {graphs: graphs,
        errorPanels: Array.from(document.querySelectorAll('.error-panel')).map(e => e.innerText),
        loading: document.querySelectorAll('[data-dash-is-loading="true"]').length,
        body: document.body.innerText.length};
"""


def shown_panels(driver: Any, url: str, graphs: int) -> dict[str, Any]:
    """Open `url` and wait until at least `graphs` graphs are drawn, each holding data or a
    message (never blank axes); returns what PANELS_JS saw."""
    driver.get(url)
    last: list[Any] = []

    def settled() -> dict[str, Any] | None:
        seen = driver.execute_script(PANELS_JS)
        last[:] = [seen]
        if seen["errorPanels"] or any(g["error"] for g in seen["graphs"]):
            return dict(seen)  # an error is an answer: the test reports it
        if len(seen["graphs"]) < graphs or seen["loading"] or seen["body"] < 200:
            return None
        drawn = all(g["points"] > 0 or g["says"] for g in seen["graphs"])
        return dict(seen) if drawn else None

    try:
        return wait_until(settled, timeout=60, what=f"{url} to draw {graphs} graphs, none blank")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {last}") from None
