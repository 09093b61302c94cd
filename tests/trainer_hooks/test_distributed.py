"""torch.distributed: a real 2-rank torchrun job (gloo) writes both ranks into one run, and the
ranks' optimizer states are compared every few steps without ever holding the job up."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO_ROOT, free_port, subprocess_env

pytestmark = pytest.mark.slow
WORKER = REPO_ROOT / "tests" / "trainer_hooks" / "ddp_worker.py"


def _torchrun(tmp_path: Path, *args: str, timeout: float = 240) -> tuple[str, list[dict[str, Any]]]:
    db = tmp_path / "rmswatch.db"
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         str(WORKER), "--db", f"sqlite:///{db}", "--out", str(out), *args],
        env=subprocess_env(OMP_NUM_THREADS="1"), capture_output=True, text=True,
        timeout=timeout, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return str(db), ranks


def test_both_ranks_steps_land_in_one_run_none_dropped(tmp_path: Path) -> None:
    db, ranks = _torchrun(tmp_path, "--steps", "30")
    # the default run_id is rank 0's, agreed at watch()
    assert ranks[0]["run_id"] == ranks[1]["run_id"]
    with sqlite3.connect(db) as conn:
        runs = conn.execute("SELECT run_id, rank, world_size, status FROM runs").fetchall()
        per_rank = dict(conn.execute("SELECT rank, COUNT(*) FROM steps GROUP BY rank"))
        steps = {
            r: [
                s
                for (s,) in conn.execute("SELECT step FROM steps WHERE rank=? ORDER BY step", (r,))
            ]
            for r in (0, 1)
        }
        layer_rows = conn.execute("SELECT COUNT(*) FROM layer_steps").fetchone()[0]
    assert runs == [(ranks[0]["run_id"], 0, 2, "succeeded")]
    assert per_rank == {0: 30, 1: 30}
    assert steps[0] == steps[1] == list(range(1, 31))
    assert layer_rows == 2 * 30 * 4


def test_an_unperturbed_job_raises_no_desync(tmp_path: Path) -> None:
    db, ranks = _torchrun(tmp_path, "--steps", "30", "--desync-every", "5")
    for rank in ranks:
        statuses = [c["status"] for c in rank["checks"]]
        assert statuses and set(statuses) == {"ok"}, rank
        assert rank["stopped"] is None
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT step, status FROM rank_checks ORDER BY step").fetchall()
    assert rows and {status for _, status in rows} == {"ok"}
    assert all(step % 5 == 0 for step, _ in rows)


def test_perturbing_one_ranks_square_avg_is_caught_at_the_next_check(tmp_path: Path) -> None:
    db, ranks = _torchrun(
        tmp_path, "--steps", "30", "--desync-every", "5", "--perturb-rank", "1",
        "--perturb-step", "12",
    )  # fmt: skip
    for rank in ranks:
        by_step = {c["step"]: c for c in rank["checks"]}
        assert by_step[5]["status"] == by_step[10]["status"] == "ok"
        caught = by_step[15]
        assert caught["status"] == "desync", caught
        assert caught["ranks"] == [0, 1] and caught["layers"][0] == "0.weight"
        assert "optimizer state desync at step 15" in caught["detail"]
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT status, ranks, layers, detail FROM rank_checks WHERE step = 15"
        ).fetchone()
    assert row[0] == "desync" and json.loads(row[1]) == [0, 1]
    assert "0.weight" in json.loads(row[2]) and "rank(s) 1 differ from rank 0" in row[3]


def test_ranks_stepping_unevenly_skip_checks_instead_of_waiting(tmp_path: Path) -> None:
    # rank 0 takes 20 steps more than rank 1: its last checks are never answered
    db, ranks = _torchrun(
        tmp_path, "--steps", "20", "--extra-steps", "20", "--desync-every", "5"
    )  # fmt: skip
    assert ranks[0]["records"] == 40 and ranks[1]["records"] == 20
    steps0 = {c["step"]: c["status"] for c in ranks[0]["checks"]}
    assert all(steps0[s] == "ok" for s in (5, 10, 15, 20))
    # stopped either way, never waited on: gathers piled up unanswered, or rank 1's exit made
    # the pending one fail first (which happens first is a race between the processes)
    stopped = ranks[0]["stopped"]
    assert stopped is not None and ("unanswered" in stopped or "gather failed" in stopped)
    assert "desync" not in steps0.values()
