"""The JSON wire format between `HttpShipper` and `POST /api/v1/ingest` (version 1).

A batch is `{"version": 1, "run": {...}, "open": bool, "items": [...], "status": {...}}`; each
item has a `kind` (`step`, `validation`, `checkpoint`, `system`, `sli`). Non-finite floats travel
as the strings "NaN", "Infinity", "-Infinity" so any JSON parser reads them. `decode_batch` turns
a parsed body into records or raises `WireError` naming the first bad field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rmswatch.store.writes import SliSampleRecord
from rmswatch.trainer_hooks.records import (
    RMS_EDGES,
    CheckpointRecord,
    Histogram,
    LayerInfo,
    LayerStats,
    RankCheckRecord,
    RunInfo,
    RunStatus,
    StepRecord,
    SystemSample,
    Telemetry,
    ValidationRecord,
)

WIRE_VERSION = 1


class WireError(ValueError):
    """A batch that can't be ingested; `field` is the path of the first bad value."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


# -- encoding ---------------------------------------------------------------------------------


def _num(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _hist(hist: Histogram | None) -> dict[str, Any] | None:
    if hist is None:
        return None
    return {
        "counts": list(hist.counts),
        "zeros": hist.zeros,
        "nonfinite": hist.nonfinite,
        "exact": hist.exact,
    }


def _layer(stats: LayerStats) -> dict[str, Any]:
    return {
        "grad_norm": _num(stats.grad_norm),
        "param_norm": _num(stats.param_norm),
        "update_norm": _num(stats.update_norm),
        "update_ratio": _num(stats.update_ratio),
        "nonfinite_grad": stats.nonfinite_grad,
        "nonfinite_param": stats.nonfinite_param,
        "nonfinite_state": stats.nonfinite_state,
        "eff_lr_mean": _num(stats.eff_lr_mean),
        "eff_lr_min": _num(stats.eff_lr_min),
        "eff_lr_p50": _num(stats.eff_lr_p50),
        "eff_lr_p95": _num(stats.eff_lr_p95),
        "eff_lr_max": _num(stats.eff_lr_max),
        "rms_hist": _hist(stats.rms_hist),
        "group": stats.group,
        "numel": stats.numel,
        "has_grad": stats.has_grad,
        "sparse_grad": stats.sparse_grad,
    }


def encode_item(item: Telemetry | SliSampleRecord) -> dict[str, Any]:
    if isinstance(item, StepRecord):
        return {
            "kind": "step",
            "step": item.step,
            "time": item.time,
            "loss": _num(item.loss),
            "grad_norm": _num(item.grad_norm),
            "param_norm": _num(item.param_norm),
            "update_norm": _num(item.update_norm),
            "lr": _num(item.lr),
            "step_seconds": _num(item.step_seconds),
            "nonfinite": dict(item.nonfinite),
            "layers": {name: _layer(stats) for name, stats in item.layers.items()},
            "lrs": [_num(lr) for lr in item.lrs],
            "update_ratio": _num(item.update_ratio),
            "eff_lr_mean": _num(item.eff_lr_mean),
            "eff_lr_min": _num(item.eff_lr_min),
            "eff_lr_p50": _num(item.eff_lr_p50),
            "eff_lr_p95": _num(item.eff_lr_p95),
            "eff_lr_max": _num(item.eff_lr_max),
            "validation": _num(item.validation),
            "dropped_total": item.dropped_total,
            "rank": item.rank,
        }
    if isinstance(item, ValidationRecord):
        return {
            "kind": "validation",
            "step": item.step,
            "time": item.time,
            "value": _num(item.value),
            "name": item.name,
        }
    if isinstance(item, CheckpointRecord):
        return {
            "kind": "checkpoint",
            "step": item.step,
            "time": item.time,
            "action": item.action,
            "ok": item.ok,
            "seconds": item.seconds,
            "size_bytes": item.size_bytes,
            "path": item.path,
            "detail": item.detail,
        }
    if isinstance(item, RankCheckRecord):
        return {
            "kind": "rank_check",
            "step": item.step,
            "time": item.time,
            "status": item.status,
            "ranks": list(item.ranks),
            "layers": list(item.layers),
            "detail": item.detail,
            "world_size": item.world_size,
        }
    if isinstance(item, SystemSample):
        return {
            "kind": "system",
            "time": item.time,
            "cpu_percent": _num(item.cpu_percent),
            "rss_bytes": item.rss_bytes,
            "gpu_util_percent": _num(item.gpu_util_percent),
            "gpu_memory_bytes": item.gpu_memory_bytes,
            "gpu_count": item.gpu_count,
        }
    if isinstance(item, SliSampleRecord):
        return {
            "kind": "sli",
            "job": item.job,
            "name": item.name,
            "value": _num(item.value),
            "time": item.time,
            "labels": dict(item.labels),
        }
    raise TypeError(f"cannot encode {type(item).__name__} for the ingest API")


def encode_run(run: RunInfo) -> dict[str, Any]:
    from rmswatch.store.writes import jsonable

    return {
        "job": run.job,
        "run_id": run.run_id,
        "started_at": run.started_at,
        "labels": dict(run.labels),
        "rank": run.rank,
        "world_size": run.world_size,
        "host": run.host,
        "pid": run.pid,
        "optimizer": run.optimizer,
        "hyperparameters": jsonable(list(run.hyperparameters)),
        "layers": [
            {
                "name": li.name,
                "shape": list(li.shape),
                "dtype": li.dtype,
                "group": li.group,
                "numel": li.numel,
            }
            for li in run.layers
        ],
        "hist_edges": list(run.hist_edges),
        "resumed_from_step": run.resumed_from_step,
        "every": run.every,
    }


def encode_batch(
    run: RunInfo | None,
    items: Sequence[Telemetry | SliSampleRecord],
    *,
    open_run: bool = False,
    status: RunStatus | None = None,
) -> bytes:
    body: dict[str, Any] = {"version": WIRE_VERSION, "items": [encode_item(i) for i in items]}
    if run is not None:
        body["run"] = encode_run(run)
        body["open"] = open_run
    if status is not None:
        body["status"] = {"time": status.time, "status": status.status, "detail": status.detail}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


# -- decoding ---------------------------------------------------------------------------------


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _HistogramIn(_M):
    counts: list[Annotated[int, Field(ge=0)]]
    zeros: int = Field(default=0, ge=0)
    nonfinite: int = Field(default=0, ge=0)
    exact: bool = True


class _LayerIn(_M):
    grad_norm: float
    param_norm: float
    update_norm: float
    update_ratio: float
    nonfinite_grad: int = Field(default=0, ge=0)
    nonfinite_param: int = Field(default=0, ge=0)
    nonfinite_state: int = Field(default=0, ge=0)
    eff_lr_mean: float | None = None
    eff_lr_min: float | None = None
    eff_lr_p50: float | None = None
    eff_lr_p95: float | None = None
    eff_lr_max: float | None = None
    rms_hist: _HistogramIn | None = None
    group: int = 0
    numel: int = Field(default=0, ge=0)
    has_grad: bool = True
    sparse_grad: bool = False


class _StepIn(_M):
    kind: Literal["step"]
    step: int = Field(ge=0)
    time: float
    loss: float | None = None
    grad_norm: float
    param_norm: float
    update_norm: float
    lr: float
    step_seconds: float | None = None
    nonfinite: dict[Literal["grad", "param", "state", "loss"], Annotated[int, Field(ge=0)]] = {}
    layers: dict[Annotated[str, Field(min_length=1, max_length=512)], _LayerIn] = {}
    lrs: list[float] = []
    update_ratio: float = 0.0
    eff_lr_mean: float | None = None
    eff_lr_min: float | None = None
    eff_lr_p50: float | None = None
    eff_lr_p95: float | None = None
    eff_lr_max: float | None = None
    validation: float | None = None
    dropped_total: int = Field(default=0, ge=0)
    rank: int = Field(default=0, ge=0)


class _ValidationIn(_M):
    kind: Literal["validation"]
    step: int = Field(ge=0)
    time: float
    value: float
    name: str = Field(default="val_loss", min_length=1, max_length=128)


class _CheckpointIn(_M):
    kind: Literal["checkpoint"]
    step: int = Field(ge=0)
    time: float
    action: Literal["save", "load"]
    ok: bool = True
    seconds: float | None = None
    size_bytes: int | None = Field(default=None, ge=0)
    path: str = ""
    detail: str = ""


class _RankCheckIn(_M):
    kind: Literal["rank_check"]
    step: int = Field(ge=0)
    time: float
    status: Literal["ok", "desync", "skipped"]
    ranks: list[Annotated[int, Field(ge=0)]] = []
    layers: list[Annotated[str, Field(min_length=1, max_length=512)]] = []
    detail: str = ""
    world_size: int = Field(default=1, ge=1)


class _SystemIn(_M):
    kind: Literal["system"]
    time: float
    cpu_percent: float
    rss_bytes: int = Field(ge=0)
    gpu_util_percent: float | None = None
    gpu_memory_bytes: int | None = Field(default=None, ge=0)
    gpu_count: int = Field(default=0, ge=0)


class _SliIn(_M):
    kind: Literal["sli"]
    job: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=128)
    value: float
    time: float
    labels: dict[str, str] = {}


