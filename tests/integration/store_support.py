"""Helpers for the store's multi-process integration tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from rmswatch.store.engine import make_engine
from rmswatch.store.models import Run, Step
from tests.helpers import subprocess_env


def start_child(url: str, run_id: str, steps: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.store_child", url, run_id, str(steps), *extra],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", (line, proc.stderr.read() if proc.stderr else "")


def go(path: Path) -> None:
    path.write_text("go")


def stored_steps(url: str) -> dict[str, list[int]]:
    """run_id -> stored step numbers, in order."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(Run.run_id, Step.step).join(Step, Step.run_pk == Run.id).order_by(Step.step)
            ).all()
    finally:
        engine.dispose()
    result: dict[str, list[int]] = {}
    for run_id, step in rows:
        result.setdefault(run_id, []).append(step)
    return result
