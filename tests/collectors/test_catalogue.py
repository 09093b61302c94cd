from __future__ import annotations

import re

from rmswatch import catalogue as cat
from rmswatch.collectors.prometheus import RunCollector
from rmswatch.trainer_hooks.records import CheckpointRecord, SystemSample, ValidationRecord
from tests.collectors.exposition import scrape
from tests.factories import layer, record, run_info

NAME = re.compile(r"rmswatch_[a-z][a-z0-9_]*\Z")
LABEL = re.compile(r"[a-z_][a-z0-9_]*\Z")


def test_every_metric_is_prefixed_snake_case_and_listed_once() -> None:
    names = [spec.name for spec in cat.METRICS]
    assert len(names) == len(set(names))
    for spec in cat.METRICS:
        assert NAME.match(spec.name), spec.name
        assert all(LABEL.match(label) for label in spec.labels), spec
        assert spec.help.endswith((".", ")")), spec.name


def test_counters_end_in_total_and_units_are_suffixes() -> None:
    for spec in cat.METRICS:
        assert spec.name.endswith("_total") == (spec.type == "counter"), spec.name
        if spec.unit:
            assert spec.name.endswith("_" + spec.unit), spec.name
        if spec.name.endswith(("_seconds", "_bytes")):
            assert spec.unit, f"{spec.name} needs a unit"


def test_per_layer_metrics_carry_the_layer_label() -> None:
    for spec in cat.METRICS:
        assert ("layer" in spec.labels) == spec.per_layer, spec.name


def test_the_alerting_constant_names_the_non_finite_steps_counter() -> None:
    assert cat.STEP_NONFINITE_TOTAL.name == "rmswatch_nonfinite_steps_total"


def test_the_exporter_serves_every_catalogue_metric_and_nothing_else() -> None:
    collector = RunCollector()
    collector.set_run(run_info())
    collector.update(
        [
            record(layers={"w": layer(nonfinite_grad=1)}, nonfinite={"grad": 1}, validation=0.5),
            ValidationRecord(step=1, time=1.0, value=0.4),
            SystemSample(
                1.0, 10.0, 1 << 20, gpu_util_percent=50.0, gpu_memory_bytes=1, gpu_count=1
            ),
            CheckpointRecord(step=1, time=1.0, action="save"),
        ]
    )
    served = {sample.name for sample in scrape(collector)}
    # the text format spells a gauge histogram's count as a gauge of its own, like OpenMetrics
    assert served == cat.sample_names()


def test_the_alert_rules_name_only_metrics_the_exporter_serves() -> None:
    from rmswatch.alerting import prom_names

    # a name may carry a label selector (`metric{stat="mean"}`): the metric is the part before it
    metric_names = {
        key: value.split("{", 1)[0]
        for key, value in vars(prom_names).items()
        if key.isupper()
        and isinstance(value, str)
        and value.startswith(cat.PREFIX)
        and ":" not in value  # recording rules are the rules' own output
    }
    unknown = {key: value for key, value in metric_names.items() if value not in cat.sample_names()}
    assert not unknown, f"alerting.prom_names names metrics the exporter does not serve: {unknown}"
