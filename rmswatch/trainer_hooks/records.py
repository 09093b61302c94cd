"""The records the hooks produce and the sinks consume: plain, immutable, host-side values.

Everything here is built on the sink side of the device->host boundary; nothing holds a tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

# the RMS histogram edges are the exporter's buckets too: one definition, in the catalogue
from rmswatch.catalogue import RMS_EDGES as RMS_EDGES
from rmswatch.catalogue import rms_histogram_edges as rms_histogram_edges

NONFINITE_KEYS: tuple[str, ...] = ("grad", "param", "state", "loss")


def update_ratio(update_norm: float, param_norm: float) -> float:
    """‖update‖ / ‖param‖: NaN when either norm is NaN (the step has no meaningful ratio, and an
    Inf would read as "huge update"), Inf when a zero parameter gets a non-zero update.

    The one definition: the hooks' records, the exporter's merged layers and the views use it.
    """
    if math.isnan(update_norm) or math.isnan(param_norm):
        return math.nan
    if param_norm > 0:
        return update_norm / param_norm
    return 0.0 if update_norm == 0 else math.inf


def root_sum_square(values: Iterable[float]) -> float:
    """sqrt(Σ v²), summed exactly (fsum): a norm over elements, or over layers' norms."""
    return math.sqrt(math.fsum(v * v for v in values))


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts of one tensor's values over fixed edges.

    `counts[i]` counts values in `[edges[i], edges[i+1])` (clamped at both ends, see
    `rms_histogram_edges`). When `exact` is true, `sum(counts) + zeros + nonfinite` equals the
    number of elements; when false the counts come from a documented sample, scaled to the
    tensor's size, and only their shape is meaningful.
    """

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    zeros: int
    nonfinite: int
    exact: bool

    @property
    def total(self) -> int:
        return sum(self.counts) + self.zeros + self.nonfinite


@dataclass(frozen=True, slots=True)
class LayerStats:
    """Statistics of one parameter tensor at one telemetry step.

    `eff_lr_*` and `rms_hist` are None while the tensor has no optimizer state yet (it never had a
    gradient). `has_grad` is False for parameters whose `.grad` was None at the step.
    `grad_norm_before_clip` is the layer's gradient norm before gradient clipping (None when the
    loop told rmswatch nothing about clipping); `grad_norm` is always the one the optimizer used.
    """

    grad_norm: float
    param_norm: float
    update_norm: float
    update_ratio: float
    nonfinite_grad: int
    nonfinite_param: int
    nonfinite_state: int
    eff_lr_mean: float | None
    eff_lr_min: float | None
    eff_lr_p50: float | None
    eff_lr_p95: float | None
    eff_lr_max: float | None
    rms_hist: Histogram | None
    group: int = 0
    numel: int = 0
    has_grad: bool = True
    sparse_grad: bool = False
    grad_norm_before_clip: float | None = None


@dataclass(frozen=True, slots=True)
class StepRecord:
    """Everything measured at one telemetry step, globally and per layer.

    `lr` is the first param group's learning rate (the usual single-group case); `lrs` holds one
    per group. `nonfinite` maps `grad`, `param`, `state` and `loss` to exact counts.
    `dropped_total` is how many records the sink queue had dropped when this one was built.

    `grad_norm` is the norm of the gradients the optimizer used (after clipping);
    `grad_norm_before_clip` the norm before clipping (None when unknown) and `clipped` whether
    clipping changed the gradients. `skipped` marks an AMP step the GradScaler skipped (the
    optimizer never ran: no update, and `nonfinite["grad"]` counts the inf/NaN it found);
    `loss_scale` is the scaler's scale used for the step's backward (None without a scaler).
    `rank`/`world_size` identify the process in a distributed run. `full` is False for a
    sentinel-only record (the cheap between-steps check: only some fields are measured).
    """

    step: int
    time: float
    loss: float | None
    grad_norm: float
    param_norm: float
    update_norm: float
    lr: float
    step_seconds: float | None
    nonfinite: Mapping[str, int]
    layers: Mapping[str, LayerStats]
    lrs: tuple[float, ...] = ()
    update_ratio: float = 0.0
    eff_lr_mean: float | None = None
    eff_lr_min: float | None = None
    eff_lr_p50: float | None = None
    eff_lr_p95: float | None = None
    eff_lr_max: float | None = None
    validation: float | None = None
    dropped_total: int = 0
    rank: int = 0
    grad_norm_before_clip: float | None = None
    clipped: bool = False
    skipped: bool = False
    loss_scale: float | None = None
    world_size: int = 1
    full: bool = True

    @property
    def finite(self) -> bool:
        """True when no gradient, parameter, state value or the loss was NaN/Inf."""
        return not any(self.nonfinite.get(key, 0) for key in NONFINITE_KEYS) and (
            self.loss is None or math.isfinite(self.loss)
        )


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """A parameter tensor as the run saw it at `watch()` time."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    group: int
    numel: int


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Identity and configuration of a run, handed to every sink before its first record."""

    job: str
    run_id: str
    started_at: float
    labels: Mapping[str, str] = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1
    host: str = ""
    pid: int = 0
    optimizer: str = ""
    # One mapping per param group: lr, alpha, eps, momentum, centered, weight_decay, ...
    hyperparameters: tuple[Mapping[str, Any], ...] = ()
    layers: tuple[LayerInfo, ...] = ()
    hist_edges: tuple[float, ...] = RMS_EDGES
    resumed_from_step: int | None = None
    every: int = 1


@dataclass(frozen=True, slots=True)
class ValidationRecord:
    step: int
    time: float
    value: float
    name: str = "val_loss"


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """A checkpoint save or load; `ok=False` with `detail` for failures and mismatches."""

    step: int
    time: float
    action: Literal["save", "load"]
    ok: bool = True
    seconds: float | None = None
    size_bytes: int | None = None
    path: str = ""
    detail: str = ""


RankCheckStatus = Literal["ok", "desync", "skipped"]


@dataclass(frozen=True, slots=True)
class RankCheckRecord:
    """One cross-rank optimizer-state comparison of a distributed job (reported by rank 0).

    `status`: "ok" (every rank bit-identical), "desync" (`ranks` lists rank 0 and the ranks that
    differ from it, `layers` the layers that differ), "skipped" (not compared; `detail` says why).
    """

    step: int
    time: float
    status: RankCheckStatus
    ranks: tuple[int, ...] = ()
    layers: tuple[str, ...] = ()
    detail: str = ""
    world_size: int = 1


@dataclass(frozen=True, slots=True)
class SystemSample:
    time: float
    cpu_percent: float
    rss_bytes: int
    gpu_util_percent: float | None = None
    gpu_memory_bytes: int | None = None
    gpu_count: int = 0


RunStatusName = Literal["running", "succeeded", "failed", "crashed", "stalled"]
RUN_STATUSES: tuple[str, ...] = ("running", "succeeded", "failed", "crashed", "stalled")


@dataclass(frozen=True, slots=True)
class RunStatus:
    time: float
    status: RunStatusName
    detail: str = ""


Telemetry = StepRecord | ValidationRecord | CheckpointRecord | SystemSample | RankCheckRecord
