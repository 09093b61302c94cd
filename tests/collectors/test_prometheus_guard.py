from __future__ import annotations

import math

import pytest

from rmswatch import catalogue as cat
from rmswatch.collectors.prometheus import RunCollector, exported_series, quantile_from_buckets
from tests.collectors.exposition import label_values, scrape, value, values
from tests.factories import histogram, layer, record, run_info


def big_model(n: int = 1000) -> dict[str, object]:
    # grad norms 1..n: the largest are the last tensors
    return {
        f"blocks.{i // 2}.{'weight' if i % 2 == 0 else 'bias'}": layer(float(i + 1))
        for i in range(n)
    }


def scraped(**knobs: object) -> list:  # type: ignore[type-arg]
    collector = RunCollector(**knobs)  # type: ignore[arg-type]
    collector.set_run(run_info())
    collector.update([record(layers=big_model())])  # type: ignore[arg-type]
    return scrape(collector)


def test_by_default_a_thousand_tensors_export_the_top_layers_and_one_other() -> None:
    samples = scraped()
    layers = label_values(samples, cat.LAYER_GRAD_NORM.name, "layer")
    assert len(layers) == 20 + 1
    assert cat.OTHER_LAYERS in layers
    assert "blocks.499.bias" in layers  # grad norm 1000, the largest
    assert "blocks.0.weight" not in layers
    assert value(samples, cat.EXPORTED_LAYERS.name) == 20
    series = len(samples)
    assert series < 3000, f"{series} series under the default guard"


def test_the_guard_keeps_sums_over_layers_complete() -> None:
    samples = scraped()
    grad = values(samples, cat.LAYER_GRAD_NORM.name)
    expected = math.sqrt(sum((i + 1) ** 2 for i in range(1000)))
    assert math.sqrt(sum(g * g for g in grad)) == pytest.approx(expected)
    elements = values(samples, cat.LAYER_STATE_RMS.name + "_gcount")
    assert sum(elements) == value(samples, cat.STATE_RMS.name + "_gcount") == 1000 * 100


def test_a_layer_with_non_finite_values_is_always_exported_by_name() -> None:
    layers = big_model()
    layers["blocks.0.weight"] = layer(0.0, nonfinite_param=1)
    collector = RunCollector()
    collector.set_run(run_info())
    collector.update([record(layers=layers, nonfinite={"param": 1})])  # type: ignore[arg-type]
    samples = scrape(collector)
    assert "blocks.0.weight" in label_values(samples, cat.LAYER_GRAD_NORM.name, "layer")


def test_a_nan_grad_norm_ranks_above_every_finite_one() -> None:
    layers = big_model()
    layers["blocks.3.bias"] = layer(math.nan)
    collector = RunCollector(max_layers=1)
    collector.set_run(run_info())
    collector.update([record(layers=layers)])  # type: ignore[arg-type]
    samples = scrape(collector)
    exported = label_values(samples, cat.LAYER_GRAD_NORM.name, "layer")
    assert exported == {"blocks.3.bias", cat.OTHER_LAYERS}


def test_with_the_guard_off_every_tensor_is_exported() -> None:
    collector = RunCollector(max_layers=None)
    collector.set_run(run_info())
    collector.update([record(layers=big_model())])  # type: ignore[arg-type]
    # 116k series: read the families directly, parsing 15 MB of text would dominate the test
    samples = list(exported_series(collector.collect()))
    layers = label_values(samples, cat.LAYER_GRAD_NORM.name, "layer")
    assert len(layers) == 1000
    assert cat.OTHER_LAYERS not in layers


def test_layer_depth_groups_tensors_by_module_prefix_with_exact_norms() -> None:
    layers = {"enc.0.w": layer(3.0), "enc.0.b": layer(4.0), "enc.1.w": layer(1.0), "head": layer(2)}
    collector = RunCollector(layer_depth=2)
    collector.set_run(run_info())
    collector.update([record(layers=layers)])
    samples = scrape(collector)
    assert label_values(samples, cat.LAYER_GRAD_NORM.name, "layer") == {"enc.0", "enc.1", "head"}
    assert value(samples, cat.LAYER_GRAD_NORM.name, layer="enc.0") == pytest.approx(5.0)
    assert value(samples, cat.LAYER_PARAM_NORM.name, layer="enc.0") == pytest.approx(
        math.hypot(10, 10)
    )
    assert value(samples, cat.LAYER_STATE_RMS.name + "_gcount", layer="enc.0") == 200
    stat = cat.LAYER_EFFECTIVE_LR_STAT.name
    assert value(samples, stat, layer="enc.0", stat="min") == 1e-3
    assert value(samples, stat, layer="enc.0", stat="max") == 5e-3
    assert value(samples, stat, layer="enc.0", stat="mean") == pytest.approx(2e-3)


