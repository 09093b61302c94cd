"""The one write path into the store, shared by `StoreWriter` and the HTTP ingest endpoint.

Every insert is idempotent (`ON CONFLICT DO NOTHING` on each table's natural key), so a retried
batch or a replayed buffer never creates duplicate rows. Callers own the transaction.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, update

from rmswatch.store.models import (
    Base,
    Checkpoint,
    HistogramRow,
    LayerStep,
    RankCheck,
    Run,
    SliSample,
    Step,
    SystemSampleRow,
    Validation,
)
from rmswatch.trainer_hooks.records import (
    CheckpointRecord,
    RankCheckRecord,
    RunInfo,
    RunStatus,
    StepRecord,
    SystemSample,
    Telemetry,
    ValidationRecord,
)

# A gap between two system samples longer than this (a paused or restarted trainer) is not
# billed as GPU time.
MAX_GPU_INTERVAL_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class SliSampleRecord:
    """A production SLI sample (e.g. `model_drift`) posted by a serving job through ingest."""

    job: str
    name: str
    value: float
    time: float
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class WriteCounts:
    """Rows offered to the store in one call (conflicting duplicates included)."""

    steps: int = 0
    layer_steps: int = 0
    histograms: int = 0
    validations: int = 0
    checkpoints: int = 0
    rank_checks: int = 0
    system_samples: int = 0
    sli_samples: int = 0

    def add(self, other: WriteCounts) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def epoch(value: datetime) -> float:
    """Seconds since the epoch; SQLite hands back naive datetimes, which are UTC here."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def jsonable(value: Any) -> Any:
    """`value` as something every backend's JSON column accepts (PostgreSQL rejects NaN)."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    try:
        return jsonable(float(value))
    except (TypeError, ValueError):
        return str(value)


def _insert(conn: Connection, table: type[Base]) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def _insert_ignoring_duplicates(
    conn: Connection, table: type[Base], rows: list[dict[str, Any]]
) -> int:
    if rows:
        conn.execute(_insert(conn, table).on_conflict_do_nothing(), rows)
    return len(rows)


def upsert_run(conn: Connection, run: RunInfo, *, reopen: bool = False) -> int:
    """Create the run's row if missing and return its key.

    `reopen=True` (a monitor starting or resuming the run) also marks an existing row running
    again; a plain ingest batch never changes the status of a run that already exists.
    """
    values: dict[str, Any] = {
        "run_id": run.run_id,
        "job": run.job,
        "labels": jsonable(dict(run.labels)),
        "status": "running",
        "status_detail": "",
        "started_at": utc(run.started_at),
        "host": run.host,
        "pid": run.pid,
        "rank": run.rank,
        "world_size": run.world_size,
        "optimizer": run.optimizer,
        "hyperparameters": jsonable(list(run.hyperparameters)),
        "layers": jsonable(list(run.layers)),
        "hist_edges": jsonable(list(run.hist_edges)),
        "every": run.every,
        "resumed_from_step": run.resumed_from_step,
        "gpu_seconds": 0.0,
    }
    stmt = _insert(conn, Run).values(values)
    if reopen and run.rank != 0:
        # Every rank of a distributed job writes into one run. Rank 0 opens, reopens and ends
        # it and its row describes rank 0 (host, pid, labels); another rank only creates the row
        # when it gets there first, and never reopens a run rank 0 has already ended.
        stmt = stmt.on_conflict_do_nothing()
    elif reopen:
        keep = {"run_id", "started_at", "gpu_seconds"}
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id"],
            set_={k: v for k, v in values.items() if k not in keep} | {"ended_at": None},
        )
    else:
        stmt = stmt.on_conflict_do_nothing()
    conn.execute(stmt)
    return int(conn.execute(select(Run.id).where(Run.run_id == run.run_id)).scalar_one())


def write_telemetry(conn: Connection, run_pk: int, items: Sequence[Telemetry]) -> WriteCounts:
    """Insert a batch of one run's telemetry and move its heartbeat and GPU-seconds forward."""
    counts = WriteCounts()
    steps: list[dict[str, Any]] = []
    layers: list[dict[str, Any]] = []
    hists: list[dict[str, Any]] = []
    validations: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []
    rank_checks: list[dict[str, Any]] = []
    samples: list[SystemSample] = []
    newest: StepRecord | None = None
    for item in items:
        if isinstance(item, StepRecord):
            _step_rows(run_pk, item, steps, layers, hists)
            if item.validation is not None:
                validations.append(
                    _validation_row(run_pk, ValidationRecord(item.step, item.time, item.validation))
                )
            if newest is None or item.step > newest.step:
                newest = item
        elif isinstance(item, ValidationRecord):
            validations.append(_validation_row(run_pk, item))
        elif isinstance(item, CheckpointRecord):
            checkpoints.append(_checkpoint_row(run_pk, item))
        elif isinstance(item, SystemSample):
            samples.append(item)
        elif isinstance(item, RankCheckRecord):
            rank_checks.append(_rank_check_row(run_pk, item))
    counts.steps = _insert_ignoring_duplicates(conn, Step, steps)
    counts.layer_steps = _insert_ignoring_duplicates(conn, LayerStep, layers)
    counts.histograms = _insert_ignoring_duplicates(conn, HistogramRow, hists)
    counts.validations = _insert_ignoring_duplicates(conn, Validation, validations)
    counts.checkpoints = _insert_ignoring_duplicates(conn, Checkpoint, checkpoints)
    counts.rank_checks = _insert_ignoring_duplicates(conn, RankCheck, rank_checks)
    counts.system_samples = _write_system_samples(conn, run_pk, samples)
    if newest is not None:
        conn.execute(
            update(Run)
            .where(Run.id == run_pk)
            .where((Run.last_step.is_(None)) | (Run.last_step < newest.step))
            .values(last_step=newest.step, last_step_at=utc(newest.time))
        )
    return counts


