"""The Dash pages in a real headless Chromium against a real `rmswatch serve` process, on a store
filled by real short RMSprop trainings (`tests.app.training`) and one real alert evaluation tick.

Set RMSWATCH_SAVE_SCREENSHOTS=1 to refresh docs/screenshots/ from these runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from rmswatch.config import load_config
from tests.app.training import (
    BAD_RUN,
    DIVERGE_JOB,
    DIVERGE_RUN,
    GOOD_RUNS,
    JOB,
    MARKUP_LAYER,
    NAN_LAYER,
    NAN_STEP,
    SCENARIO_RUNS,
    SCRIPT_LABEL,
    evaluate_once,
    fill_by_training,
)
from tests.helpers import REPO_ROOT, free_port, require_program, subprocess_env, wait_until
from tests.integration.browser import browser, load_page, severe_console_entries, shown_panels

__all__ = ["browser"]  # the fixture, re-exported so pytest finds it here

pytestmark = pytest.mark.integration

SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
# these trainings ran on the CPU: the spend graph must say so instead of drawing zeros; the NaN
# run's effective LR is NaN in every layer at its last step, which its panel says in words
CPU_ONLY = frozenset({"exec-spend", "oncall-efflr"})


@dataclass
class Served:
    url: str
    db: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    import requests

    require_program("chromium")
    folder = tmp_path_factory.mktemp("store")
    db = f"sqlite:///{folder / 'rmswatch.db'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config_path = folder / "rmswatch.yml"
    # the dashboard links in alerts point at this very server
    config_path.write_text(yaml.safe_dump({"server": {"external_url": url}}), encoding="utf-8")
    trained = fill_by_training(db)
    result = evaluate_once(db, load_config(str(config_path)))
    assert result is not None and result.transitions, "the evaluation tick raised no alert"
    # The server logs every request: to a file, never a pipe nobody reads (a full pipe buffer
    # blocks the server's next log line, and every page after the ~20th hung loading).
    server_log = (folder / "serve.log").open("w", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "rmswatch", "serve", "--db", db, "--config", str(config_path),
         "--port", str(port), "--no-scheduler"],
        env=subprocess_env(),
        stdout=server_log,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        wait_until(
            lambda: requests.get(f"{url}/healthz", timeout=2).ok,
            timeout=60,
            what="rmswatch serve to answer /healthz",
        )
        yield Served(url, db)
    finally:
        trained.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        server_log.close()


def _store_alerts(db: str) -> Any:
    from rmswatch.store.engine import make_engine
    from rmswatch.store.queries import alerts_named

    engine = make_engine(db)
    try:
        return alerts_named(engine, ["TrainingNonFinite", "SloErrorBudgetBurn"])
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("page", "graphs"),
    [("oncall", 4), ("executive", 3), ("slo", 2), ("debug", 4), ("postmortem", 1)],
)
def test_page_loads_without_console_errors_and_its_graphs_hold_data(
    served: Served, browser: Any, page: str, graphs: int
) -> None:
    found = load_page(
        browser, f"{served.url}/{page}?job={JOB}&run={BAD_RUN}", graphs, empty_states=CPU_ONLY
    )
    assert len(found) >= graphs
    assert severe_console_entries(browser) == []
    if os.environ.get("RMSWATCH_SAVE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOTS / f"{page}.png"))


# the fewest graphs each page draws for one run (debug: the checkpoint chart is one line when a
# run saved none)
RUN_PAGES = {"oncall": 4, "debug": 3, "postmortem": 1}


@pytest.mark.parametrize("kind", list(SCENARIO_RUNS))
@pytest.mark.parametrize("page", list(RUN_PAGES))
def test_every_page_on_every_kind_of_run_shows_data_or_says_why_and_never_an_error(
    served: Served, browser: Any, page: str, kind: str
) -> None:
    run_id = SCENARIO_RUNS[kind]
    seen = shown_panels(browser, f"{served.url}/{page}?run={run_id}", RUN_PAGES[page])
    assert seen["errorPanels"] == [], seen["errorPanels"]
    assert [g for g in seen["graphs"] if g["error"]] == []
    assert all(g["points"] > 0 or g["says"] for g in seen["graphs"]), seen["graphs"]
    assert severe_console_entries(browser) == []
    if os.environ.get("RMSWATCH_SAVE_SCREENSHOTS") == "1" and kind == "finite divergence":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOTS / f"{page}-divergence.png"))


@pytest.mark.parametrize(("page", "graphs"), [("executive", 3), ("slo", 2), ("help", 0)])
def test_fleet_pages_show_data_or_say_why_and_never_an_error(
    served: Served, browser: Any, page: str, graphs: int
) -> None:
    seen = shown_panels(browser, f"{served.url}/{page}", graphs)
    assert seen["errorPanels"] == [] and not [g for g in seen["graphs"] if g["error"]]
    assert seen["body"] > 200  # words on the page, not a blank one
    assert severe_console_entries(browser) == []


def test_the_on_call_view_of_the_finite_divergence_shows_the_lr_raised_by_hand(
    served: Served, browser: Any
) -> None:
    shown_panels(browser, f"{served.url}/oncall?job={DIVERGE_JOB}&run={DIVERGE_RUN}", 4)
    names = browser.execute_script(
        "return document.getElementById('oncall-loss').querySelector('.js-plotly-plot')"
        ".data.map(t => t.name)"
    )
    assert {"training loss", "grad norm", "lr group 0", "LR changed"} <= set(names)
    nonfinite = browser.execute_script(
        "return document.getElementById('oncall-nonfinite').querySelector('.js-plotly-plot')"
        ".layout.annotations.map(a => a.text).join(' ')"
    )
    assert "no NaN/Inf" in nonfinite


def test_the_debug_page_opens_on_the_layer_that_failed_first(served: Served, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    shown_panels(browser, f"{served.url}/debug?run={BAD_RUN}", 4)
    picked = wait_until(
        lambda: browser.find_element(By.ID, "debug-layer").text, timeout=20, what="the layer"
    )
    assert picked.strip() == NAN_LAYER
    title_js = (
        "return document.getElementById('debug-series')"
        ".querySelector('.js-plotly-plot').layout.title.text"
    )
    assert NAN_LAYER in browser.execute_script(title_js)


def test_layer_names_with_markup_are_shown_as_text_in_every_figure(
    served: Served, browser: Any
) -> None:
    from urllib.parse import quote

    from selenium.webdriver.common.by import By

    shown_panels(browser, f"{served.url}/debug?run=evil-run&layer={quote(MARKUP_LAYER)}", 3)
    labels = browser.execute_script(
        "return Array.from(document.querySelectorAll('#debug-efflr .ytick text'))"
        ".map(t => t.textContent)"
    )
    assert MARKUP_LAYER in labels  # the text itself, shown literally
    for graph in ("debug-efflr", "debug-series", "debug-rms"):
        rendered = browser.find_element(By.ID, graph)
        assert rendered.find_elements(By.CSS_SELECTOR, "svg a") == [], graph  # no live link
        assert "evil" in rendered.text or graph == "debug-rms"
    shown_panels(browser, f"{served.url}/oncall?run=evil-run", 4)
    boxes = browser.execute_script(
        "return Array.from(document.querySelectorAll('#oncall-efflr .ytick text'))"
        ".map(t => t.textContent)"
    )
    assert MARKUP_LAYER in boxes
    assert browser.find_element(By.ID, "oncall-efflr").find_elements(By.CSS_SELECTOR, "svg a") == []


def test_the_postmortem_export_of_a_healthy_run_names_its_verdict(
    served: Served, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    shown_panels(browser, f"{served.url}/postmortem?run={GOOD_RUNS[1]}", 1)
    browser.find_element(By.ID, "pm-export").click()
    downloads: Path = browser.downloads_dir
    report = wait_until(
        lambda: [p for p in downloads.glob("*.html")], timeout=30, what="the report download"
    )[0]
    text = report.read_text(encoding="utf-8")
    assert "Verdict: <b>succeeded</b>" in text
    assert "run ended — verdict: succeeded" in text
    assert "No NaN or Inf values were recorded in this run." in text


def test_root_leads_to_oncall_while_an_alert_is_firing(served: Served, browser: Any) -> None:
    browser.get(served.url + "/")
    wait_until(lambda: browser.current_url.endswith("/oncall"), timeout=20)


def test_the_slo_page_shows_the_evaluators_budget_and_the_alerts_the_slo_raised(
    served: Served, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    load_page(browser, f"{served.url}/slo?slo=nonfinite-free-steps&job={JOB}", 2)
    summary = browser.find_element(By.ID, "slo-table").text
    assert "nonfinite-free-steps" in summary and "page" in summary
    budget = browser.find_element(By.ID, "kpi-budget").text
    assert "spent" in budget  # 40 NaN steps of 300 against a 0.1% budget
    raised = wait_until(
        lambda: browser.find_element(By.ID, "slo-alerts").text, timeout=20, what="alerts"
    )
    assert "SloErrorBudgetBurn" in raised and "TrainingNonFinite" not in raised


def test_an_alerts_dashboard_link_opens_oncall_on_its_run_and_time_window(
    served: Served, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    alerts = _store_alerts(served.db)
    link = alerts[alerts["alertname"] == "TrainingNonFinite"]["dashboard_url"].iloc[0]
    assert link.startswith(f"{served.url}/oncall?job=") and "&from=20" in link
    load_page(browser, link, 4, empty_states=CPU_ONLY)
    assert "(from the alert link)" in browser.find_element(By.ID, "oncall-window").text
    picked = browser.find_element(By.ID, "oncall-run").text
    assert BAD_RUN in picked
    # a window that ended before any run started holds none of them
    browser.get(f"{served.url}/oncall?job={JOB}&from=2020-01-01T00:00:00Z&to=2020-01-01T01:00:00Z")
    wait_until(
        lambda: "no runs active 2020-01-01 00:00" in browser.find_element(By.TAG_NAME, "body").text,
        timeout=20,
        what="the empty window message",
    )


def _pick_alert_in_silence_picker(browser: Any, alertname: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "silence-target").click()
    wait_until(
        lambda: [
            e
            for e in browser.find_elements(By.XPATH, f"//*[contains(text(), '{alertname}')]")
            if e.is_displayed() and e.find_elements(By.XPATH, "ancestor::*[@role='option']")
        ],
        timeout=10,
        what=f"{alertname} in the silence picker",
    )[-1].click()


def test_a_silence_created_on_the_oncall_page_lands_in_the_store(
    served: Served, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    from rmswatch.store.engine import make_engine
    from rmswatch.store.queries import silences

    load_page(browser, f"{served.url}/oncall?run={BAD_RUN}", 4, empty_states=CPU_ONLY)
    _pick_alert_in_silence_picker(browser, "TrainingNonFinite")
    browser.find_element(By.XPATH, "//label[contains(., '4h')]").click()
    browser.find_element(By.ID, "silence-author").send_keys("night-oncall")
    browser.find_element(By.ID, "silence-comment").send_keys("investigating the LR spike")
    browser.find_element(By.ID, "silence-submit").click()
    wait_until(
        lambda: "silenced TrainingNonFinite" in browser.find_element(By.ID, "silence-result").text,
        timeout=20,
        what="the silence confirmation",
    )
    engine = make_engine(served.db)
    try:
        created = silences(engine)
    finally:
        engine.dispose()
    row = created.iloc[0]
    assert (row["author"], row["comment"]) == ("night-oncall", "investigating the LR spike")
    assert 'alertname="TrainingNonFinite"' in row["matchers"] and JOB in row["matchers"]
    assert (row["ends_at"] - row["starts_at"]).total_seconds() == 4 * 3600


def test_acknowledge_on_the_oncall_page_lands_in_the_store(served: Served, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    load_page(browser, f"{served.url}/oncall?run={BAD_RUN}", 4, empty_states=CPU_ONLY)
    browser.find_element(By.ID, "silence-author").send_keys("ack-person")
    button = wait_until(
        lambda: browser.find_elements(
            By.XPATH, "//table[@id='alerts-table']//tr[td[text()='SloErrorBudgetBurn']]//button"
        ),
        timeout=20,
        what="an Acknowledge button on the SLO burn alert",
    )[0]
    button.click()
    wait_until(
        lambda: "acknowledged by ack-person" in browser.find_element(By.ID, "silence-result").text,
        timeout=20,
        what="the acknowledgement confirmation",
    )
    alerts = _store_alerts(served.db)
    acked = alerts[alerts["acknowledged_by"] == "ack-person"]
    assert acked["alertname"].tolist() == ["SloErrorBudgetBurn"]
    assert acked["acknowledged_at"].notna().all()


def test_layer_picker_changes_the_debug_graphs(served: Served, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    load_page(browser, f"{served.url}/debug?run={GOOD_RUNS[0]}", 4)
    title_js = (
        "return document.getElementById('debug-series')"
        ".querySelector('.js-plotly-plot').layout.title.text"
    )
    assert "conv1.weight" in browser.execute_script(title_js)
    series_js = (
        "return JSON.stringify(document.getElementById('debug-series')"
        ".querySelector('.js-plotly-plot')._fullData.map(t => Array.from(t.y || [])))"
    )
    before = browser.execute_script(series_js)
    browser.find_element(By.ID, "debug-layer").click()
    option = wait_until(
        lambda: [
            e
            for e in browser.find_elements(By.XPATH, "//*[normalize-space(text())='fc.weight']")
            if e.is_displayed() and e.find_elements(By.XPATH, "ancestor-or-self::*[@role='option']")
        ],
        timeout=10,
        what="the fc.weight option",
    )
    option[0].click()
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
    assert browser.execute_script(series_js) != before  # other numbers, not only a new title
    assert severe_console_entries(browser) == []


def test_postmortem_export_downloads_a_report_naming_the_first_nonfinite_step(
    served: Served, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    load_page(browser, f"{served.url}/postmortem?run={BAD_RUN}", 1)
    assert str(NAN_STEP) in browser.find_element(By.ID, "kpi-first-nonfinite").text
    browser.find_element(By.ID, "pm-export").click()
    downloads: Path = browser.downloads_dir
    report = wait_until(
        lambda: [p for p in downloads.glob("*.html")], timeout=30, what="the report download"
    )[0]
    text = report.read_text(encoding="utf-8")
    assert f"First non-finite step: {NAN_STEP} in {NAN_LAYER}" in text
    assert "TrainingNonFinite" in text  # the real alert is in its timeline


def test_text_from_training_jobs_is_shown_not_executed(served: Served, browser: Any) -> None:
    for page in ("oncall", "executive", "postmortem?run=evil-run"):
        browser.get(f"{served.url}/{page}")
        wait_until(
            lambda: SCRIPT_LABEL in browser.find_element("tag name", "body").text,
            timeout=30,
            what=f"the <script> job name shown as text on {page}",
        )
        assert browser.execute_script("return window.__pwned === undefined")


def test_chromium_is_found_without_selenium_manager() -> None:
    assert shutil.which("chromedriver") is None or Path(shutil.which("chromedriver") or "").exists()
