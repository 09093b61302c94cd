"""Plain float64 reference implementation of every statistic, for tests against the fast path.

Slow on purpose: element loops in Python for histograms and sorted lists for quantiles, no
sampling, no packing. Only for tiny models in tests.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from rmswatch.trainer_hooks.records import RMS_EDGES, Histogram, LayerStats


def _f64(t: torch.Tensor) -> list[float]:
    return [float(x) for x in t.detach().to(torch.float64).reshape(-1).tolist()]


def _norm(values: Sequence[float]) -> float:
    return math.sqrt(math.fsum(v * v for v in values))


def _nonfinite(values: Sequence[float]) -> int:
    return sum(1 for v in values if not math.isfinite(v))


def lower_quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(math.floor(q * (len(ordered) - 1)))]


def weighted_lower_quantile(values: Sequence[float], weights: Sequence[float], q: float) -> float:
    """The first value, in ascending order, whose cumulative weight reaches q * total."""
    pairs = sorted(zip(values, weights, strict=True))
    target = q * math.fsum(weights)
    running = 0.0
    for value, weight in pairs:
        running += weight
        if running >= target:
            return value
    return pairs[-1][0]


def histogram(values: Sequence[float], edges: Sequence[float] = RMS_EDGES) -> Histogram:
    """Exact histogram: [edges[i], edges[i+1]) clamped at both ends; zeros and non-finite apart."""
    counts = [0] * (len(edges) - 1)
    zeros = nonfinite = 0
    for v in values:
        if not math.isfinite(v) or v < 0:
            nonfinite += 1
        elif v == 0:
            zeros += 1
        else:
            i = bisect.bisect_right(edges, v) - 1
            counts[min(max(i, 0), len(counts) - 1)] += 1
    return Histogram(tuple(edges), tuple(counts), zeros, nonfinite, True)


def rmsprop_update(
    param_after: torch.Tensor,
    grad: torch.Tensor,
    state: Mapping[str, Any],
    group: Mapping[str, Any],
) -> list[float]:
    """The update RMSprop applied, in float64, from post-step state (the documented formulas)."""
    lr = float(group["lr"])
    p = _f64(param_after)
    g = [-x for x in _f64(grad)] if group.get("maximize", False) else _f64(grad)
    if group.get("momentum", 0) > 0:
        return [-lr * b for b in _f64(state["momentum_buffer"])]
    d = denominators(state, group)
    wd = float(group.get("weight_decay", 0))
    return [-lr * (gi + wd * pi) / (di - lr * wd) for gi, pi, di in zip(g, p, d, strict=True)]


def denominators(state: Mapping[str, Any], group: Mapping[str, Any]) -> list[float]:
    """sqrt(v) + eps per element, as torch's step computed it.

    float32/float64 state: in float64. float16/bfloat16 state: torch rounds the denominator to
    the parameter's dtype (eps may even vanish there), so the statistic is defined on that
    rounded value; it is formed in the native dtype and read out in float64.
    """
    eps = float(group["eps"])
    square_avg: torch.Tensor = state["square_avg"]
    if square_avg.dtype in (torch.float16, torch.bfloat16):
        v_native = square_avg
        if group.get("centered", False):
            v_native = square_avg.addcmul(state["grad_avg"], state["grad_avg"], value=-1)
        return _f64(v_native.sqrt().add_(eps))
    v = _f64(square_avg)
    if group.get("centered", False):
        ga = _f64(state["grad_avg"])
        v = [vi - gi * gi for vi, gi in zip(v, ga, strict=True)]
    return [math.sqrt(vi) + eps if vi >= 0 else math.nan for vi in v]


def layer_stats(
    param: torch.Tensor,
    state: Mapping[str, Any],
    group: Mapping[str, Any],
    *,
    grad: torch.Tensor | None,
    update: Sequence[float] | None = None,
    edges: Sequence[float] = RMS_EDGES,
) -> LayerStats:
    """Reference LayerStats of one parameter after a step.

    `update` defaults to the derived RMSprop update; pass `p_after - p_before` to check against
    what really happened.
    """
    p = _f64(param)
    g = _f64(grad) if grad is not None else []
    has_state = isinstance(state.get("square_avg"), torch.Tensor)
    if update is None:
        update = rmsprop_update(param, grad, state, group) if grad is not None and has_state else []
    nf_state = sum(
        _nonfinite(_f64(state[k]))
        for k in ("square_avg", "momentum_buffer", "grad_avg")
        if isinstance(state.get(k), torch.Tensor)
    )
    p_norm = _norm(p)
    u_norm = _norm(update)
    eff: list[float] | None = None
    hist: Histogram | None = None
    if has_state and p:
        lr = float(group["lr"])
        eff = [lr / d for d in denominators(state, group)]
        hist = histogram(
            [math.sqrt(v) if v >= 0 else math.nan for v in _f64(state["square_avg"])], edges
        )
    return LayerStats(
        grad_norm=_norm(g),
        param_norm=p_norm,
        update_norm=u_norm,
        update_ratio=(
            math.nan
            if math.isnan(u_norm) or math.isnan(p_norm)
            else u_norm / p_norm
            if p_norm > 0
            else (0.0 if u_norm == 0 else math.inf)
        ),
        nonfinite_grad=_nonfinite(g),
        nonfinite_param=_nonfinite(p),
        nonfinite_state=nf_state,
        eff_lr_mean=math.fsum(eff) / len(eff) if eff else None,
        eff_lr_min=min(eff) if eff else None,
        eff_lr_p50=lower_quantile(eff, 0.5) if eff else None,
        eff_lr_p95=lower_quantile(eff, 0.95) if eff else None,
        eff_lr_max=max(eff) if eff else None,
        rms_hist=hist,
        numel=len(p),
        has_grad=grad is not None,
    )
