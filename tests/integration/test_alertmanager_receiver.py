"""Our `alertmanager` receiver against a real Alertmanager (Debian package), whose webhook goes to
a real HTTP server in this test on 127.0.0.1."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from rmswatch.alerting.outbox import deliver_due
from rmswatch.alerting.routing_config import OutboxConfig
from rmswatch.alerting.scheduler import run_tick
from tests.alerting.routing_support import Clock, ReceiverServer, config, signal, store
from tests.helpers import free_port, require_program, wait_until

pytestmark = pytest.mark.integration

AM_CONFIG = """
route:
  receiver: hook
  group_by: [alertname, job]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


@pytest.fixture
def hook() -> Iterator[ReceiverServer]:
    server = ReceiverServer().start()
    yield server
    server.stop()


@pytest.fixture
def alertmanager(tmp_path: Path, hook: ReceiverServer) -> Iterator[str]:
    program = require_program("prometheus-alertmanager", "alertmanager")
    port = free_port()
    config_file = tmp_path / "alertmanager.yml"
    config_file.write_text(AM_CONFIG.format(url=hook.url))
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [program, f"--config.file={config_file}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/-/ready", timeout=1).ok, timeout=30,
                   what="Alertmanager ready")  # fmt: skip
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_alerts_posted_to_alertmanager_come_back_through_its_webhook(
    sqlite_url: str, alertmanager: str, hook: ReceiverServer
) -> None:
    cfg = config(
        [{"name": "am", "kind": "alertmanager", "url": alertmanager}],
        {"receiver": "am", "group_wait": 0, "group_interval": "1s"},
    )
    policy = OutboxConfig(initial_backoff_seconds=0.1, max_backoff_seconds=1)
    engine, clock = store(sqlite_url), Clock(datetime.now(UTC))

    run_tick(engine, cfg, clock(), lambda *_: [signal()])
    assert deliver_due(engine, cfg.receivers, policy, clock=clock).delivered == 1
    [firing] = wait_until(hook.bodies, timeout=60, what="Alertmanager's firing webhook")
    assert firing["version"] == "4" and firing["status"] == "firing"
    [alert] = firing["alerts"]
    assert alert["labels"] == {
        "alertname": "LossDiverging", "job": "resnet-retrain", "model": "resnet50",
        "severity": "page",
    }  # fmt: skip
    assert alert["annotations"]["run_id"] == "run-1"
    assert alert["annotations"]["summary"].startswith("LossDiverging on resnet-retrain")
    assert alert["generatorURL"].startswith(
        "https://rmswatch.example.org/oncall?job=resnet-retrain"
    )

    run_tick(engine, cfg, clock.advance(5), lambda *_: [])
    assert deliver_due(engine, cfg.receivers, policy, clock=clock).delivered == 1
    bodies = wait_until(lambda: len(hook.bodies()) >= 2 and hook.bodies(), timeout=60,
                        what="Alertmanager's resolved webhook")  # fmt: skip
    assert bodies[-1]["status"] == "resolved"
    assert bodies[-1]["alerts"][0]["fingerprint"] == alert["fingerprint"]
