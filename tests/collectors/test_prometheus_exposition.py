from __future__ import annotations

import dataclasses
import math

import pytest

from rmswatch import catalogue as cat
from rmswatch.collectors.prometheus import RunCollector, sanitize_label_name
from rmswatch.trainer_hooks.records import (
    RMS_EDGES,
    CheckpointRecord,
    Histogram,
    SystemSample,
    ValidationRecord,
)
from tests.collectors.exposition import label_values, scrape, value, values
from tests.factories import histogram, layer, record, run_info

RUN = {"job": "resnet-retrain", "run_id": "run-1", "rank": "0"}


def collector_with(*items: object, labels: dict[str, str] | None = None) -> RunCollector:
    collector = RunCollector()
    collector.set_run(run_info(labels=labels))
    collector.update(items)  # type: ignore[arg-type]
    return collector


def test_nothing_is_exported_before_the_run_opens() -> None:
    assert scrape(RunCollector()) == []


def test_step_gauges_carry_the_recorded_values_and_run_labels() -> None:
    samples = scrape(collector_with(record(step=7, loss=0.25, grad_norm=3.5, lr=0.02)))
    assert value(samples, cat.STEPS_TOTAL.name, **RUN) == 7
    assert value(samples, cat.LOSS.name, **RUN) == 0.25
    assert value(samples, cat.GRAD_NORM.name, **RUN) == 3.5
    assert value(samples, cat.LEARNING_RATE.name, group="0") == 0.02
    assert value(samples, cat.LAST_STEP_TIMESTAMP_SECONDS.name) == 1_700_000_000.0
    assert value(samples, cat.EFFECTIVE_LR_STAT.name, stat="p95") == 4e-3
    assert value(samples, cat.RUN_INFO.name, optimizer="RMSprop", host="trainer-1") == 1


def test_nan_loss_and_nan_layer_norm_are_exported_as_nan_not_a_crash() -> None:
    nan_layer = layer(math.nan, nonfinite_grad=4)
    samples = scrape(
        collector_with(
            record(
                loss=math.nan,
                layers={"a.weight": nan_layer, "b.weight": layer()},
                nonfinite={"grad": 4, "loss": 1},
            )
        )
    )
    assert math.isnan(value(samples, cat.LOSS.name))
    assert math.isnan(value(samples, cat.LAYER_GRAD_NORM.name, layer="a.weight"))
    assert value(samples, cat.NONFINITE_VALUES_TOTAL.name, kind="grad") == 4
    assert value(samples, cat.NONFINITE_VALUES_TOTAL.name, kind="loss") == 1
    assert value(samples, cat.NONFINITE_STEPS_TOTAL.name) == 1


def test_infinite_values_are_exported_as_inf() -> None:
    samples = scrape(collector_with(record(loss=math.inf, grad_norm=-math.inf)))
    assert value(samples, cat.LOSS.name) == math.inf
    assert value(samples, cat.GRAD_NORM.name) == -math.inf


def test_nan_in_one_layer_is_counted_in_that_layer_only() -> None:
    layers = {"a.weight": layer(nonfinite_grad=2, nonfinite_state=1), "b.weight": layer()}
    collector = collector_with(record(step=1, layers=layers, nonfinite={"grad": 2, "state": 1}))
    collector.update([record(step=2, layers=layers, nonfinite={"grad": 2, "state": 1})])
    samples = scrape(collector)
    name = cat.LAYER_NONFINITE_VALUES_TOTAL.name
    assert value(samples, name, layer="a.weight", kind="grad") == 4
    assert value(samples, name, layer="a.weight", kind="state") == 2
    assert values(samples, name, layer="b.weight") == []
    assert value(samples, cat.NONFINITE_STEPS_TOTAL.name) == 2


def test_a_loss_that_is_nan_counts_even_when_the_hooks_did_not_count_it() -> None:
    samples = scrape(collector_with(record(loss=math.nan)))
    assert value(samples, cat.NONFINITE_VALUES_TOTAL.name, kind="loss") == 1