_ItemIn = Annotated[
    _StepIn | _ValidationIn | _CheckpointIn | _RankCheckIn | _SystemIn | _SliIn,
    Field(discriminator="kind"),
]


class _LayerInfoIn(_M):
    name: str
    shape: list[int] = []
    dtype: str = ""
    group: int = 0
    numel: int = 0


class _RunIn(_M):
    job: str = Field(min_length=1, max_length=256)
    run_id: str = Field(min_length=1, max_length=128)
    started_at: float
    labels: dict[str, str] = {}
    rank: int = Field(default=0, ge=0)
    world_size: int = Field(default=1, ge=1)
    host: str = ""
    pid: int = 0
    optimizer: str = ""
    hyperparameters: list[dict[str, Any]] = []
    layers: list[_LayerInfoIn] = []
    hist_edges: list[float] = list(RMS_EDGES)
    resumed_from_step: int | None = None
    every: int = Field(default=1, ge=1)


class _StatusIn(_M):
    time: float
    status: Literal["running", "succeeded", "failed", "crashed", "stalled"]
    detail: str = ""


class _BatchIn(_M):
    version: Literal[1] = 1
    run: _RunIn | None = None
    open: bool = False
    items: list[_ItemIn] = []
    status: _StatusIn | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded batch: one run's telemetry (optional) plus production SLI samples."""

    run: RunInfo | None
    open_run: bool
    telemetry: tuple[Telemetry, ...]
    sli_samples: tuple[SliSampleRecord, ...]
    status: RunStatus | None


