"""Refresh docs/screenshots/ from a live `rmswatch demo --quick`.

The on-call view is captured while the divergence page is firing; the other views once the demo
has finished, from `rmswatch serve` on the demo's store. Uses Debian's chromium + chromedriver.

    .venv/bin/python scripts/demo_screenshots.py
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
RUN = "ranker-retrain-002"
VIEWS = {
    "executive": "executive",
    "slo": "slo?slo=nonfinite-free-steps&job=ranker-retrain",
    "debug": f"debug?job=ranker-retrain&run={RUN}",
    "postmortem": f"postmortem?run={RUN}",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def browser(workdir: Path) -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--window-size=1400,900", f"--user-data-dir={workdir / 'chrome'}"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


DRAWN_JS = """
var graphs = Array.from(document.querySelectorAll('.js-plotly-plot'));
return graphs.length > 0 && graphs.every(function (el) {
  return (el.data || []).length > 0 || ((el.layout || {}).annotations || []).length > 0;
}) && document.querySelectorAll('[data-dash-is-loading="true"]').length === 0;
"""


def full_page(driver: Any, path: Path, settle: float = 3.0) -> None:
    """A screenshot of the whole page (up to 2600 px tall), once every graph has drawn."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not driver.execute_script(DRAWN_JS):
        time.sleep(0.5)
    time.sleep(settle)
    height = int(driver.execute_script("return document.body.scrollHeight"))
    driver.set_window_size(1400, min(max(900, height + 40), 2600))
    time.sleep(2)
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 900)


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, ValueError, requests.RequestException):
            pass
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def divergence_firing(notifications: Path) -> bool:
    if not notifications.exists():
        return False
    for line in notifications.read_text(encoding="utf-8").splitlines():
        for alert in json.loads(line)["alerts"]:
            if (
                alert["status"] == "firing"
                and alert["labels"].get("alertname") == "TrainingNonFinite"
                and alert["annotations"].get("run_id") == RUN
            ):
                return True
    return False


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="rmswatch-shots-"))
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "rmswatch", "demo", "--quick", "--port", str(port),
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    driver = browser(workdir)
    try:
        wait_for(lambda: divergence_firing(workdir / "notifications.jsonl"), 400,
                 "the divergence page")  # fmt: skip
        time.sleep(3)  # one more evaluation tick, so every alert of the incident is on screen
        # the whole page, so loss, gradient norm and LR on their one step axis are in it too
        driver.get(f"http://127.0.0.1:{port}/oncall?job=ranker-retrain&run={RUN}")
        full_page(driver, OUT / "oncall.png")
        demo.wait(timeout=600)
        serve_port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "rmswatch", "serve", "--db",
             f"sqlite:///{workdir / 'demo.db'}", "--config", str(workdir / "demo.yaml"),
             "--port", str(serve_port), "--no-scheduler"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(lambda: requests.get(f"http://127.0.0.1:{serve_port}/healthz").ok, 90,
                     "rmswatch serve")  # fmt: skip
            for name, path in VIEWS.items():
                driver.get(f"http://127.0.0.1:{serve_port}/{path}")
                full_page(driver, OUT / f"{name}.png")
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        driver.quit()
        if demo.poll() is None:
            demo.terminate()
            demo.wait(timeout=60)
    print(f"screenshots written to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
