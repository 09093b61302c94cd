"""The wire format carries every field of every record class, and histograms come back whole."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from rmswatch.collectors.wire import KINDS, decode_batch, encode_batch, wire_fields
from rmswatch.store.writes import SliSampleRecord
from rmswatch.trainer_hooks.records import (
    NONFINITE_KEYS,
    Histogram,
    LayerStats,
    RunInfo,
    RunStatus,
    StepRecord,
    rms_histogram_edges,
)

# Not the default edges, so that the run's own edges are seen to reach every histogram.
EDGES = rms_histogram_edges(-8, 1, 2)


def _sample(hint: Any, name: str, default: Any, seed: int) -> Any:
    """A value of type `hint` unlike the field's default, so the round trip proves it travels."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _sample(inner[0], name, default, seed)
    if hint is Histogram:
        counts = tuple((seed + i) % 5 for i in range(len(EDGES) - 1))
        return Histogram(EDGES, counts, zeros=2, nonfinite=1, exact=False)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return build(hint, seed)
    if origin is Literal:
        options = [a for a in args if a != default]
        return options[seed % len(options)]
    if name == "nonfinite":
        return {k: i + 1 for i, k in enumerate(NONFINITE_KEYS)}
    if origin in (Mapping, dict, typing.Mapping):
        key_type, value_type = args
        return {f"layer{j}.weight": _sample(value_type, name, None, seed + j) for j in range(2)}
    if origin is tuple:
        if name == "hist_edges":
            return EDGES
        return tuple(_sample(args[0], name, None, seed + j) for j in range(2))
    if hint is bool:
        return not default if isinstance(default, bool) else True
    if hint is int:
        return 3 + seed + len(name)
    if hint is float:
        return 0.25 * (seed + 1) + len(name)
    if hint is str:
        return f"{name}-{seed}"
    if hint is Any:
        return {"lr": 0.01}
    raise AssertionError(f"no sample for {name}: {hint!r}; teach the wire test this field type")


def build(cls: type[Any], seed: int = 0) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        values[f.name] = _sample(hints[f.name], f.name, default, seed)
    return cls(**values)


def _defaults_differ(record: Any) -> None:
    for f in dataclasses.fields(record):
        if f.default is not dataclasses.MISSING:
            assert getattr(record, f.name) != f.default, f"{type(record).__name__}.{f.name}"


def _round_trip(run: RunInfo, items: list[Any], status: RunStatus | None = None) -> Any:
    return decode_batch(json.loads(encode_batch(run, items, open_run=True, status=status)))


def test_every_field_of_every_record_class_survives_the_round_trip() -> None:
    run = build(RunInfo)
    items = [build(cls, seed) for seed, cls in enumerate(KINDS.values())]
    status = RunStatus(12.5, "failed", "boom")
    for record in [run, *items]:
        _defaults_differ(record)
    batch = _round_trip(run, items, status)
    assert batch.run == run
    assert batch.open_run is True
    assert [*batch.telemetry, *batch.sli_samples] == items
    assert batch.status == status


def test_a_step_record_keeps_every_layer_field_and_the_histograms_edges() -> None:
    run = build(RunInfo)
    step = build(StepRecord, 4)
    (decoded,) = _round_trip(run, [step]).telemetry
    for name, stats in step.layers.items():
        got = decoded.layers[name]
        for f in dataclasses.fields(LayerStats):
            assert getattr(got, f.name) == getattr(stats, f.name), f"{name}.{f.name}"
        assert got.rms_hist is not None
        assert got.rms_hist.edges == run.hist_edges
        assert len(got.rms_hist.counts) == len(got.rms_hist.edges) - 1


def test_every_dataclass_field_is_on_the_wire_except_the_histograms_edges() -> None:
    for cls in (*KINDS.values(), RunInfo, RunStatus, LayerStats):
        assert {f.name for f in wire_fields(cls)} == {f.name for f in dataclasses.fields(cls)}
    assert {f.name for f in wire_fields(Histogram)} == {"counts", "zeros", "nonfinite", "exact"}


def test_non_finite_floats_travel_as_strings_and_come_back() -> None:
    run = build(RunInfo)
    layer = dataclasses.replace(
        build(LayerStats), grad_norm=math.nan, update_ratio=math.inf, eff_lr_min=-math.inf
    )
    step = dataclasses.replace(build(StepRecord), loss=math.nan, layers={"w": layer})
    body = encode_batch(run, [step])
    assert b"NaN" in body and b"Infinity" in body
    (decoded,) = decode_batch(json.loads(body)).telemetry
    assert math.isnan(decoded.loss) and math.isnan(decoded.layers["w"].grad_norm)
    assert decoded.layers["w"].update_ratio == math.inf
    assert decoded.layers["w"].eff_lr_min == -math.inf


def test_a_histogram_whose_counts_do_not_match_the_runs_edges_is_refused() -> None:
    run = dataclasses.replace(build(RunInfo), hist_edges=(1.0, 10.0, 100.0))
    body = json.loads(encode_batch(run, [build(StepRecord)]))
    batch = decode_batch(body)  # the record alone is refused, naming the field
    assert batch.telemetry == ()
    (refused,) = batch.rejected
    assert refused.field == 'items[0].layers["layer0.weight"].rms_hist.counts'
    assert "expected 2 counts" in refused.detail


def test_an_sli_sample_needs_no_run() -> None:
    sample = build(SliSampleRecord)
    batch = decode_batch(json.loads(encode_batch(None, [sample])))
    assert batch.sli_samples == (sample,) and batch.run is None
