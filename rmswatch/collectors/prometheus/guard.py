"""The cardinality guard: which layers the exporter names, and how the rest merge into one.

Layers group by module prefix (`layer_depth`); the `max_layers` worst (non-finite first, then
by gradient norm) are exported by name and everything else as `__other__`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rmswatch import catalogue as cat
from rmswatch.collectors.prometheus.distributions import (
    EFF_BOUNDS,
    Distributions,
    quantile_from_buckets,
)
from rmswatch.trainer_hooks.records import (
    LayerStats,
    RunInfo,
    StepRecord,
    root_sum_square,
    update_ratio,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float64]

DEFAULT_MAX_LAYERS = 20


@dataclass(frozen=True, slots=True)
class LayerView:
    """One exported layer (a tensor, a module prefix, or `__other__`) at one step."""

    name: str
    grad_norm: float
    param_norm: float
    update_norm: float
    update_ratio: float
    nonfinite: int
    eff_lr: Mapping[str, float]
    rms: FloatArray | None
    eff: FloatArray | None


def _nan_min(values: Sequence[float]) -> float:
    return math.nan if any(math.isnan(v) for v in values) else min(values)


def _nan_max(values: Sequence[float]) -> float:
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def layer_key(name: str, depth: int | None) -> str:
    if depth is None:
        return name
    return ".".join(name.split(".")[:depth])


def _view(
    key: str,
    members: Sequence[str],
    layers: Mapping[str, LayerStats],
    dists: Distributions | None,
) -> LayerView:
    stats = [layers[m] for m in members]
    nonfinite = sum(s.nonfinite_grad + s.nonfinite_param + s.nonfinite_state for s in stats)
    summed = dists.of(members) if dists is not None else None
    rms, eff = summed if summed is not None else (None, None)
    if len(stats) == 1:
        s = stats[0]
        single = {
            stat: value
            for stat, value in zip(
                cat.EFFECTIVE_LR_STATS,
                (s.eff_lr_min, s.eff_lr_mean, s.eff_lr_p50, s.eff_lr_p95, s.eff_lr_max),
                strict=True,
            )
            if value is not None
        }
        norms = (s.grad_norm, s.param_norm, s.update_norm, s.update_ratio)
        return LayerView(key, *norms, nonfinite, single, rms, eff)
    grad = root_sum_square(s.grad_norm for s in stats)
    param = root_sum_square(s.param_norm for s in stats)
    update = root_sum_square(s.update_norm for s in stats)
    with_state = [s for s in stats if s.eff_lr_mean is not None]
    eff_lr: dict[str, float] = {}
    if with_state:
        weights = [max(s.numel, 1) for s in with_state]
        means = [float(s.eff_lr_mean or 0.0) for s in with_state]
        eff_lr["min"] = _nan_min([float(s.eff_lr_min or 0.0) for s in with_state])
        eff_lr["max"] = _nan_max([float(s.eff_lr_max or 0.0) for s in with_state])
        eff_lr["mean"] = math.fsum(w * m for w, m in zip(weights, means, strict=True)) / sum(
            weights
        )
        if eff is not None:
            for stat, q in (("p50", 0.5), ("p95", 0.95)):
                value = quantile_from_buckets(eff, EFF_BOUNDS, q)
                if value is not None:
                    eff_lr[stat] = value
    return LayerView(
        key, grad, param, update, update_ratio(update, param), nonfinite, eff_lr, rms, eff
    )


def _rank(view: LayerView) -> tuple[int, float]:
    grad = view.grad_norm
    return (0 if view.nonfinite else 1, -(math.inf if not math.isfinite(grad) else grad))


@dataclass(frozen=True, slots=True)
class GuardedLayers:
    """What the guard exports for one record: named layers, and the rest merged (or None)."""

    layers: tuple[LayerView, ...]
    other: LayerView | None
    total: int


def guard_layers(
    record: StepRecord,
    run: RunInfo | None,
    *,
    layer_depth: int | None,
    max_layers: int | None,
    distributions: bool,
) -> tuple[GuardedLayers, tuple[FloatArray, FloatArray] | None]:
    """Apply the cardinality guard to a record's layers; also returns the global distributions."""
    dists = Distributions(record, run) if record.layers else None
    grouped: dict[str, list[str]] = {}
    for name in record.layers:
        grouped.setdefault(layer_key(name, layer_depth), []).append(name)
    # Cheap scalar views first (no distributions) to rank; distributions only for the exported.
    views = {key: _view(key, members, record.layers, None) for key, members in grouped.items()}
    if max_layers is None or len(views) <= max_layers:
        chosen = list(views)
    else:
        chosen = sorted(views, key=lambda k: _rank(views[k]))[:max_layers]
    layer_dists = dists if distributions else None
    exported = tuple(_view(k, grouped[k], record.layers, layer_dists) for k in chosen)
    global_dists = dists.of(None) if dists is not None else None
    other = None
    if len(chosen) < len(views):
        chosen_set = set(chosen)
        rest = [m for k, members in grouped.items() if k not in chosen_set for m in members]
        other = _view(cat.OTHER_LAYERS, rest, record.layers, None)
        if layer_dists is not None and global_dists is not None:
            # The rest is everything minus what was exported: one subtraction, not a second sum.
            rms, eff = global_dists[0].copy(), global_dists[1].copy()
            for view in exported:
                if view.rms is not None and view.eff is not None:
                    rms -= view.rms
                    eff -= view.eff
            other = _with_dists(other, rest, record.layers, rms, eff)
    return GuardedLayers(exported, other, len(views)), global_dists


def _with_dists(
    view: LayerView,
    members: Sequence[str],
    layers: Mapping[str, LayerStats],
    rms: FloatArray,
    eff: FloatArray,
) -> LayerView:
    eff_lr = dict(view.eff_lr)
    if len(members) > 1:
        for stat, q in (("p50", 0.5), ("p95", 0.95)):
            value = quantile_from_buckets(eff, EFF_BOUNDS, q)
            if value is not None:
                eff_lr[stat] = value
    has_state = any(layers[m].rms_hist is not None for m in members)
    return LayerView(
        view.name,
        view.grad_norm,
        view.param_norm,
        view.update_norm,
        view.update_ratio,
        view.nonfinite,
        eff_lr,
        rms if has_state else None,
        eff if has_state else None,
    )
