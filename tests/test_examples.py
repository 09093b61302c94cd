"""The example scripts a user copies run as documented, against real stores."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, free_port, subprocess_env

# each test runs an example training in a fresh interpreter: tens of seconds
pytestmark = pytest.mark.slow

EXAMPLES = REPO_ROOT / "examples"


def _run(*args: str, timeout: float = 180) -> str:
    result = subprocess.run(
        [sys.executable, *args], env=subprocess_env(), capture_output=True, text=True,
        timeout=timeout, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_the_plain_loop_example_writes_its_run_to_the_store(tmp_path: Path) -> None:
    db = tmp_path / "rmswatch.db"
    out = _run(str(EXAMPLES / "plain_loop.py"), "--db", f"sqlite:///{db}", "--steps", "60")
    assert "60 records" in out
    with sqlite3.connect(db) as conn:
        job, status = conn.execute("SELECT job, status FROM runs").fetchone()
        steps = conn.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
        validations = conn.execute("SELECT COUNT(*) FROM validations").fetchone()[0]
    assert (job, status, steps, validations) == ("example-retrain", "succeeded", 60, 1)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_lightning_callback_example_records_every_step_of_a_real_fit(tmp_path: Path) -> None:
    db = tmp_path / "rmswatch.db"
    out = _run(str(EXAMPLES / "lightning_callback.py"), "--db", f"sqlite:///{db}", timeout=600)
    assert "100 records" in out and "clipped steps" in out
    with sqlite3.connect(db) as conn:
        job, status = conn.execute("SELECT job, status FROM runs").fetchone()
        steps, with_preclip = conn.execute(
            "SELECT COUNT(*), COUNT(grad_norm_before_clip) FROM steps"
        ).fetchone()
        validations = conn.execute("SELECT COUNT(*) FROM validations").fetchone()[0]
    assert (job, status, steps, with_preclip) == ("lightning-example", "succeeded", 100, 100)
    assert validations == 4  # every 50 batches = 25 optimizer steps (accumulation 2)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_realistic_loop_example_records_skips_clipping_and_a_resume(tmp_path: Path) -> None:
    db = tmp_path / "rmswatch.db"
    out = _run(
        str(EXAMPLES / "realistic_loop.py"), "--db", f"sqlite:///{db}", "--steps", "24",
        timeout=600,
    )  # fmt: skip
    assert "skipped at [5, 12]" in out and "phase 2 (resumed): steps 13-24" in out
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT run_id, status, resumed_from_step FROM runs").fetchall()
        steps = conn.execute("SELECT step FROM steps ORDER BY step").fetchall()
        skipped = conn.execute("SELECT step FROM steps WHERE skipped ORDER BY step").fetchall()
        preclip = conn.execute("SELECT COUNT(grad_norm_before_clip) FROM steps").fetchone()[0]
        names = conn.execute("SELECT DISTINCT layer FROM layer_steps ORDER BY layer").fetchall()
    assert runs == [("realistic-1", "succeeded", 12)]
    assert [s for (s,) in steps] == list(range(1, 25))
    assert [s for (s,) in skipped] == [5, 12] and preclip == 24
    assert [n for (n,) in names] == ["2.bias", "2.weight", "6.bias", "6.weight"]


def test_the_torchrun_example_writes_every_ranks_steps_into_one_run(tmp_path: Path) -> None:
    db = tmp_path / "rmswatch.db"
    out = _run(
        "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
        str(free_port()), str(EXAMPLES / "ddp_torchrun.py"), "--db", f"sqlite:///{db}",
        "--steps", "20", "--run-id", "ddp-test", "--prometheus-base-port", "0",
    )  # fmt: skip
    assert "rank 0: 20 records" in out and "rank 1: 20 records" in out
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT run_id, world_size, status FROM runs").fetchall()
        per_rank = dict(conn.execute("SELECT rank, COUNT(*) FROM steps GROUP BY rank"))
    assert runs == [("ddp-test", 2, "succeeded")]
    assert per_rank == {0: 20, 1: 20}  # every rank's steps, in one run
