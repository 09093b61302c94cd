"""Rows inserted straight into a store, shaped like what the store writer records.

Until real trainings can fill a store through `rmswatch.watch(...)`, the app's tests use these:
two runs of one job (a good baseline and a run that diverges to NaN in `fc.weight`), a running
job and a job whose label carries a `<script>` tag.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from rmswatch.store.models import (
    Base,
    Checkpoint,
    HistogramRow,
    LayerStep,
    Run,
    SliSample,
    Step,
    Validation,
)
from rmswatch.trainer_hooks.records import RMS_EDGES

# recent enough that heartbeat ages read like a live incident
T0 = (datetime.now(timezone.utc) - timedelta(hours=4)).replace(minute=0, second=0, microsecond=0)
LAYERS = ("conv1.weight", "conv1.bias", "fc.weight")
NAN_STEP = 150
NAN_LAYER = "fc.weight"
SCRIPT_LABEL = "<script>window.__pwned=1</script>"


def create_schema(engine: Engine) -> None:
    # TODO(app): use rmswatch.store.engine.upgrade once the store branch lands
    Base.metadata.create_all(engine)


def add_run(
    engine: Engine,
    *,
    run_id: str,
    job: str,
    status: str,
    steps: int,
    started: datetime,
    lr: float = 0.01,
    nan_from: int | None = None,
    labels: dict[str, str] | None = None,
    layer_scale: dict[str, float] | None = None,
) -> int:
    with Session(engine) as session:
        run = Run(
            run_id=run_id,
            job=job,
            labels=labels or {"model": "resnet18", "cluster": "lab"},
            status=status,
            status_detail="" if status != "diverged" else "non-finite loss",
            started_at=started,
            ended_at=None if status == "running" else started + timedelta(seconds=steps),
            last_step=steps - 1,
            last_step_at=started + timedelta(seconds=steps - 1),
            optimizer="RMSprop",
            hyperparameters=[{"lr": lr, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0}],
            layers=[{"name": name} for name in LAYERS],
            hist_edges=list(RMS_EDGES),
            gpu_seconds=steps * 3.6,
        )
        session.add(run)
        session.commit()
        run_pk = run.id
    step_rows, layer_rows, hist_rows = [], [], []
    scale = layer_scale or {}
    for step in range(steps):
        bad = nan_from is not None and step >= nan_from
        loss = math.nan if bad else 2.0 * math.exp(-step / 80) + 0.1 + 0.01 * (step % 7)
        time = started + timedelta(seconds=step)
        step_rows.append(
            {
                "run_pk": run_pk,
                "step": step,
                "time": time,
                "loss": loss,
                "grad_norm": 1.0 + (step % 10) / 10,
                "param_norm": 10.0,
                "update_norm": 0.01,
                "update_ratio": 1e-3,
                "lr": lr,
                "step_seconds": 0.05,
                "nonfinite_grad": 7 if bad else 0,
                "nonfinite_loss": 1 if bad else 0,
                "eff_lr_mean": lr * 3,
                "eff_lr_p50": lr * 2,
            }
        )
        for index, name in enumerate(LAYERS):
            layer_bad = bad and name == NAN_LAYER
            factor = scale.get(name, 1.0 + index)
            layer_rows.append(
                {
                    "run_pk": run_pk,
                    "step": step,
                    "layer": name,
                    "grad_norm": factor * (1.0 + (step % 13) / 13),
                    "param_norm": 3.0,
                    "update_norm": 0.003,
                    "update_ratio": factor * 1e-3,
                    "nonfinite_grad": 7 if layer_bad else 0,
                    "eff_lr_mean": lr * factor * 10,
                    "eff_lr_min": lr * factor,
                    "eff_lr_p50": lr * factor * 8,
                    "eff_lr_p95": lr * factor * 20,
                    "eff_lr_max": lr * factor * 40,
                }
            )
            if step % 5 == 0:
                counts = [0] * (len(RMS_EDGES) - 1)
                counts[10 + index * 4 + (step // 50) % 4] = 100
                counts[11 + index * 4] = 40
                hist_rows.append(
                    {
                        "run_pk": run_pk,
                        "step": step,
                        "time": time,
                        "layer": name,
                        "kind": "rms",
                        "counts": counts,
                        "zeros": 0,
                        "nonfinite": 7 if layer_bad else 0,
                        "exact": True,
                    }
                )
    with engine.begin() as conn:
        conn.execute(insert(Step), step_rows)
        conn.execute(insert(LayerStep), layer_rows)
        conn.execute(insert(HistogramRow), hist_rows)
        validation_rows = [
            {
                "run_pk": run_pk,
                "step": s,
                "time": started + timedelta(seconds=s),
                "name": "val_loss",
                "value": 2.2 * math.exp(-s / 90) + 0.15,
            }
            for s in range(0, min(steps, nan_from or steps), 50)
        ]
        checkpoint_rows = [
            {
                "run_pk": run_pk,
                "step": s,
                "time": started + timedelta(seconds=s),
                "action": "save",
                "ok": True,
                "seconds": 0.4 + s / 1000,
                "size_bytes": 45_000_000,
                "path": f"/ckpt/{run_id}-{s}.pt",
            }
            for s in range(100, steps, 100)
        ]
        # an empty list would insert one all-default row
        if validation_rows:
            conn.execute(insert(Validation), validation_rows)
        if checkpoint_rows:
            conn.execute(insert(Checkpoint), checkpoint_rows)
    return run_pk


def fill_store(engine: Engine) -> None:
    """The standard scenario every app test starts from."""
    create_schema(engine)
    add_run(
        engine,
        run_id="resnet-good",
        job="resnet-retrain",
        status="succeeded",
        steps=300,
        started=T0,
        lr=0.01,
    )
    add_run(
        engine,
        run_id="resnet-bad",
        job="resnet-retrain",
        status="diverged",
        steps=220,
        started=T0 + timedelta(hours=2),
        lr=0.1,
        nan_from=NAN_STEP,
    )
    add_run(
        engine,
        run_id="bert-live",
        job="bert-finetune",
        status="running",
        steps=120,
        started=T0 + timedelta(hours=3),
        labels={"model": "bert", "cluster": SCRIPT_LABEL},
    )
    add_run(
        engine,
        run_id="evil-run",
        job=SCRIPT_LABEL,
        status="succeeded",
        steps=40,
        started=T0 + timedelta(hours=1),
    )
    with engine.begin() as conn:
        conn.execute(
            insert(SliSample),
            [
                {
                    "job": "resnet-retrain",
                    "name": "model_drift_psi",
                    "time": T0 + timedelta(hours=h),
                    "value": 0.05 + 0.01 * h,
                    "labels": {},
                }
                for h in range(4)
            ],
        )