def test_counters_accumulate_and_gauges_follow_the_newest_step() -> None:
    collector = collector_with(record(step=3, step_seconds=0.02), record(step=5, step_seconds=2.0))
    collector.update([record(step=4, loss=9.0)])  # late and out of order: counted, not shown
    samples = scrape(collector)
    assert value(samples, cat.STEPS_TOTAL.name) == 5
    assert value(samples, cat.LOSS.name) == 0.5
    duration = cat.STEP_DURATION_SECONDS.name
    assert value(samples, duration + "_count") == 3
    assert value(samples, duration + "_sum") == pytest.approx(2.04)
    assert value(samples, duration + "_bucket", le="0.025") == 2
    assert value(samples, duration + "_bucket", le="+Inf") == 3


def test_dropped_telemetry_is_exported_as_a_counter() -> None:
    samples = scrape(collector_with(record(step=1, dropped_total=12)))
    assert value(samples, cat.TELEMETRY_DROPPED_TOTAL.name) == 12


def test_user_labels_are_sanitised_onto_every_series() -> None:
    labels = {"model": "resnet50", "team-name": "vision", "9lives": "x", "job": "clash"}
    samples = scrape(collector_with(record(), labels=labels))
    grad = [s for s in samples if s.name == cat.GRAD_NORM.name][0]
    assert grad.labels == {
        **RUN,
        "model": "resnet50",
        "team_name": "vision",
        "_9lives": "x",
        "user_job": "clash",
    }
    assert {s.labels["model"] for s in samples} == {"resnet50"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [("a.b-c", "a_b_c"), ("1st", "_1st"), ("__meta", "user_meta"), ("le", "user_le"), ("", "_")],
)
def test_label_names_are_sanitised(given: str, expected: str) -> None:
    assert sanitize_label_name(given) == expected


def test_rms_gauge_histogram_is_cumulative_with_zeros_at_le_zero() -> None:
    hist = histogram(zeros=5, b0=1, b10=3, b47=2)  # b47: the top bucket, clamped values
    samples = scrape(collector_with(record(layers={"w": layer(hist=hist)})))
    bucket = cat.STATE_RMS.name + "_bucket"
    assert value(samples, bucket, le="0.0") == 5
    assert value(samples, bucket, le=repr(RMS_EDGES[1])) == 6
    assert value(samples, bucket, le=repr(RMS_EDGES[10])) == 6
    assert value(samples, bucket, le=repr(RMS_EDGES[11])) == 9
    assert value(samples, bucket, le=repr(RMS_EDGES[47])) == 9
    assert value(samples, bucket, le="+Inf") == 11
    assert value(samples, cat.STATE_RMS.name + "_gcount") == 11
    assert value(samples, cat.LAYER_STATE_RMS.name + "_gcount", layer="w") == 11


def test_effective_lr_distribution_puts_each_rms_bucket_at_lr_over_its_centre() -> None:
    # sqrt(v) in bucket 32 = [1e-2, 1.78e-2): eff LR = 0.01 / (~1.33e-2) ~ 0.75
    samples = scrape(collector_with(record(lr=0.01, layers={"w": layer(hist=histogram(b32=8))})))
    bucket = cat.EFFECTIVE_LR.name + "_bucket"
    bounds = cat.EFFECTIVE_LR_BUCKET_BOUNDS
    centre = math.sqrt(RMS_EDGES[32] * RMS_EDGES[33])
    target = next(b for b in bounds if b >= 0.01 / (centre + 1e-8))
    below = bounds[bounds.index(target) - 1]
    assert below < 0.01 / centre <= target
    assert value(samples, bucket, le=repr(target)) == 8
    assert value(samples, bucket, le=repr(below)) == 0


def test_exact_zero_state_maps_to_lr_over_eps() -> None:
    samples = scrape(collector_with(record(lr=0.01, layers={"w": layer(hist=histogram(zeros=3))})))
    bucket = cat.EFFECTIVE_LR.name + "_bucket"
    # 0.01 / 1e-8 = 1e6: at or below the 1e6 bound, above the one before it
    assert value(samples, bucket, le=repr(cat.EFFECTIVE_LR_BUCKET_BOUNDS[51])) == 3
    assert value(samples, bucket, le=repr(cat.EFFECTIVE_LR_BUCKET_BOUNDS[50])) == 0


def test_histograms_with_other_edges_are_rebinned_onto_the_catalogue_bounds() -> None:
    coarse = Histogram((2e-4, 3e-3, 1.0), (4, 6), 0, 0, True)
    samples = scrape(collector_with(record(layers={"w": layer(hist=coarse)})))
    bucket = cat.STATE_RMS.name + "_bucket"
    # centre of [2e-4, 3e-3) is 7.7e-4, in (10**-3.25, 10**-3]
    assert value(samples, bucket, le=repr(RMS_EDGES[27])) == 0
    assert value(samples, bucket, le=repr(RMS_EDGES[28])) == 4
    assert value(samples, bucket, le="+Inf") == 10


