"""Every rank of a distributed job writes into one run: rank is part of the telemetry keys."""

from __future__ import annotations

import dataclasses

from sqlalchemy import Engine, func, select

from rmswatch.store.engine import write_transaction
from rmswatch.store.models import HistogramRow, LayerStep, Run, Step
from rmswatch.store.writes import close_run, upsert_run, write_telemetry
from rmswatch.trainer_hooks.records import RunInfo, RunStatus, StepRecord
from tests.factories import T0, run_info, step_record


def _rank(rank: int, world_size: int = 2) -> RunInfo:
    return dataclasses.replace(
        run_info("ddp-run"), rank=rank, world_size=world_size, host=f"node-{rank}", pid=100 + rank
    )


def _step(step: int, rank: int) -> StepRecord:
    return dataclasses.replace(step_record(step), rank=rank)


def test_two_ranks_steps_land_in_one_run_none_dropped(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        # rank 1's writer gets there first; rank 0's still describes the run
        pk1 = upsert_run(conn, _rank(1), reopen=True)
        pk0 = upsert_run(conn, _rank(0), reopen=True)
        assert pk0 == pk1
        for rank in (0, 1):
            write_telemetry(conn, pk0, [_step(s, rank) for s in range(1, 31)])
        # a retried batch still writes nothing twice
        write_telemetry(conn, pk0, [_step(s, 1) for s in range(1, 31)])
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Run)).scalar_one() == 1
        run = conn.execute(select(Run.host, Run.pid, Run.rank, Run.world_size)).one()
        assert tuple(run) == ("node-0", 100, 0, 2)
        per_rank = dict(conn.execute(select(Step.rank, func.count()).group_by(Step.rank)).all())
        assert per_rank == {0: 30, 1: 30}
        assert conn.execute(select(func.count()).select_from(LayerStep)).scalar_one() == 2 * 30 * 2
        assert conn.execute(select(func.count()).select_from(HistogramRow)).scalar_one() == 120


def test_only_rank_0_ends_a_run_well_and_any_rank_can_fail_it(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        pk = upsert_run(conn, _rank(0), reopen=True)
        upsert_run(conn, _rank(1), reopen=True)
        close_run(conn, pk, RunStatus(T0 + 5, "succeeded"), rank=1)
    with engine.connect() as conn:
        assert conn.execute(select(Run.status)).scalar_one() == "running"
    with write_transaction(engine) as conn:
        close_run(conn, pk, RunStatus(T0 + 6, "crashed", "RuntimeError: boom"), rank=1)
    with engine.connect() as conn:
        assert tuple(conn.execute(select(Run.status, Run.status_detail)).one()) == (
            "crashed",
            "rank 1: RuntimeError: boom",
        )
    with write_transaction(engine) as conn:
        close_run(conn, pk, RunStatus(T0 + 7, "succeeded"), rank=0)
        # a rank whose writer opens late does not make the ended run running again
        upsert_run(conn, _rank(1), reopen=True)
    with engine.connect() as conn:
        assert conn.execute(select(Run.status)).scalar_one() == "succeeded"
