"""`rmswatch demo` end to end: real trainings, the real server, a real webhook receiver."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from rmswatch.demo import DIVERGED_RUN, DIVERGENCE_ALERTS, WAVES
from tests.helpers import free_port, subprocess_env, wait_until
from tests.integration.browser import browser, load_page, severe_console_entries

__all__ = ["browser"]  # the fixture, re-exported so pytest finds it here

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HEALTHY_RUNS = {s.run_id for wave in WAVES for s in wave if s.name == "healthy"}
# page -> (query, graphs that must hold data); the executive view is about every job
PAGE_GRAPHS = {
    "oncall": (f"?job=ranker-retrain&run={DIVERGED_RUN}", 4),
    "executive": ("", 3),
    "slo": ("?job=ranker-retrain", 2),
    # the diverging run saved no checkpoint: its checkpoint panel is one line, not a graph
    "debug": (f"?job=ranker-retrain&run={DIVERGED_RUN}", 3),
    "postmortem": (f"?run={DIVERGED_RUN}", 1),
}


def _alerts(notifications: Path) -> list[dict[str, Any]]:
    lines = notifications.read_text(encoding="utf-8").splitlines()
    return [alert for line in lines for alert in json.loads(line)["alerts"]]


def _run_of(alert: dict[str, Any]) -> str:
    return str(alert["labels"].get("run_id") or alert["annotations"].get("run_id", ""))


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    workdir = tmp_path_factory.mktemp("demo")
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "rmswatch", "demo", "--quick", "--port", str(port),
         "--dir", str(workdir)],
        env=subprocess_env(), capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "The divergence page reached the webhook." in result.stdout
    return workdir, result.stdout


def test_the_divergence_page_reached_the_webhook_exactly_once(quick_demo: tuple[Path, str]) -> None:
    workdir, _ = quick_demo
    firing_pages = Counter(
        alert["labels"]["alertname"]
        for alert in _alerts(workdir / "notifications.jsonl")
        if alert["status"] == "firing"
        and alert["labels"].get("severity") == "page"
        and alert["labels"]["alertname"] in DIVERGENCE_ALERTS
        and _run_of(alert) == DIVERGED_RUN
    )
    assert firing_pages, "no divergence page for the diverging run"
    assert all(count == 1 for count in firing_pages.values()), firing_pages


def test_healthy_runs_raised_nothing(quick_demo: tuple[Path, str]) -> None:
    workdir, _ = quick_demo
    about_healthy = [
        a for a in _alerts(workdir / "notifications.jsonl") if _run_of(a) in HEALTHY_RUNS
    ]
    assert about_healthy == []
    with sqlite3.connect(workdir / "demo.db") as db:
        statuses = dict(db.execute("SELECT run_id, status FROM runs").fetchall())
        annotations = [row[0] for row in db.execute("SELECT annotations FROM alerts").fetchall()]
    assert {run: statuses[run] for run in HEALTHY_RUNS} == dict.fromkeys(HEALTHY_RUNS, "succeeded")
    assert not [a for a in annotations if json.loads(a).get("run_id") in HEALTHY_RUNS]
    assert statuses[DIVERGED_RUN] == "failed"


def test_every_view_answers_on_the_demo_store(quick_demo: tuple[Path, str], browser: Any) -> None:
    workdir, _ = quick_demo
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "rmswatch", "serve", "--db", f"sqlite:///{workdir / 'demo.db'}",
         "--port", str(port), "--no-scheduler"],
        env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{base}/healthz", timeout=2).ok, timeout=90,
                   what="the server to answer /healthz")  # fmt: skip
        for page, (query, graphs) in PAGE_GRAPHS.items():
            load_page(
                browser, f"{base}/{page}{query}", graphs,
                # the demo trains on the CPU, the diverging run saved no checkpoint, and its
                # effective LR is NaN in every layer at its last step (the panel says so in words)
                empty_states=frozenset({"exec-spend", "debug-checkpoints", "oncall-efflr"}),
            )  # fmt: skip
            assert severe_console_entries(browser) == [], page
            if page == "debug":
                assert "Checkpoints: none recorded" in browser.page_source
        # the on-call view shows the divergence page with its runbook
        browser.get(f"{base}/oncall?job=ranker-retrain&run={DIVERGED_RUN}")
        wait_until(lambda: "TrainingNonFinite" in browser.page_source, timeout=30,
                   what="the divergence page on the on-call view")  # fmt: skip
        assert "/runbooks/nan" in browser.page_source
        report = subprocess.run(
            [sys.executable, "-m", "rmswatch", "report", "--db",
             f"sqlite:///{workdir / 'demo.db'}", "--run", DIVERGED_RUN, "-o",
             str(workdir / "report.html")],
            env=subprocess_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert report.returncode == 0, report.stderr
        html = (workdir / "report.html").read_text(encoding="utf-8")
        assert DIVERGED_RUN in html and "First non-finite step" in html
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_ctrl_c_stops_every_child_and_leaves_the_store_consistent(tmp_path: Path) -> None:
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "rmswatch", "demo", "--port", str(port), "--dir", str(tmp_path)],
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        # wait until the first wave of trainings is stepping and writing to the store
        def trainings_writing() -> list[psutil.Process] | None:
            try:
                with sqlite3.connect(tmp_path / "demo.db", timeout=1) as db:
                    running = db.execute(
                        "SELECT COUNT(*) FROM runs WHERE status = 'running'"
                    ).fetchone()[0]
                    steps = db.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
            except sqlite3.OperationalError:  # the server has not created the schema yet
                return None
            if running < 2 or steps == 0:
                return None
            return psutil.Process(demo.pid).children(recursive=True)

        children = wait_until(trainings_writing, timeout=180, interval=0.5,
                              what="the first two trainings to write steps")  # fmt: skip
        demo.send_signal(signal.SIGINT)
        output, _ = demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, output[-3000:]
    assert "stopping" in output
    orphans = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert orphans == []
    with sqlite3.connect(tmp_path / "demo.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        statuses = dict(db.execute("SELECT run_id, status FROM runs").fetchall())
        steps = db.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
    assert statuses and steps > 0
    # the interrupted trainings closed their runs rather than being left "running"
    assert "running" not in statuses.values(), statuses
