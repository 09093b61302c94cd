"""Many training processes writing to one store at the same moment lose nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmswatch.store import queries
from rmswatch.store.engine import make_engine, upgrade
from tests.integration.store_support import go, start_child, stored_steps, wait_ready

STEPS = 40


def _run_writers(url: str, count: int, go_file: Path) -> None:
    procs = [
        start_child(url, f"run-{i:02d}", STEPS, "--flush", "0.05", "--go", str(go_file))
        for i in range(count)
    ]
    try:
        for proc in procs:
            wait_ready(proc)
        go(go_file)
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            assert out.strip().splitlines()[-1].startswith("done 0 ")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    steps = stored_steps(url)
    assert sorted(steps) == [f"run-{i:02d}" for i in range(count)]
    assert all(stored == list(range(STEPS)) for stored in steps.values())
    engine = make_engine(url)
    frame = queries.runs(engine)
    engine.dispose()
    assert set(frame["status"]) == {"succeeded"}
    assert set(frame["last_step"]) == {STEPS - 1}


@pytest.mark.integration
@pytest.mark.slow
def test_sixteen_processes_writing_to_one_postgresql_store_lose_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    _run_writers(pg_url, 16, tmp_path / "go")


@pytest.mark.slow
def test_four_processes_writing_to_one_sqlite_file_lose_nothing(
    sqlite_url: str, tmp_path: Path
) -> None:
    # the schema exists before they start, as after `rmswatch migrate`; racing to create it is
    # covered by tests/store/test_engine.py
    upgrade(make_engine(sqlite_url))
    _run_writers(sqlite_url, 4, tmp_path / "go")
