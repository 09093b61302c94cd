"""Hand-built telemetry for tests: small, deterministic records without a training.

`record` and `layer` build one record field by field (the exporter tests); `step_record` and
`layer_stats` are the step-indexed series the store tests write (time `T0 + step`, loss
`1/(step+1)`, the RMS histogram's mass moving one bucket per step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rmswatch.trainer_hooks.records import (
    RMS_EDGES,
    Histogram,
    LayerInfo,
    LayerStats,
    RunInfo,
    StepRecord,
)

T0 = 1_750_000_000.0
EffLr = tuple[float, float, float, float, float]  # min, mean, p50, p95, max
_EFF_LR: EffLr = (1e-3, 2e-3, 2e-3, 4e-3, 5e-3)


def _eff_lr_fields(eff_lr: EffLr | None) -> dict[str, float | None]:
    lo, mean, p50, p95, hi = eff_lr if eff_lr is not None else (None,) * 5
    return {
        "eff_lr_min": lo,
        "eff_lr_mean": mean,
        "eff_lr_p50": p50,
        "eff_lr_p95": p95,
        "eff_lr_max": hi,
    }


def run_info(
    run_id: str = "run-1",
    job: str = "resnet-retrain",
    *,
    labels: Mapping[str, str] | None = None,
    layers: int | Sequence[str] = 2,
    started_at: float = T0,
) -> RunInfo:
    """A run with `layers` layers: a count (`layer<i>.weight`, 4x4) or their names (10 wide)."""
    if isinstance(layers, int):
        infos = tuple(
            LayerInfo(f"layer{i}.weight", (4, 4), "float32", 0, 16) for i in range(layers)
        )
    else:
        infos = tuple(LayerInfo(name, (10,), "float32", 0, 10) for name in layers)
    return RunInfo(
        job=job,
        run_id=run_id,
        started_at=started_at,
        labels=dict(labels or {}),
        optimizer="RMSprop",
        host="trainer-1",
        hyperparameters=({"lr": 0.01, "eps": 1e-8, "alpha": 0.99},),
        layers=infos,
    )


def histogram(zeros: int = 0, nonfinite: int = 0, **at: int) -> Histogram:
    """RMS histogram with `at={"b<i>": count}` counts in bucket i of RMS_EDGES."""
    counts = [0] * (len(RMS_EDGES) - 1)
    for key, count in at.items():
        counts[int(key.removeprefix("b"))] = count
    return Histogram(RMS_EDGES, tuple(counts), zeros, nonfinite, True)


def layer(
    grad_norm: float = 1.0,
    *,
    param_norm: float = 10.0,
    update_norm: float = 0.01,
    nonfinite_grad: int = 0,
    nonfinite_param: int = 0,
    nonfinite_state: int = 0,
    eff_lr: EffLr | None = _EFF_LR,
    hist: Histogram | None = None,
    group: int = 0,
    numel: int = 100,
) -> LayerStats:
    return LayerStats(
        grad_norm=grad_norm,
        param_norm=param_norm,
        update_norm=update_norm,
        update_ratio=update_norm / param_norm if param_norm else 0.0,
        nonfinite_grad=nonfinite_grad,
        nonfinite_param=nonfinite_param,
        nonfinite_state=nonfinite_state,
        **_eff_lr_fields(eff_lr),
        rms_hist=hist if hist is not None else (histogram(b20=numel) if eff_lr else None),
        group=group,
        numel=numel,
    )


def record(
    step: int = 1,
    layers: Mapping[str, LayerStats] | None = None,
    *,
    loss: float | None = 0.5,
    grad_norm: float = 1.5,
    param_norm: float = 20.0,
    nonfinite: Mapping[str, int] | None = None,
    step_seconds: float | None = 0.02,
    time: float = 1_700_000_000.0,
    lr: float = 0.01,
    lrs: tuple[float, ...] | None = None,
    update_ratio: float = 0.001,
    eff_lr: EffLr | None = _EFF_LR,
    dropped_total: int = 0,
    validation: float | None = None,
) -> StepRecord:
    layers = layers if layers is not None else {"fc.weight": layer(), "fc.bias": layer(0.5)}
    counts = {"grad": 0, "param": 0, "state": 0, "loss": 0, **(nonfinite or {})}
    return StepRecord(
        step=step,
        time=time,
        loss=loss,
        grad_norm=grad_norm,
        param_norm=param_norm,
        update_norm=0.02,
        lr=lr,
        step_seconds=step_seconds,
        nonfinite=counts,
        layers=dict(layers),
        lrs=(lr,) if lrs is None else lrs,
        update_ratio=update_ratio,
        **_eff_lr_fields(eff_lr),
        validation=validation,
        dropped_total=dropped_total,
    )


def layer_stats(step: int, *, nonfinite_grad: int = 0) -> LayerStats:
    """Layer statistics of step `step` of the store tests' series."""
    return layer(
        1.0 / (step + 1),
        param_norm=2.0,
        nonfinite_grad=nonfinite_grad,
        eff_lr=(1e-4, 1e-3, 1e-3, 2e-3, 3e-3),
        hist=histogram(**{f"b{step % (len(RMS_EDGES) - 1)}": 16}),
        numel=16,
    )


def step_record(
    step: int, *, layers: int = 2, t0: float = T0, loss: float | None = None
) -> StepRecord:
    """Step `step` of the store tests' series: at `t0 + step`, loss 1/(step+1) unless given."""
    return record(
        step,
        {f"layer{i}.weight": layer_stats(step) for i in range(layers)},
        loss=1.0 / (step + 1) if loss is None else loss,
        grad_norm=1.0,
        param_norm=3.0,
        step_seconds=0.05,
        time=t0 + step,
        lrs=(),
        update_ratio=0.006,
        eff_lr=None,
    )