def test_a_layer_without_state_exports_norms_but_no_distribution() -> None:
    samples = scrape(collector_with(record(layers={"w": layer(eff_lr=None), "v": layer()})))
    assert value(samples, cat.LAYER_GRAD_NORM.name, layer="w") == 1.0
    assert label_values(samples, cat.LAYER_STATE_RMS.name + "_gcount", "layer") == {"v"}
    assert values(samples, cat.LAYER_EFFECTIVE_LR_STAT.name, layer="w") == []


def test_system_validation_and_checkpoint_telemetry_are_exported() -> None:
    samples = scrape(
        collector_with(
            record(validation=0.7),
            ValidationRecord(step=1, time=1.0, value=0.6, name="val_acc"),
            SystemSample(time=1.0, cpu_percent=150.0, rss_bytes=1024, gpu_count=0),
            CheckpointRecord(step=1, time=5.0, action="save"),
            CheckpointRecord(step=2, time=6.0, action="save", ok=False, detail="disk full"),
        )
    )
    assert value(samples, cat.VALIDATION_LOSS.name, name="val_loss") == 0.7
    assert value(samples, cat.VALIDATION_LOSS.name, name="val_acc") == 0.6
    assert value(samples, cat.PROCESS_CPU_PERCENT.name) == 150.0
    assert value(samples, cat.PROCESS_RESIDENT_MEMORY_BYTES.name) == 1024
    assert value(samples, cat.GPUS.name) == 0
    assert values(samples, cat.GPU_UTILIZATION_PERCENT.name) == []
    assert value(samples, cat.CHECKPOINTS_TOTAL.name, action="save", outcome="ok") == 1
    assert value(samples, cat.CHECKPOINTS_TOTAL.name, action="save", outcome="failed") == 1
    assert value(samples, cat.LAST_CHECKPOINT_TIMESTAMP_SECONDS.name, action="save") == 5.0


def test_a_scrape_between_records_reuses_the_rendered_snapshot() -> None:
    collector = collector_with(record(step=1))
    assert collector.collect() is collector.collect()
    first = collector.collect()
    collector.update([record(step=2)])
    assert collector.collect() is not first


def test_a_sentinel_record_updates_loss_and_grad_norm_and_keeps_the_last_full_records_layers() -> (
    None
):
    collector = RunCollector()
    collector.set_run(run_info())
    full = record(step=10, loss=0.5, grad_norm=1.5)
    sentinel = dataclasses.replace(
        record(step=11, loss=0.25, grad_norm=2.5, layers={}),
        full=False,
        param_norm=math.nan,
        update_norm=math.nan,
        update_ratio=math.nan,
        eff_lr_mean=None,
        eff_lr_min=None,
        eff_lr_p50=None,
        eff_lr_p95=None,
        eff_lr_max=None,
    )
    collector.update([full, sentinel])
    samples = scrape(collector)
    assert value(samples, cat.STEPS_TOTAL.name) == 11
    assert value(samples, cat.LOSS.name) == 0.25
    assert value(samples, cat.GRAD_NORM.name) == 2.5
    assert value(samples, cat.PARAM_NORM.name) == 20.0  # from step 10, not NaN
    assert value(samples, cat.LAYER_GRAD_NORM.name, layer="fc.weight") == 1.0


def test_every_checkpoint_counter_child_exists_at_zero_before_any_checkpoint() -> None:
    samples = scrape(collector_with(record(step=1)))
    for action in ("save", "load"):
        for outcome in ("ok", "failed"):
            assert value(samples, cat.CHECKPOINTS_TOTAL.name, action=action, outcome=outcome) == 0


def test_the_first_failed_save_is_an_increase_from_zero_in_the_exposition() -> None:
    collector = collector_with(record(step=1))
    before = value(scrape(collector), cat.CHECKPOINTS_TOTAL.name, action="save", outcome="failed")
    collector.update([CheckpointRecord(step=2, time=2.0, action="save", ok=False)])
    after = value(scrape(collector), cat.CHECKPOINTS_TOTAL.name, action="save", outcome="failed")
    assert (before, after) == (0, 1)