def test_layer_depth_sums_non_finite_counters_per_group() -> None:
    layers = {"enc.0.w": layer(nonfinite_grad=1), "enc.0.b": layer(nonfinite_grad=2)}
    collector = RunCollector(layer_depth=2)
    collector.set_run(run_info())
    collector.update([record(layers=layers, nonfinite={"grad": 3})])
    samples = scrape(collector)
    name = cat.LAYER_NONFINITE_VALUES_TOTAL.name
    assert value(samples, name, layer="enc.0", kind="grad") == 3


def test_per_layer_distributions_can_be_turned_off() -> None:
    samples = scraped(layer_distributions=False)
    assert values(samples, cat.LAYER_STATE_RMS.name + "_gcount") == []
    assert value(samples, cat.STATE_RMS.name + "_gcount") == 100_000
    assert len(label_values(samples, cat.LAYER_GRAD_NORM.name, "layer")) == 21


@pytest.mark.parametrize(
    ("knob", "bad"), [("layer_depth", 0), ("layer_depth", "2"), ("max_layers", -1)]
)
def test_bad_guard_knobs_are_refused_naming_the_knob(knob: str, bad: object) -> None:
    with pytest.raises(ValueError, match=knob):
        RunCollector(**{knob: bad})  # type: ignore[arg-type]


def test_quantile_from_buckets_interpolates_inside_the_bucket() -> None:
    import numpy as np

    bounds = np.array([1.0, 10.0, 100.0, math.inf])
    counts = np.array([0.0, 10.0, 0.0, 0.0])
    assert quantile_from_buckets(counts, bounds, 0.5) == pytest.approx(math.sqrt(10.0))
    assert quantile_from_buckets(np.zeros(4), bounds, 0.5) is None
    assert quantile_from_buckets(np.array([0.0, 0.0, 0.0, 5.0]), bounds, 0.5) == 100.0


def test_merged_layers_get_p50_and_p95_from_their_merged_distribution() -> None:
    low, high = histogram(b40=100), histogram(b20=100)  # sqrt(v) ~1.3 and ~1.3e-5
    layers = {"m.a": layer(hist=low), "m.b": layer(hist=high)}
    collector = RunCollector(layer_depth=1)
    collector.set_run(run_info())
    collector.update([record(layers=layers, lr=0.01)])
    samples = scrape(collector)
    stat = cat.LAYER_EFFECTIVE_LR_STAT.name
    p50 = value(samples, stat, layer="m", stat="p50")
    p95 = value(samples, stat, layer="m", stat="p95")
    assert 5e-3 < p50 < 2e-2  # lr / ~1.3: half the elements sit there
    assert 562 < p95 <= 1000  # lr / ~1.3e-5 = 750, in the (10**2.75, 10**3] bucket


def test_a_merged_layer_with_a_nan_parameter_norm_exports_a_nan_update_ratio() -> None:
    """The record says NaN for a NaN norm (no meaningful ratio); the exporter's merged layers
    use the same definition (`records.update_ratio`), never an +Inf that reads as a huge update."""
    from rmswatch.trainer_hooks.records import update_ratio

    layers = {
        "blocks.0.weight": layer(1.0, param_norm=math.nan, nonfinite_param=3),
        "blocks.0.bias": layer(1.0),
        "head.0.weight": layer(1.0, param_norm=0.0, update_norm=0.5),
        "head.0.bias": layer(1.0, param_norm=0.0, update_norm=0.0),
    }
    collector = RunCollector(layer_depth=2)
    collector.set_run(run_info())
    collector.update([record(layers=layers, nonfinite={"param": 3})])  # type: ignore[arg-type]
    samples = scrape(collector)
    merged = value(samples, cat.LAYER_UPDATE_RATIO.name, layer="blocks.0")
    assert math.isnan(merged)
    assert math.isnan(update_ratio(0.01, math.nan))
    # a zero parameter that gets a non-zero update: +Inf, in the record and the exporter alike
    assert value(samples, cat.LAYER_UPDATE_RATIO.name, layer="head.0") == math.inf
    assert update_ratio(0.5, 0.0) == math.inf
