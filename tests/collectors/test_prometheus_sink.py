from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from rmswatch import catalogue as cat
from rmswatch.collectors.prometheus import PrometheusSink
from rmswatch.trainer_hooks.records import RunStatus
from rmswatch.trainer_hooks.sinks import Sink
from tests.collectors.exposition import parse, value
from tests.factories import record, run_info
from tests.helpers import free_port


def get(url: str, accept: str = "") -> tuple[str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


def test_port_zero_binds_a_free_port_on_localhost_and_serves_the_latest_record() -> None:
    with PrometheusSink(port=0) as sink:
        assert isinstance(sink, Sink)
        assert sink.host == "127.0.0.1"
        assert sink.port > 0
        sink.open(run_info())
        sink.write([record(step=41), record(step=42)])
        sink.flush()
        _, text = get(sink.url)
    assert value(parse(text), cat.STEPS_TOTAL.name, job="resnet-retrain") == 42


def test_the_exporter_speaks_openmetrics_when_asked_with_gauge_histograms() -> None:
    with PrometheusSink(port=0) as sink:
        sink.open(run_info())
        sink.write([record()])
        content_type, text = get(sink.url, accept="application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert f"# TYPE {cat.STATE_RMS.name} gaugehistogram" in text
    assert f"# TYPE {cat.STEP_DURATION_SECONDS.name} histogram" in text
    assert f"# UNIT {cat.STEP_DURATION_SECONDS.name} seconds" in text
    assert text.endswith("# EOF\n")


def test_a_given_registry_is_used_and_the_collector_leaves_it_on_close() -> None:
    registry = CollectorRegistry()
    sink = PrometheusSink(port=0, registry=registry)
    sink.open(run_info())
    sink.write([record(step=3)])
    assert (
        registry.get_sample_value(
            cat.STEPS_TOTAL.name, {"job": "resnet-retrain", "run_id": "run-1", "rank": "0"}
        )
        == 3
    )
    sink.close(RunStatus(time=0.0, status="succeeded"))
    assert registry.get_sample_value(cat.STEPS_TOTAL.name) is None
    # the names are free again: a second exporter can register
    PrometheusSink(port=0, registry=registry).close()


def test_two_exporters_on_one_registry_are_refused() -> None:
    registry = CollectorRegistry()
    with PrometheusSink(port=0, registry=registry), pytest.raises(ValueError, match="Duplicated"):
        PrometheusSink(port=0, registry=registry)


def test_close_stops_serving() -> None:
    sink = PrometheusSink(port=0)
    url = sink.url
    get(url)
    sink.close(RunStatus(time=0.0, status="succeeded"))
    sink.close(RunStatus(time=0.0, status="succeeded"))  # idempotent
    with pytest.raises(urllib.error.URLError):
        get(url)


def test_a_port_in_use_fails_at_construction_and_frees_the_registry() -> None:
    registry = CollectorRegistry()
    with PrometheusSink(port=0) as taken:
        with pytest.raises(OSError):
            PrometheusSink(port=taken.port, registry=registry)
        PrometheusSink(port=free_port(), registry=registry).close()


@pytest.mark.parametrize("port", [-1, 70000, "9100"])
def test_a_bad_port_is_refused_naming_the_argument(port: object) -> None:
    with pytest.raises(ValueError, match="port="):
        PrometheusSink(port=port)  # type: ignore[arg-type]