def close_run(conn: Connection, run_pk: int, status: RunStatus, *, rank: int = 0) -> None:
    """End the run with `status`. Of a distributed job's ranks, rank 0 ends the run; another
    rank only marks it failed (its detail prefixed with the rank), never succeeded."""
    if rank != 0 and status.status in ("succeeded", "running"):
        return
    detail = status.detail if rank == 0 else f"rank {rank}: {status.detail}"
    conn.execute(
        update(Run)
        .where(Run.id == run_pk)
        .values(status=status.status, status_detail=detail, ended_at=utc(status.time))
    )


def write_sli_samples(conn: Connection, samples: Sequence[SliSampleRecord]) -> int:
    rows = [
        {
            "job": s.job,
            "name": s.name,
            "time": utc(s.time),
            "value": s.value,
            "labels": jsonable(dict(s.labels)),
        }
        for s in samples
    ]
    return _insert_ignoring_duplicates(conn, SliSample, rows)


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _step_rows(
    run_pk: int,
    rec: StepRecord,
    steps: list[dict[str, Any]],
    layers: list[dict[str, Any]],
    hists: list[dict[str, Any]],
) -> None:
    when = utc(rec.time)
    steps.append(
        {
            "run_pk": run_pk,
            "step": rec.step,
            "time": when,
            "loss": _float(rec.loss),
            "grad_norm": _float(rec.grad_norm),
            "param_norm": _float(rec.param_norm),
            "update_norm": _float(rec.update_norm),
            "update_ratio": _float(rec.update_ratio),
            "lr": _float(rec.lr),
            "step_seconds": _float(rec.step_seconds),
            "nonfinite_grad": int(rec.nonfinite.get("grad", 0)),
            "nonfinite_param": int(rec.nonfinite.get("param", 0)),
            "nonfinite_state": int(rec.nonfinite.get("state", 0)),
            "nonfinite_loss": int(rec.nonfinite.get("loss", 0)),
            "eff_lr_mean": _float(rec.eff_lr_mean),
            "eff_lr_min": _float(rec.eff_lr_min),
            "eff_lr_p50": _float(rec.eff_lr_p50),
            "eff_lr_p95": _float(rec.eff_lr_p95),
            "eff_lr_max": _float(rec.eff_lr_max),
            "dropped_total": rec.dropped_total,
            "grad_norm_before_clip": _float(rec.grad_norm_before_clip),
            "clipped": bool(rec.clipped),
            "skipped": bool(rec.skipped),
            "loss_scale": _float(rec.loss_scale),
            "rank": rec.rank,
            "world_size": rec.world_size,
            "full": bool(rec.full),
            "lrs": jsonable(list(rec.lrs)),
        }
    )
    for name, stats in rec.layers.items():
        layers.append(
            {
                "run_pk": run_pk,
                "step": rec.step,
                "rank": rec.rank,
                "time": when,
                "layer": name,
                "grad_norm": _float(stats.grad_norm),
                "param_norm": _float(stats.param_norm),
                "update_norm": _float(stats.update_norm),
                "update_ratio": _float(stats.update_ratio),
                "nonfinite_grad": stats.nonfinite_grad,
                "nonfinite_param": stats.nonfinite_param,
                "nonfinite_state": stats.nonfinite_state,
                "eff_lr_mean": _float(stats.eff_lr_mean),
                "eff_lr_min": _float(stats.eff_lr_min),
                "eff_lr_p50": _float(stats.eff_lr_p50),
                "eff_lr_p95": _float(stats.eff_lr_p95),
                "eff_lr_max": _float(stats.eff_lr_max),
                "has_grad": stats.has_grad,
                "grad_norm_before_clip": _float(stats.grad_norm_before_clip),
            }
        )
        hist = stats.rms_hist
        if hist is not None:
            hists.append(
                {
                    "run_pk": run_pk,
                    "step": rec.step,
                    "rank": rec.rank,
                    "time": when,
                    "layer": name,
                    "kind": "rms",
                    "counts": [int(c) for c in hist.counts],
                    "zeros": hist.zeros,
                    "nonfinite": hist.nonfinite,
                    "exact": hist.exact,
                }
            )


