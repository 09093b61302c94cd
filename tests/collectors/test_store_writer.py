from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, func, select

from rmswatch.collectors.store_writer import StoreWriter
from rmswatch.store import queries
from rmswatch.store.engine import make_engine
from rmswatch.store.models import Step
from rmswatch.trainer_hooks.records import RunStatus, SystemSample, ValidationRecord
from rmswatch.trainer_hooks.sinks import Sink
from tests.factories import T0, run_info, step_record
from tests.helpers import wait_until


def _steps(url: str) -> list[int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(Step.step).order_by(Step.step)).scalars())
    finally:
        engine.dispose()


def test_flush_through_the_sink_protocol_makes_records_readable_before_close(
    sqlite_url: str,
) -> None:
    sink: Sink = StoreWriter(sqlite_url, flush_interval=60.0)
    sink.open(run_info())
    sink.write([step_record(s) for s in range(5)])
    sink.flush()
    assert _steps(sqlite_url) == list(range(5))
    sink.close(RunStatus(T0 + 10, "succeeded"))
    engine = make_engine(sqlite_url)
    assert queries.run(engine, "run-1")["status"] == "succeeded"  # type: ignore[index]
    engine.dispose()


def test_close_writes_everything_and_marks_the_run_with_its_status(sqlite_url: str) -> None:
    writer = StoreWriter(sqlite_url, flush_interval=60.0)
    writer.open(run_info())
    writer.write([step_record(s) for s in range(20)])
    writer.write([ValidationRecord(19, T0 + 19, 0.25)])
    writer.close(RunStatus(T0 + 30, "succeeded"))
    assert _steps(sqlite_url) == list(range(20))
    engine = make_engine(sqlite_url)
    run = queries.run(engine, "run-1")
    assert run is not None and run["status"] == "succeeded" and run["last_step"] == 19
    assert queries.validations(engine, [run["run_pk"]])["value"].tolist() == [0.25]
    engine.dispose()
    assert writer.stats().written == 21 and writer.dropped_total == 0


def test_flush_delivers_what_was_written_so_far(sqlite_url: str) -> None:
    writer = StoreWriter(sqlite_url, flush_interval=60.0)
    writer.open(run_info())
    writer.write([step_record(s) for s in range(3)])
    writer.flush()
    assert _steps(sqlite_url) == [0, 1, 2]
    writer.close(RunStatus(T0, "succeeded"))


def test_records_reach_the_store_every_flush_interval_without_a_flush_call(
    sqlite_url: str,
) -> None:
    writer = StoreWriter(sqlite_url, flush_interval=0.05)
    writer.open(run_info())
    writer.write([step_record(s) for s in range(3)])
    wait_until(lambda: _steps(sqlite_url) == [0, 1, 2], timeout=10, what="timed flush")
    writer.close(RunStatus(T0, "succeeded"))


def test_writers_sharing_an_engine_leave_it_open(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    writer = StoreWriter(engine=engine, flush_interval=60.0)
    writer.open(run_info())
    writer.write([step_record(0)])
    writer.close(RunStatus(T0, "succeeded"))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Step)).scalar_one() == 1
    engine.dispose()


def test_unreachable_store_buffers_then_writes_everything_once_it_appears(
    tmp_path: Path,
) -> None:
    # the store's directory doesn't exist yet: like an unmounted volume
    url = f"sqlite:///{tmp_path}/later/rmswatch.db"
    writer = StoreWriter(url, flush_interval=60.0)
    writer.open(run_info())
    writer.write([step_record(s) for s in range(5)])
    writer.flush()
    stats = writer.stats()
    assert (stats.buffered, stats.written, stats.dropped) == (5, 0, 0)
    assert stats.flush_errors == 1 and "unable to open" in (stats.last_error or "")
    writer.write([step_record(s) for s in range(5, 8)])
    os.mkdir(tmp_path / "later")
    writer.flush()
    assert _steps(url) == list(range(8))
    writer.close(RunStatus(T0, "succeeded"))
    assert writer.stats().dropped == 0


def test_a_full_buffer_drops_the_oldest_records_and_counts_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/later/rmswatch.db"
    writer = StoreWriter(url, flush_interval=60.0, max_buffer=4)
    writer.open(run_info())
    for s in range(10):
        writer.write([step_record(s)])
        writer.flush()
    assert writer.dropped_total == 6
    os.mkdir(tmp_path / "later")
    writer.close(RunStatus(T0, "succeeded"))
    assert _steps(url) == [6, 7, 8, 9]


def test_close_gives_up_on_a_dead_store_after_its_timeout_and_counts_the_loss(
    tmp_path: Path,
) -> None:
    writer = StoreWriter(
        f"sqlite:///{tmp_path}/never/rmswatch.db", flush_interval=0.01, close_timeout=0.1
    )
    writer.open(run_info())
    writer.write([step_record(s) for s in range(3)])
    writer.close(RunStatus(T0, "succeeded"))
    assert writer.dropped_total == 3 and writer.stats().buffered == 0


def test_gpu_seconds_accumulate_across_flushes(engine: Engine, store_url: str) -> None:
    writer = StoreWriter(engine=engine, flush_interval=60.0)
    writer.open(run_info())
    for i in range(4):
        writer.write([SystemSample(T0 + 30 * i, 1.0, 1, 80.0, 1, 4)])
        writer.flush()
    writer.close(RunStatus(T0 + 100, "succeeded"))
    assert queries.gpu_hours(engine)["gpu_seconds"].tolist() == [4 * 90.0]


def test_a_reopened_run_is_running_again_and_keeps_its_steps(sqlite_url: str) -> None:
    for start, status in ((0, "crashed"), (5, "succeeded")):
        writer = StoreWriter(sqlite_url, flush_interval=60.0)
        writer.open(run_info())
        writer.write([step_record(s) for s in range(start, start + 5)])
        writer.flush()
        engine = make_engine(sqlite_url)
        assert queries.run(engine, "run-1")["status"] == "running"  # type: ignore[index]
        engine.dispose()
        writer.close(RunStatus(T0 + start, status))  # type: ignore[arg-type]
    assert _steps(sqlite_url) == list(range(10))


def test_budget_mode_sentinel_records_store_as_steps_without_layers(sqlite_url: str) -> None:
    import torch
    from sqlalchemy import text

    from rmswatch.trainer_hooks import Monitor
    from tests.trainer_hooks.support import batches, tiny_model, train

    model = tiny_model()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-2)
    writer = StoreWriter(sqlite_url, flush_interval=60.0)
    mon = Monitor(opt, model=model, every=None, overhead=1e-9, sinks=[writer])
    train(model, opt, batches(8), after_step=lambda i, loss: mon.record_loss(loss))
    mon.close()
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT step, full, loss, grad_norm FROM steps ORDER BY step"))
        steps = [tuple(r) for r in rows]
        layer_steps = set(conn.execute(text("SELECT DISTINCT step FROM layer_steps")).scalars())
    engine.dispose()
    assert [s for s, *_ in steps] == list(range(1, 9))
    full = {s for s, is_full, *_ in steps if is_full}
    assert 1 in full and full != set(range(1, 9))  # sentinel-only steps are stored too
    assert layer_steps == full  # layers only for full records
    assert all(loss is not None and grad_norm > 0 for _, _, loss, grad_norm in steps)
