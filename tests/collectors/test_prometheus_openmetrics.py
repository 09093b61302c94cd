"""Every scrape of a realistic exporter parses strictly: OpenMetrics by prometheus_client's own
parser, the classic text format by the real `promtool check metrics`."""

from __future__ import annotations

import math
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from rmswatch import catalogue as cat
from rmswatch.collectors.prometheus import PrometheusSink
from rmswatch.trainer_hooks.records import (
    RMS_EDGES,
    CheckpointRecord,
    SystemSample,
    ValidationRecord,
)
from tests.factories import histogram, layer, record, run_info
from tests.helpers import require_program

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def get(url: str, accept: str = "") -> str:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def promtool_check(text: str) -> tuple[int, str, str]:
    promtool = require_program("promtool")
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def exporter() -> Iterator[PrometheusSink]:
    # 40 layers with max_layers=8: named layers, an `other` bucket, histograms, non-finite
    # layers, checkpoint outcomes, validation and system gauges: every family the exporter has.
    with PrometheusSink(port=0, max_layers=8) as sink:
        sink.open(run_info(labels={"model": "resnet", "team-name": "vision"}, layers=0))
        yield sink


def realistic_steps(step: int) -> list[object]:
    layers = {
        f"blocks.{i}.weight": layer(float(i + 1), hist=histogram(zeros=i, b3=2, b20=10 * i, b47=1))
        for i in range(40)
    }
    layers["blocks.3.bias"] = layer(math.nan, nonfinite_grad=2)
    return [
        record(step=step, layers=layers, nonfinite={"grad": 2}, loss=math.nan),
        record(step=step + 1, layers=layers, validation=0.4),
        ValidationRecord(step=step + 1, time=2.0, value=0.3, name="val_acc"),
        SystemSample(2.0, 120.0, 1 << 30, gpu_util_percent=80.0, gpu_memory_bytes=5, gpu_count=1),
        CheckpointRecord(step=step + 1, time=2.0, action="save"),
        CheckpointRecord(step=step + 1, time=2.0, action="save", ok=False),
    ]


def strict_openmetrics(text: str) -> dict[str, str]:
    """Family name -> type, raising on anything the strict parser refuses."""
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def test_every_scrape_of_a_training_run_parses_as_strict_openmetrics_and_lints(
    exporter: PrometheusSink,
) -> None:
    scrapes = [(get(exporter.url, OPENMETRICS), get(exporter.url))]  # before the first step
    for step in (1, 3, 5):
        exporter.write(realistic_steps(step))  # type: ignore[arg-type]
        scrapes.append((get(exporter.url, OPENMETRICS), get(exporter.url)))
    for openmetrics, classic in scrapes:
        strict_openmetrics(openmetrics)
        assert promtool_check(classic) == (0, "", "")
    types = strict_openmetrics(scrapes[-1][0])
    assert types[cat.STATE_RMS.name] == "gaugehistogram"
    assert types[cat.LAYER_EFFECTIVE_LR.name] == "gaugehistogram"
    assert types[cat.STEP_DURATION_SECONDS.name] == "histogram"
    assert types[cat.CHECKPOINTS_TOTAL.family] == "counter"


def test_gauge_histograms_carry_gsum_beside_gcount_estimated_from_bucket_centres(
    exporter: PrometheusSink,
) -> None:
    hist = histogram(zeros=4, b20=10)
    exporter.write([record(layers={"w": layer(hist=hist)})])
    families = text_string_to_metric_families(get(exporter.url, OPENMETRICS))
    samples = {(s.name, s.labels.get("layer")): s.value for f in families for s in f.samples}

    centre = math.sqrt(RMS_EDGES[20] * RMS_EDGES[21])
    assert samples[(cat.LAYER_STATE_RMS.name + "_gcount", "w")] == 14
    # exact zeros sum to 0; the 10 values of bucket 20 count at its geometric centre
    assert samples[(cat.LAYER_STATE_RMS.name + "_gsum", "w")] == pytest.approx(10 * centre)
    assert samples[(cat.STATE_RMS.name + "_gsum", None)] == pytest.approx(10 * centre)
    assert samples[(cat.EFFECTIVE_LR.name + "_gsum", None)] > 0
