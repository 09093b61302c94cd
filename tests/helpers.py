"""Shared test helpers: integration gating, free ports, bounded waits."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIRE_INTEGRATION = os.environ.get("RMSWATCH_REQUIRE_INTEGRATION") == "1"

T = TypeVar("T")


def unavailable(reason: str) -> None:
    """Skip, or fail when CI requires every integration test to run."""
    if REQUIRE_INTEGRATION:
        pytest.fail(f"integration requirement missing (RMSWATCH_REQUIRE_INTEGRATION=1): {reason}")
    pytest.skip(reason)


def require_program(*names: str) -> str:
    """Path of the first program found on PATH among `names`, else skip/fail."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    unavailable(f"none of {', '.join(names)} on PATH (run `make system-deps`)")
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll `check` until it returns something truthy; bounded, never loops forever."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as exc:  # noqa: BLE001 - a probe that fails is retried until the deadline
            last_error = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or check!r}: {last_error!r}"
    )


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child Python process that imports this checkout's rmswatch."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def python_output(code: str) -> str:
    """What a fresh interpreter of this checkout prints for `python -c code`, stripped."""
    result = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return result.stdout.strip()
