"""Many ranks into one PostgreSQL store: aggregate and per-writer ingest rate with W writers.

Each writer is a separate process playing one rank of one distributed run: a `StoreWriter`
writing `--records` step records of 50 layers (with RMS histograms) under its own rank, the way
`watch(store=...)` does on every rank. All writers start together; the rate is records written
over the wall time of the slowest. Interleaved blocks of W = 1, 4, 8 writers; medians.

    /work/main/.venv/bin/python benchmarks/bench_ranks.py [--records 200] [--runs 3] [--pg URL]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rmswatch.collectors.store_writer import StoreWriter  # noqa: E402
from rmswatch.store.engine import make_engine, upgrade  # noqa: E402
from rmswatch.store.models import Step  # noqa: E402
from rmswatch.trainer_hooks.records import RunStatus  # noqa: E402
from tests.factories import run_info, step_record  # noqa: E402

LAYERS = 50


def _writer(url: str, run_id: str, rank: int, world: int, records: int, start_at: float) -> None:
    engine = make_engine(url)
    items = [
        dataclasses.replace(step_record(s, layers=LAYERS), rank=rank) for s in range(1, records + 1)
    ]
    writer = StoreWriter(engine=engine, flush_interval=3600.0)
    writer.open(dataclasses.replace(run_info(run_id, layers=LAYERS), rank=rank, world_size=world))
    time.sleep(max(0.0, start_at - time.time()))
    writer.write(items)
    writer.flush()
    writer.close(RunStatus(time.time(), "succeeded"))
    engine.dispose()


def _block(url: str, writers: int, records: int) -> tuple[float, float]:
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    start_at = time.time() + 2.0  # every process imported and connected by then
    procs = [
        mp.Process(target=_writer, args=(url, run_id, r, writers, records, start_at))
        for r in range(writers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode == 0, f"writer exited with {p.exitcode}"
    elapsed = time.time() - start_at
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(Step)).scalar_one()
        conn.execute(text("TRUNCATE runs CASCADE"))
        conn.commit()
    engine.dispose()
    assert stored == writers * records, f"{stored} rows for {writers} x {records} records"
    total = writers * records / elapsed
    return total, total / writers


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "RMSWATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    name = f"rmswatch_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = args.pg.rsplit("/", 1)[0] + f"/{name}"
    try:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        results: dict[int, list[tuple[float, float]]] = {w: [] for w in args.writers}
        for _ in range(args.runs):  # interleaved: each run measures every W once
            for writers in args.writers:
                results[writers].append(_block(url, writers, args.records))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    base = statistics.median(t for t, _ in results[args.writers[0]])
    lines = [
        "| writers (ranks) | records/s, all writers (median) | records/s per writer | "
        f"rows/s | vs {args.writers[0]} writer |",
        "|---:|---:|---:|---:|---:|",
    ]
    rows_per_record = 1 + 2 * LAYERS
    for writers, samples in results.items():
        total = statistics.median(t for t, _ in samples)
        per = statistics.median(p for _, p in samples)
        lines.append(
            f"| {writers} | {total:.0f} | {per:.0f} | {total * rows_per_record:.0f} | "
            f"{total / base:.2f}x |"
        )
    load = os.getloadavg()[0]
    lines.append("")
    lines.append(
        f"{args.records} records x {LAYERS} layers per writer, {args.runs} interleaved runs; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average {load:.1f}."
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
