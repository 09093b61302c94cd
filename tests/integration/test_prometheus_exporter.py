"""The exporter against the real Prometheus tools: promtool's linter and a Prometheus server."""

from __future__ import annotations

import json
import math
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rmswatch import catalogue as cat
from rmswatch.collectors.prometheus import PrometheusSink
from rmswatch.trainer_hooks.records import CheckpointRecord, SystemSample, ValidationRecord
from tests.factories import layer, record, run_info
from tests.helpers import REPO_ROOT, free_port, require_program, wait_until

pytestmark = pytest.mark.integration


def scrape_text(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def promtool_check(text: bytes) -> subprocess.CompletedProcess[str]:
    promtool = require_program("promtool")
    return subprocess.run(
        [promtool, "check", "metrics"],
        input=text.decode(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_promtool_finds_nothing_to_complain_about_in_a_full_scrape() -> None:
    layers = {f"blocks.{i}.weight": layer(float(i)) for i in range(50)}
    layers["blocks.7.bias"] = layer(math.nan, nonfinite_grad=2)
    with PrometheusSink(port=0) as sink:
        sink.open(run_info(labels={"model": "resnet", "team-name": "vision"}))
        sink.write(
            [
                record(step=1, layers=layers, nonfinite={"grad": 2}, loss=math.nan),
                record(step=2, layers=layers, validation=0.4),
                ValidationRecord(step=2, time=2.0, value=0.3, name="val_acc"),
                SystemSample(
                    2.0, 120.0, 1 << 30, gpu_util_percent=80.0, gpu_memory_bytes=5, gpu_count=1
                ),
                CheckpointRecord(step=2, time=2.0, action="save"),
            ]
        )
        text = scrape_text(sink.url)
    result = promtool_check(text)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert b"rmswatch_state_rms_bucket" in text  # the lint covered the gauge histograms


class Prometheus:
    """A real Prometheus server on 127.0.0.1 scraping `target` every second."""

    def __init__(self, tmp: Path, target: str) -> None:
        program = require_program("prometheus")
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: rmswatch\n    honor_labels: true\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                program,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self.ready, timeout=60, what="prometheus /-/ready")

    def ready(self) -> bool:
        assert self.process.poll() is None, "prometheus exited; see prometheus.log"
        with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
            return response.status == 200

    def query(self, promql: str) -> list[dict[str, object]]:
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None  # type: ignore[index]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)
        self.log.close()


@pytest.fixture
def exporter_and_prometheus(tmp_path: Path) -> Iterator[tuple[PrometheusSink, Prometheus]]:
    sink = PrometheusSink(port=0)
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{sink.port}")
    try:
        yield sink, prometheus
    finally:
        prometheus.stop()
        sink.close()


def test_prometheus_scrapes_the_recorded_values_and_takes_quantiles(
    exporter_and_prometheus: tuple[PrometheusSink, Prometheus],
) -> None:
    sink, prometheus = exporter_and_prometheus
    sink.open(run_info(labels={"model": "resnet"}))
    sink.write([record(step=s, grad_norm=0.5 + s) for s in range(1, 38)])
    selector = '{job="resnet-retrain",run_id="run-1",model="resnet"}'
    steps = wait_until(
        lambda: prometheus.value(cat.STEPS_TOTAL.name + selector) == 37,
        timeout=60,
        what="steps_total scraped by Prometheus",
    )
    assert steps
    assert prometheus.value(cat.GRAD_NORM.name + selector) == 37.5
    # the gauge histogram is usable by PromQL as-is: every element sits in bucket 20 of the
    # RMS edges, [1e-5, 10**-4.75), so the median is inside it
    median = prometheus.value(
        f"histogram_quantile(0.5, sum by (le) ({cat.STATE_RMS.name}_bucket{selector}))"
    )
    assert median is not None and 1e-5 <= median <= 10**-4.75

    # Every Grafana panel query is valid PromQL for this Prometheus, and the heatmap's buckets
    # come back with data (variables set as Grafana's "All" would).
    from rmswatch.generators import grafana

    variables = {"$job": ".*", "$run_id": ".*", "$layer": ".*", "$gpu_hour_usd": "2.5"}
    for name in grafana.DASHBOARDS:
        for panel in grafana.DASHBOARDS[name]()["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for variable, replacement in variables.items():
                    expr = expr.replace(variable, replacement)
                try:
                    prometheus.query(expr)
                except urllib.error.HTTPError as exc:
                    pytest.fail(f"{name}/{panel['title']}: {expr}: {exc.read().decode()}")
    heatmap = f"sum by (le) ({cat.STATE_RMS.name}_bucket)"
    assert len(prometheus.query(heatmap)) == len(cat.RMS_BUCKET_BOUNDS)


def test_the_scrape_config_example_is_valid_and_keeps_rmswatch_labels() -> None:
    promtool = require_program("promtool")
    example = REPO_ROOT / "dashboards" / "prometheus" / "scrape-config.example.yml"
    result = subprocess.run(
        [promtool, "check", "config", str(example)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    import yaml

    config = yaml.safe_load(example.read_text(encoding="utf-8"))
    assert all(job["honor_labels"] for job in config["scrape_configs"])
