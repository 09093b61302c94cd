"""Hand-built telemetry for store tests: small, deterministic records without a training."""

from __future__ import annotations

from rmswatch.trainer_hooks.records import (
    RMS_EDGES,
    Histogram,
    LayerInfo,
    LayerStats,
    RunInfo,
    StepRecord,
)

T0 = 1_750_000_000.0


def run_info(run_id: str = "run-1", job: str = "resnet-retrain", layers: int = 2) -> RunInfo:
    return RunInfo(
        job=job,
        run_id=run_id,
        started_at=T0,
        labels={"model": "resnet"},
        host="trainer-0",
        pid=4242,
        optimizer="RMSprop",
        hyperparameters=({"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "centered": False},),
        layers=tuple(
            LayerInfo(f"layer{i}.weight", (4, 4), "float32", 0, 16) for i in range(layers)
        ),
    )


def histogram(step: int) -> Histogram:
    counts = [0] * (len(RMS_EDGES) - 1)
    counts[step % len(counts)] = 16
    return Histogram(edges=RMS_EDGES, counts=tuple(counts), zeros=0, nonfinite=0, exact=True)


def layer_stats(step: int, *, nonfinite_grad: int = 0) -> LayerStats:
    return LayerStats(
        grad_norm=1.0 / (step + 1),
        param_norm=2.0,
        update_norm=0.01,
        update_ratio=0.005,
        nonfinite_grad=nonfinite_grad,
        nonfinite_param=0,
        nonfinite_state=0,
        eff_lr_mean=1e-3,
        eff_lr_min=1e-4,
        eff_lr_p50=1e-3,
        eff_lr_p95=2e-3,
        eff_lr_max=3e-3,
        rms_hist=histogram(step),
        numel=16,
    )


def step_record(
    step: int, *, layers: int = 2, t0: float = T0, loss: float | None = None, rank: int = 0
) -> StepRecord:
    return StepRecord(
        step=step,
        time=t0 + step,
        loss=1.0 / (step + 1) if loss is None else loss,
        grad_norm=1.0,
        param_norm=3.0,
        update_norm=0.02,
        lr=0.01,
        step_seconds=0.05,
        nonfinite={"grad": 0, "param": 0, "state": 0, "loss": 0},
        layers={f"layer{i}.weight": layer_stats(step) for i in range(layers)},
        update_ratio=0.006,
        rank=rank,
    )
