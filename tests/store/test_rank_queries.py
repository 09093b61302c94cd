"""The query side of the distributed views: a layer across ranks, rank progress, stragglers."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import Engine

from rmswatch.store import queries
from rmswatch.store.engine import write_transaction
from rmswatch.store.writes import upsert_run, write_telemetry
from rmswatch.trainer_hooks.records import StepRecord
from tests.factories import run_info, step_record


def _rank_step(step: int, rank: int, grad_norm: float, seconds: float = 0.05) -> StepRecord:
    base = step_record(step)
    layers = {
        name: dataclasses.replace(stats, grad_norm=grad_norm) for name, stats in base.layers.items()
    }
    return dataclasses.replace(base, rank=rank, layers=layers, step_seconds=seconds)


def _run(engine: Engine, rows: list[StepRecord]) -> int:
    with write_transaction(engine) as conn:
        pk = upsert_run(conn, dataclasses.replace(run_info("ddp"), world_size=3), reopen=True)
        write_telemetry(conn, pk, rows)
    return pk


def test_a_layer_across_ranks_is_min_median_max_per_step(engine: Engine) -> None:
    # grad norms 1, 2, 9 on ranks 0, 1, 2 at every step
    pk = _run(
        engine, [_rank_step(s, r, g) for s in (1, 2) for r, g in ((0, 1.0), (1, 2.0), (2, 9.0))]
    )
    assert queries.ranks(engine, pk) == [0, 1, 2]
    frame = queries.layer_across_ranks(engine, pk, "grad_norm", layers=["layer0.weight"])
    assert frame.to_dict("records") == [
        {"step": s, "layer": "layer0.weight", "min": 1.0, "median": 2.0, "max": 9.0, "ranks": 3}
        for s in (1, 2)
    ]
    one = queries.layer_across_ranks(engine, pk, "grad_norm", rank=2)
    assert set(one["min"]) == set(one["max"]) == {9.0} and set(one["ranks"]) == {1}
    with pytest.raises(ValueError, match="field='loss': expected one of grad_norm"):
        queries.layer_across_ranks(engine, pk, "loss")


def test_a_rank_far_behind_or_slow_is_flagged_as_a_straggler(engine: Engine) -> None:
    rows = [_rank_step(s, 0, 1.0) for s in range(1, 41)]
    rows += [_rank_step(s, 1, 1.0) for s in range(1, 41)]
    rows += [_rank_step(s, 2, 1.0, seconds=0.2) for s in range(1, 26)]  # slow and 15 behind
    pk = _run(engine, rows)
    progress = queries.rank_progress(engine, pk)
    assert progress["last_step"].tolist() == [40, 40, 25]
    assert progress["steps_behind"].tolist() == [0, 0, 15]
    flagged = queries.stragglers(progress)
    assert flagged["rank"].tolist() == [2]
    assert "15 steps behind" in flagged["why"][0] and "step time 0.2s" in flagged["why"][0]
    # ranks in step: nobody is flagged
    even = progress[progress["rank"] < 2]
    assert queries.stragglers(even).empty


def test_the_pages_queries_read_one_rank_at_a_time(engine: Engine) -> None:
    pk = _run(engine, [_rank_step(s, r, g) for s in (1, 2, 3) for r, g in ((0, 1.0), (1, 2.0))])
    assert queries.steps(engine, pk)["step"].tolist() == [1, 2, 3]  # rank 0 by default
    assert queries.step_bounds(engine, pk) == (1, 3, 3)
    assert queries.step_bounds(engine, pk, rank=1) == (1, 3, 3)
    assert set(queries.layer_stats(engine, pk)["grad_norm"]) == {1.0}
    assert set(queries.layer_stats(engine, pk, rank=1)["grad_norm"]) == {2.0}
    series = queries.layer_series(engine, pk, "layer0.weight", ["grad_norm"], rank=1)
    assert series["grad_norm"].tolist() == [2.0, 2.0, 2.0]
    assert len(queries.latest_layer_stats(engine, pk)) == 2  # two layers, not two ranks x two
    matrix = queries.layer_matrix(engine, pk, "grad_norm")
    assert len(matrix) == 3 * 2 and set(matrix["value"]) == {1.0}
    assert len(queries.histograms(engine, pk, "layer0.weight")) == 3
    assert len(queries.histogram_matrix(engine, pk, "layer0.weight", rank=1)) == 3
