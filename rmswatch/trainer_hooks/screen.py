"""Records checked against the store's limits (`rmswatch._limits`), the same way everywhere.

`check_run` raises at `watch()` time; `screen` runs on every record in `Monitor`, `StoreWriter`
and the ingest API: a bad part of a record (one layer) is cut out and the rest kept, a record
whose identity (step, time) is bad is rejected whole. Each problem is a `LimitError` naming the
field, so the same input is stored the same way on SQLite, PostgreSQL and over HTTP.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from rmswatch._limits import (
    INT32_MAX,
    LimitError,
    check_float,
    check_int,
    check_json_depth,
    check_labels,
    check_text,
    check_time,
    clean_detail,
)
from rmswatch.trainer_hooks.records import (
    CheckpointRecord,
    LayerInfo,
    LayerStats,
    RunInfo,
    RunStatus,
    StepRecord,
    SystemSample,
    Telemetry,
    ValidationRecord,
)


def check_job(value: Any) -> str:
    return check_text("job", value, 256)


def check_run_id(value: Any) -> str:
    return check_text("run_id", value, 128)


def check_layer_name(field: str, value: Any) -> str:
    return check_text(field, value, 512)


def check_metric_name(field: str, value: Any) -> str:
    return check_text(field, value, 128)


def check_run(run: RunInfo) -> RunInfo:
    """`run` if every field fits the store; raises LimitError naming the first that doesn't."""
    check_job(run.job)
    check_run_id(run.run_id)
    check_time("started_at", run.started_at)
    labels = check_labels("labels", run.labels)
    check_int("rank", run.rank, 0, INT32_MAX)
    check_int("world_size", run.world_size, 1, INT32_MAX)
    check_text("host", run.host, 256, min_length=0, control=False)
    check_int("pid", run.pid, 0, INT32_MAX)
    check_text("optimizer", run.optimizer, 128, min_length=0, control=False)
    check_int("every", run.every, 1, INT32_MAX)
    if run.resumed_from_step is not None:
        check_int("resumed_from_step", run.resumed_from_step)
    check_json_depth("hyperparameters", list(run.hyperparameters))
    for index, layer in enumerate(run.layers):
        _check_layer_info(f"layers[{index}]", layer)
    for index, edge in enumerate(run.hist_edges):
        check_float(f"hist_edges[{index}]", edge)
    return run if labels == run.labels else dataclasses.replace(run, labels=labels)


def _check_layer_info(field: str, layer: LayerInfo) -> None:
    check_layer_name(f"{field}.name", layer.name)
    check_text(f"{field}.dtype", layer.dtype, 64, min_length=0, control=False)
    check_int(f"{field}.group", layer.group, 0, INT32_MAX)
    check_int(f"{field}.numel", layer.numel)
    for axis, size in enumerate(layer.shape):
        check_int(f"{field}.shape[{axis}]", size)


def clean_status(status: RunStatus) -> RunStatus:
    """`status` with its detail made storable; raises LimitError for a time no store takes."""
    check_time("status.time", status.time)
    detail = clean_detail(status.detail)
    return status if detail == status.detail else dataclasses.replace(status, detail=detail)


def safe_status(status: RunStatus) -> RunStatus:
    """A run's final status is never refused: a bad time becomes now, the detail is cleaned."""
    try:
        return clean_status(status)
    except LimitError:
        return dataclasses.replace(status, time=time.time(), detail=clean_detail(status.detail))


def screen(item: Telemetry) -> tuple[Telemetry | None, list[LimitError]]:
    """The part of `item` every store accepts (None: nothing), and what was cut, by field."""
    try:
        if isinstance(item, StepRecord):
            return _screen_step(item)
        if isinstance(item, ValidationRecord):
            check_int("step", item.step)
            check_time("time", item.time)
            check_float("value", item.value)
            check_metric_name("name", item.name)
            return item, []
        if isinstance(item, CheckpointRecord):
            return _screen_checkpoint(item), []
        if isinstance(item, SystemSample):
            check_time("time", item.time)
            check_float("cpu_percent", item.cpu_percent)
            check_int("rss_bytes", item.rss_bytes)
            if item.gpu_util_percent is not None:
                check_float("gpu_util_percent", item.gpu_util_percent)
            if item.gpu_memory_bytes is not None:
                check_int("gpu_memory_bytes", item.gpu_memory_bytes)
            check_int("gpu_count", item.gpu_count, 0, INT32_MAX)
            return item, []
    except LimitError as exc:
        return None, [exc]
    return item, []  # a record kind this module doesn't know: the store decides


