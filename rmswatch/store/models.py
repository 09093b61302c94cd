"""SQLAlchemy 2 models of the run store: runs and the telemetry they produce.

Schema changes go through Alembic revisions in `rmswatch/store/migrations/versions/`; never
`create_all` outside tests of the models themselves.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Run(Base):
    """One training run; `run_id` is its stable external key, `id` the join key."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(128), unique=True)
    job: Mapped[str] = mapped_column(String(256), index=True)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(32), default="running", index=True)
    status_detail: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # heartbeat: the last step the store has seen, and when
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    last_step_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    host: Mapped[str] = mapped_column(String(256), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    rank: Mapped[int] = mapped_column(Integer, default=0)
    world_size: Mapped[int] = mapped_column(Integer, default=1)
    optimizer: Mapped[str] = mapped_column(String(128), default="")
    hyperparameters: Mapped[list[Any]] = mapped_column(JSON, default=list)
    layers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    hist_edges: Mapped[list[Any]] = mapped_column(JSON, default=list)
    every: Mapped[int] = mapped_column(Integer, default=1)
    resumed_from_step: Mapped[int | None] = mapped_column(BigInteger)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class Step(Base):
    """Global statistics of one telemetry step of one rank (0 outside torch.distributed)."""

    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("run_pk", "rank", "step", name="uq_steps_run_rank_step"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    loss: Mapped[float | None] = mapped_column(Float)
    grad_norm: Mapped[float | None] = mapped_column(Float)
    param_norm: Mapped[float | None] = mapped_column(Float)
    update_norm: Mapped[float | None] = mapped_column(Float)
    update_ratio: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
    step_seconds: Mapped[float | None] = mapped_column(Float)
    nonfinite_grad: Mapped[int] = mapped_column(BigInteger, default=0)
    nonfinite_param: Mapped[int] = mapped_column(BigInteger, default=0)
    nonfinite_state: Mapped[int] = mapped_column(BigInteger, default=0)
    nonfinite_loss: Mapped[int] = mapped_column(BigInteger, default=0)
    eff_lr_mean: Mapped[float | None] = mapped_column(Float)
    eff_lr_min: Mapped[float | None] = mapped_column(Float)
    eff_lr_p50: Mapped[float | None] = mapped_column(Float)
    eff_lr_p95: Mapped[float | None] = mapped_column(Float)
    eff_lr_max: Mapped[float | None] = mapped_column(Float)
    dropped_total: Mapped[int] = mapped_column(BigInteger, default=0)
    # revision 0003: clipping, AMP, distributed identity, sentinel records, lr per group
    grad_norm_before_clip: Mapped[float | None] = mapped_column(Float)
    clipped: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    skipped: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    loss_scale: Mapped[float | None] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    world_size: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    full: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    lrs: Mapped[list[Any] | None] = mapped_column(JSON)


Index("ix_steps_run_time", Step.run_pk, Step.time)


class LayerStep(Base):
    """Per-layer statistics of one telemetry step of one rank."""

    __tablename__ = "layer_steps"
    __table_args__ = (
        UniqueConstraint(
            "run_pk", "rank", "step", "layer", name="uq_layer_steps_run_rank_step_layer"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(BigInteger)
    rank: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # repeated from the step so retention and time-range reads need no join
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    layer: Mapped[str] = mapped_column(String(512))
    grad_norm: Mapped[float | None] = mapped_column(Float)
    param_norm: Mapped[float | None] = mapped_column(Float)
    update_norm: Mapped[float | None] = mapped_column(Float)
    update_ratio: Mapped[float | None] = mapped_column(Float)
    nonfinite_grad: Mapped[int] = mapped_column(BigInteger, default=0)
    nonfinite_param: Mapped[int] = mapped_column(BigInteger, default=0)
    nonfinite_state: Mapped[int] = mapped_column(BigInteger, default=0)
    eff_lr_mean: Mapped[float | None] = mapped_column(Float)
    eff_lr_min: Mapped[float | None] = mapped_column(Float)
    eff_lr_p50: Mapped[float | None] = mapped_column(Float)
    eff_lr_p95: Mapped[float | None] = mapped_column(Float)
    eff_lr_max: Mapped[float | None] = mapped_column(Float)
    has_grad: Mapped[bool] = mapped_column(Boolean, default=True)
    grad_norm_before_clip: Mapped[float | None] = mapped_column(Float)  # revision 0003


# one layer over time: the debug view's per-layer charts
Index("ix_layer_steps_run_layer_step", LayerStep.run_pk, LayerStep.layer, LayerStep.step)


class HistogramRow(Base):
    """One layer's RMS histogram at one step of one rank; the edges live once on the run."""

    __tablename__ = "histograms"
    __table_args__ = (
        UniqueConstraint(
            "run_pk", "rank", "step", "layer", "kind", name="uq_histograms_run_rank_step_layer"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(BigInteger)
    rank: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    layer: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(32), default="rms")
    counts: Mapped[list[Any]] = mapped_column(JSON)
    zeros: Mapped[int] = mapped_column(BigInteger, default=0)
    nonfinite: Mapped[int] = mapped_column(BigInteger, default=0)
    exact: Mapped[bool] = mapped_column(Boolean, default=True)


# one layer's heatmap: all steps of (run, layer, kind)
Index("ix_histograms_run_layer_step", HistogramRow.run_pk, HistogramRow.layer, HistogramRow.step)


class Validation(Base):
    """A validation metric (default `val_loss`) at the step it belongs to."""

    __tablename__ = "validations"
    __table_args__ = (UniqueConstraint("run_pk", "step", "name", name="uq_validations"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    name: Mapped[str] = mapped_column(String(128), default="val_loss")
    value: Mapped[float | None] = mapped_column(Float)


class Checkpoint(Base):
    """A checkpoint save or load; `ok=False` with `detail` for failures."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_pk", "step", "action", "time", name="uq_checkpoints"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    action: Mapped[str] = mapped_column(String(16))
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    seconds: Mapped[float | None] = mapped_column(Float)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[str] = mapped_column(Text, default="")


class RankCheck(Base):
    """A cross-rank optimizer-state comparison of a distributed run (`status` ok/desync/skipped)."""

    __tablename__ = "rank_checks"
    __table_args__ = (UniqueConstraint("run_pk", "step", name="uq_rank_checks_run_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(BigInteger)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))
    ranks: Mapped[list[Any]] = mapped_column(JSON, default=list)
    layers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    detail: Mapped[str] = mapped_column(Text, default="")
    world_size: Mapped[int] = mapped_column(Integer, default=1)


class SystemSampleRow(Base):
    """CPU/RSS/GPU of the training process; `gpu_count` integrates into `Run.gpu_seconds`."""

    __tablename__ = "system_samples"
    # a retried ingest batch must not count a sample (and its GPU-seconds) twice
    __table_args__ = (UniqueConstraint("run_pk", "time", name="uq_system_samples_run_time"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cpu_percent: Mapped[float | None] = mapped_column(Float)
    rss_bytes: Mapped[int | None] = mapped_column(BigInteger)
    gpu_util_percent: Mapped[float | None] = mapped_column(Float)
    gpu_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)


class SliSample(Base):
    """A production SLI sample posted through ingest (e.g. a model-drift metric)."""

    __tablename__ = "sli_samples"
    __table_args__ = (UniqueConstraint("job", "name", "time", name="uq_sli_samples"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[str] = mapped_column(String(256), index=True)
    name: Mapped[str] = mapped_column(String(128))
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    value: Mapped[float] = mapped_column(Float)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