def _field_path(loc: Sequence[int | str]) -> str:
    path = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif previous in ("layers", "labels", "nonfinite"):
            path += f"[{json.dumps(part)}]"  # a mapping key, not a field name
        elif part in ("step", "validation", "checkpoint", "system", "sli") and path.endswith("]"):
            previous = None
            continue  # the discriminator tag pydantic inserts, not a field of the record
        else:
            path += f".{part}" if path else str(part)
        previous = part
    return path


def decode_batch(body: Any) -> Batch:
    """Validate a parsed JSON body; raises WireError naming the first bad field."""
    if not isinstance(body, Mapping):
        raise WireError("(body)", f"expected a JSON object, got {type(body).__name__}")
    try:
        batch = _BatchIn.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _field_path(first["loc"]) or "(body)"
        got = first.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
        raise WireError(field, f"{first['msg']}{shown}") from None
    telemetry: list[Telemetry] = []
    slis: list[SliSampleRecord] = []
    for index, item in enumerate(batch.items):
        if isinstance(item, _SliIn):
            slis.append(SliSampleRecord(item.job, item.name, item.value, item.time, item.labels))
            continue
        if batch.run is None:
            raise WireError(f"items[{index}]", f"a {item.kind!r} record needs the batch's `run`")
        telemetry.append(_record(item))
    if batch.status is not None and batch.run is None:
        raise WireError("status", "a run status needs the batch's `run`")
    return Batch(
        run=_run(batch.run) if batch.run is not None else None,
        open_run=batch.open,
        telemetry=tuple(telemetry),
        sli_samples=tuple(slis),
        status=(
            RunStatus(batch.status.time, batch.status.status, batch.status.detail)
            if batch.status is not None
            else None
        ),
    )


