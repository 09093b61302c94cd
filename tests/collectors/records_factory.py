"""Hand-built telemetry for the collector tests (the Monitor is tested in trainer_hooks)."""

from __future__ import annotations

from collections.abc import Mapping

from rmswatch.trainer_hooks.records import (
    RMS_EDGES,
    Histogram,
    LayerInfo,
    LayerStats,
    RunInfo,
    StepRecord,
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
    eff_lr: tuple[float, float, float, float, float] | None = (1e-3, 2e-3, 2e-3, 4e-3, 5e-3),
    hist: Histogram | None = None,
    group: int = 0,
    numel: int = 100,
) -> LayerStats:
    lo, mean, p50, p95, hi = eff_lr if eff_lr is not None else (None,) * 5
    return LayerStats(
        grad_norm=grad_norm,
        param_norm=param_norm,
        update_norm=update_norm,
        update_ratio=update_norm / param_norm if param_norm else 0.0,
        nonfinite_grad=nonfinite_grad,
        nonfinite_param=nonfinite_param,
        nonfinite_state=nonfinite_state,
        eff_lr_mean=mean,
        eff_lr_min=lo,
        eff_lr_p50=p50,
        eff_lr_p95=p95,
        eff_lr_max=hi,
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
    nonfinite: Mapping[str, int] | None = None,
    step_seconds: float | None = 0.02,
    time: float = 1_700_000_000.0,
    lr: float = 0.01,
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
        param_norm=20.0,
        update_norm=0.02,
        lr=lr,
        step_seconds=step_seconds,
        nonfinite=counts,
        layers=dict(layers),
        lrs=(lr,),
        update_ratio=0.001,
        eff_lr_mean=2e-3,
        eff_lr_min=1e-3,
        eff_lr_p50=2e-3,
        eff_lr_p95=4e-3,
        eff_lr_max=5e-3,
        validation=validation,
        dropped_total=dropped_total,
    )


def run_info(labels: Mapping[str, str] | None = None, layer_names: tuple[str, ...] = ()) -> RunInfo:
    return RunInfo(
        job="resnet-retrain",
        run_id="run-1",
        started_at=1_699_999_000.0,
        labels=dict(labels or {}),
        optimizer="RMSprop",
        host="trainer-1",
        hyperparameters=({"lr": 0.01, "eps": 1e-8, "alpha": 0.99},),
        layers=tuple(LayerInfo(n, (10,), "float32", 0, 10) for n in layer_names),
    )