def _screen_checkpoint(item: CheckpointRecord) -> CheckpointRecord:
    check_int("step", item.step)
    check_time("time", item.time)
    if item.seconds is not None:
        check_float("seconds", item.seconds)
    if item.size_bytes is not None:
        check_int("size_bytes", item.size_bytes)
    check_text("path", item.path, 4096, min_length=0, control=False)
    detail = clean_detail(item.detail)
    return item if detail == item.detail else dataclasses.replace(item, detail=detail)


_STEP_FLOATS = ("grad_norm", "param_norm", "update_norm", "lr", "update_ratio")
_STEP_OPTIONAL_FLOATS = (
    "loss", "step_seconds", "eff_lr_mean", "eff_lr_min", "eff_lr_p50", "eff_lr_p95",
    "eff_lr_max", "validation", "grad_norm_before_clip", "loss_scale",
)  # fmt: skip
_LAYER_FLOATS = ("grad_norm", "param_norm", "update_norm", "update_ratio")
_LAYER_OPTIONAL_FLOATS = (
    "eff_lr_mean", "eff_lr_min", "eff_lr_p50", "eff_lr_p95", "eff_lr_max", "grad_norm_before_clip",
)  # fmt: skip
_LAYER_COUNTS = ("nonfinite_grad", "nonfinite_param", "nonfinite_state", "numel")


def _screen_step(item: StepRecord) -> tuple[StepRecord, list[LimitError]]:
    check_int("step", item.step)
    check_time("time", item.time)
    for name in _STEP_FLOATS:
        check_float(name, getattr(item, name))
    for name in _STEP_OPTIONAL_FLOATS:
        if getattr(item, name, None) is not None:
            check_float(name, getattr(item, name))
    for key, count in item.nonfinite.items():
        check_int(f"nonfinite[{json.dumps(key)}]", count)
    check_int("dropped_total", item.dropped_total)
    check_int("rank", item.rank, 0, INT32_MAX)
    check_int("world_size", getattr(item, "world_size", 1), 1, INT32_MAX)
    cut: list[LimitError] = []
    layers: dict[str, LayerStats] = {}
    for name, stats in item.layers.items():
        try:
            _check_layer(name, stats)
        except LimitError as exc:
            cut.append(exc)
        else:
            layers[name] = stats
    if not cut:
        return item, []
    return dataclasses.replace(item, layers=layers), cut


def _check_layer(name: str, stats: LayerStats) -> None:
    field = f"layers[{json.dumps(name, ensure_ascii=False)[:80]}]"
    check_layer_name(field, name)
    for attr in _LAYER_FLOATS:
        check_float(f"{field}.{attr}", getattr(stats, attr))
    for attr in _LAYER_OPTIONAL_FLOATS:
        if getattr(stats, attr, None) is not None:
            check_float(f"{field}.{attr}", getattr(stats, attr))
    for attr in _LAYER_COUNTS:
        check_int(f"{field}.{attr}", getattr(stats, attr))
    check_int(f"{field}.group", stats.group, 0, INT32_MAX)
    hist = stats.rms_hist
    if hist is not None:
        for index, count in enumerate(hist.counts):
            check_int(f"{field}.rms_hist.counts[{index}]", count)
        check_int(f"{field}.rms_hist.zeros", hist.zeros)
        check_int(f"{field}.rms_hist.nonfinite", hist.nonfinite)


def describe(item: Telemetry) -> str:
    """A short name for a record in a log line or a quarantine entry: kind and step."""
    step = getattr(item, "step", None)
    kind = type(item).__name__
    return f"{kind}(step={step})" if step is not None else kind