def _run(run: _RunIn) -> RunInfo:
    return RunInfo(
        job=run.job,
        run_id=run.run_id,
        started_at=run.started_at,
        labels=run.labels,
        rank=run.rank,
        world_size=run.world_size,
        host=run.host,
        pid=run.pid,
        optimizer=run.optimizer,
        hyperparameters=tuple(run.hyperparameters),
        layers=tuple(
            LayerInfo(li.name, tuple(li.shape), li.dtype, li.group, li.numel) for li in run.layers
        ),
        hist_edges=tuple(run.hist_edges),
        resumed_from_step=run.resumed_from_step,
        every=run.every,
    )


def _record(item: _StepIn | _ValidationIn | _CheckpointIn | _RankCheckIn | _SystemIn) -> Telemetry:
    if isinstance(item, _StepIn):
        return StepRecord(
            step=item.step,
            time=item.time,
            loss=item.loss,
            grad_norm=item.grad_norm,
            param_norm=item.param_norm,
            update_norm=item.update_norm,
            lr=item.lr,
            step_seconds=item.step_seconds,
            nonfinite={k: item.nonfinite.get(k, 0) for k in ("grad", "param", "state", "loss")},
            layers={name: _layer_stats(layer) for name, layer in item.layers.items()},
            lrs=tuple(item.lrs),
            update_ratio=item.update_ratio,
            eff_lr_mean=item.eff_lr_mean,
            eff_lr_min=item.eff_lr_min,
            eff_lr_p50=item.eff_lr_p50,
            eff_lr_p95=item.eff_lr_p95,
            eff_lr_max=item.eff_lr_max,
            validation=item.validation,
            dropped_total=item.dropped_total,
            rank=item.rank,
        )
    if isinstance(item, _ValidationIn):
        return ValidationRecord(item.step, item.time, item.value, item.name)
    if isinstance(item, _CheckpointIn):
        return CheckpointRecord(
            item.step,
            item.time,
            item.action,
            item.ok,
            item.seconds,
            item.size_bytes,
            item.path,
            item.detail,
        )
    if isinstance(item, _RankCheckIn):
        return RankCheckRecord(
            item.step,
            item.time,
            item.status,
            tuple(item.ranks),
            tuple(item.layers),
            item.detail,
            item.world_size,
        )
    return SystemSample(
        item.time,
        item.cpu_percent,
        item.rss_bytes,
        item.gpu_util_percent,
        item.gpu_memory_bytes,
        item.gpu_count,
    )


def _layer_stats(layer: _LayerIn) -> LayerStats:
    hist = layer.rms_hist
    return LayerStats(
        grad_norm=layer.grad_norm,
        param_norm=layer.param_norm,
        update_norm=layer.update_norm,
        update_ratio=layer.update_ratio,
        nonfinite_grad=layer.nonfinite_grad,
        nonfinite_param=layer.nonfinite_param,
        nonfinite_state=layer.nonfinite_state,
        eff_lr_mean=layer.eff_lr_mean,
        eff_lr_min=layer.eff_lr_min,
        eff_lr_p50=layer.eff_lr_p50,
        eff_lr_p95=layer.eff_lr_p95,
        eff_lr_max=layer.eff_lr_max,
        rms_hist=(
            None
            if hist is None
            else Histogram(
                # the edges live once on the run; the record only needs the counts
                edges=(),
                counts=tuple(hist.counts),
                zeros=hist.zeros,
                nonfinite=hist.nonfinite,
                exact=hist.exact,
            )
        ),
        group=layer.group,
        numel=layer.numel,
        has_grad=layer.has_grad,
        sparse_grad=layer.sparse_grad,
    )
