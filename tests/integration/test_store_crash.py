"""A real training killed with SIGKILL loses at most about the last flush interval of telemetry."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import subprocess_env
from tests.integration.store_support import stored_steps, wait_ready

FLUSH_INTERVAL = 0.25
# scheduling slack on a loaded 2-core machine on top of the promised interval
SLACK = 1.0

# a real training in a subprocess, killed and re-read: tens of seconds
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def test_sigkill_loses_at_most_the_last_flush_interval(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.store_training_child",
            url,
            "killed",
            "--flush",
            str(FLUSH_INTERVAL),
            "--sleep",
            "0.02",
        ],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    printed: list[tuple[int, float]] = []
    try:
        wait_ready(proc)
        assert proc.stdout is not None
        while len(printed) < 120:
            line = proc.stdout.readline()
            assert line.startswith("step "), line
            _, step, at = line.split()
            printed.append((int(step), float(at)))
        proc.send_signal(signal.SIGKILL)
        killed_at = time.time()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    stored = stored_steps(url).get("killed", [])
    # what reached the store is a gap-free prefix of what the trainer produced (steps from 1) ...
    assert stored == list(range(1, len(stored) + 1))
    # ... that holds every step handed over more than one flush interval before the kill
    old_enough = [s for s, at in printed if at < killed_at - FLUSH_INTERVAL - SLACK]
    assert old_enough, "the child ran too briefly for the test to mean anything"
    assert stored and stored[-1] >= old_enough[-1]