def _validation_row(run_pk: int, rec: ValidationRecord) -> dict[str, Any]:
    return {
        "run_pk": run_pk,
        "step": rec.step,
        "time": utc(rec.time),
        "name": rec.name,
        "value": _float(rec.value),
    }


def _checkpoint_row(run_pk: int, rec: CheckpointRecord) -> dict[str, Any]:
    return {
        "run_pk": run_pk,
        "step": rec.step,
        "time": utc(rec.time),
        "action": rec.action,
        "ok": rec.ok,
        "seconds": _float(rec.seconds),
        "size_bytes": rec.size_bytes,
        "path": rec.path,
        "detail": rec.detail,
    }


def _rank_check_row(run_pk: int, rec: RankCheckRecord) -> dict[str, Any]:
    return {
        "run_pk": run_pk,
        "step": rec.step,
        "time": utc(rec.time),
        "status": rec.status,
        "ranks": list(rec.ranks),
        "layers": list(rec.layers),
        "detail": rec.detail,
        "world_size": rec.world_size,
    }


def _write_system_samples(conn: Connection, run_pk: int, samples: list[SystemSample]) -> int:
    if not samples:
        return 0
    last = conn.execute(
        select(SystemSampleRow.time, SystemSampleRow.gpu_count)
        .where(SystemSampleRow.run_pk == run_pk)
        .order_by(SystemSampleRow.time.desc())
        .limit(1)
    ).first()
    # Only samples newer than the newest stored one add GPU time: a retried batch adds nothing.
    points: list[tuple[float, int]] = [] if last is None else [(epoch(last[0]), int(last[1]))]
    horizon = points[0][0] if points else -math.inf
    points += sorted((s.time, s.gpu_count) for s in samples if s.time > horizon)
    gpu_seconds = sum(
        count * min(t_next - t, MAX_GPU_INTERVAL_SECONDS)
        for (t, count), (t_next, _) in zip(points, points[1:], strict=False)
    )
    rows = [
        {
            "run_pk": run_pk,
            "time": utc(s.time),
            "cpu_percent": _float(s.cpu_percent),
            "rss_bytes": s.rss_bytes,
            "gpu_util_percent": _float(s.gpu_util_percent),
            "gpu_memory_bytes": s.gpu_memory_bytes,
            "gpu_count": s.gpu_count,
        }
        for s in samples
    ]
    _insert_ignoring_duplicates(conn, SystemSampleRow, rows)
    if gpu_seconds > 0:
        conn.execute(
            update(Run).where(Run.id == run_pk).values(gpu_seconds=Run.gpu_seconds + gpu_seconds)
        )
    return len(rows)
