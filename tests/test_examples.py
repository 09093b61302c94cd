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


def test_the_lightning_style_callback_example_records_every_step() -> None:
    out = _run(str(EXAMPLES / "lightning_callback.py"))
    assert out.startswith("100 records")


def test_the_torchrun_example_writes_one_run_from_rank_zero(tmp_path: Path) -> None:
    db = tmp_path / "rmswatch.db"
    out = _run(
        "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
        str(free_port()), str(EXAMPLES / "ddp_torchrun.py"), "--db", f"sqlite:///{db}",
        "--steps", "20", "--run-id", "ddp-test", "--prometheus-base-port", "0",
    )  # fmt: skip
    assert "rank 0: 20 records" in out and "rank 1: 20 records" in out
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT run_id, world_size, status FROM runs").fetchall()
        steps = conn.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
    assert runs == [("ddp-test", 2, "succeeded")]
    assert steps == 20  # rank 0 alone writes the store: one row per step
